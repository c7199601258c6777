"""The batched inference lane: concurrent sessions give exactly the unbatched numbers."""

from __future__ import annotations

import threading
import time

import pytest

from tests.test_engine import check_all
from tokviz_app.engine import ModelManager, SamplingParams
from tokviz_app.engine.session import PREFILL_CHUNK

PROMPTS = ["The quick brown fox", "Hello", "A language model predicts the next token from the ones before it.",
           "Emoji: 🦊", "", "Tokens are coloured by probability: green, blue, purple, orange and red. " * 3]


@pytest.fixture
def fresh_model(tiny_model_path):
    """A model with its own lane, so batch statistics belong to this test alone."""
    return ModelManager(device="cpu").load(str(tiny_model_path))


def run_together(sessions, work):
    barrier = threading.Barrier(len(sessions))
    errors = []

    def target(session):
        try:
            barrier.wait()
            work(session)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=target, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_batched_steps_match_reference_for_ragged_sessions(fresh_model):
    sessions = [fresh_model.start(p, SamplingParams(seed=i)) for i, p in enumerate(PROMPTS)]
    run_together(sessions, lambda s: s.generate(25))
    stats = fresh_model.lane.stats
    assert stats["max_batch"] >= 2, stats  # the steps really were batched
    for s in sessions:
        assert len(s.tokens) == 25
        check_all(s, fresh_model)  # prob, log-prob (|dlogp| relative 1e-3), rank, entropy, top-10


def test_batched_equals_unbatched_token_for_token(fresh_model, tiny_model_path):
    serial_model = ModelManager(device="cpu", batching=False).load(str(tiny_model_path))
    expected = {}
    for i, prompt in enumerate(PROMPTS):
        s = serial_model.start(prompt, SamplingParams(seed=i, temperature=1.1))
        expected[i] = [(t.token_id, t.logprob) for t in s.generate(20)]
    sessions = [fresh_model.start(p, SamplingParams(seed=i, temperature=1.1)) for i, p in enumerate(PROMPTS)]
    run_together(sessions, lambda s: s.generate(20))
    for i, s in enumerate(sessions):
        got = [(t.token_id, t.logprob) for t in s.tokens]
        assert [g[0] for g in got] == [e[0] for e in expected[i]]
        assert max(abs(g[1] - e[1]) for g, e in zip(got, expected[i])) < 1e-3


def test_choose_truncate_and_close_inside_a_running_batch(fresh_model):
    sessions = [fresh_model.start(p, SamplingParams(seed=i)) for i, p in enumerate(PROMPTS[:4])]
    run_together(sessions, lambda s: s.generate(12))

    def mixed(session):
        index = sessions.index(session)
        if index == 0:
            session.choose(4, session.tokens[4].alternatives[2].token_id)
        elif index == 1:
            session.truncate(3)
        session.generate(10)

    run_together(sessions, mixed)
    for s in sessions:
        check_all(s, fresh_model)
    sessions[3].close()
    run_together(sessions[:3], lambda s: s.generate(3))
    assert fresh_model.lane.resident_rows() <= 3
    for s in sessions[:3]:
        check_all(s, fresh_model)


def test_idle_rows_leave_the_batch_and_come_back_exact(fresh_model):
    a = fresh_model.start("The quick brown fox", SamplingParams(seed=1))
    b = fresh_model.start("Hello world!", SamplingParams(seed=2))
    run_together([a, b], lambda s: s.generate(5))
    b.generate(10)  # a misses these rounds and is moved out with its own cache copy
    assert fresh_model.lane.resident_rows() == 1
    run_together([a, b], lambda s: s.generate(5))
    check_all(a, fresh_model)
    check_all(b, fresh_model)


def test_long_prefill_interleaves_with_streaming(fresh_model):
    streaming = fresh_model.start("Hello", SamplingParams(seed=3))
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 12
    results = {}

    def work(which):
        if which == "stream":
            streaming.generate(30)
        else:
            results["long"] = fresh_model.start(long_prompt, SamplingParams(seed=4))

    run_together(["stream", "long"], work)
    assert fresh_model.lane.stats["prefill_chunks"] >= 2
    check_all(streaming, fresh_model)
    results["long"].generate(5)
    check_all(results["long"], fresh_model)


@pytest.mark.parametrize("resident", [False, True], ids=["alone", "beside-a-resident-row"])
def test_long_prompts_score_at_every_chunk_boundary(long_context_model_path, resident, monkeypatch):
    """Prompts of PREFILL_CHUNK + 32k + {0, 1, 31} tokens: the engine feeds PREFILL_CHUNK-token chunks and the
    lane splits them into 512 tokens alone, 32 while another row is resident; the last, single token of a
    chunked feed once passed for a decode step and lost the earlier chunks' logits (issue 11)."""
    from tests.tiny_model import train_tokenizer

    model = ModelManager(device="cpu").load(str(long_context_model_path))
    lane = model.lane  # chunks of 32 beside resident rows (the lane otherwise sizes them by time)
    monkeypatch.setattr(lane, "_prefill_chunk_size", lambda: 32 if lane.resident_rows() else 512)
    if resident:
        other = model.start("Hello", SamplingParams(seed=1))
        other.generate(2)
        assert model.lane.resident_rows() == 1
    vocabulary = len(train_tokenizer(400))
    for n in (PREFILL_CHUNK + 32, PREFILL_CHUNK + 33, PREFILL_CHUNK + 63):
        ids = [(7 * i + 3) % vocabulary for i in range(n)]
        session = model.start_from_ids(ids, SamplingParams(seed=n))
        assert len(session.prompt_tokens) == n
        session.generate(2)
        check_all(session, model)
        session.close()
    if resident:
        other.generate(2)
        check_all(other, model)


def test_long_rows_batch_apart_and_a_closed_row_leaves_at_once(long_context_model_path):
    """A 1,000-token session does not pad a short one's row (rows are batched by length), and closing
    a session drops its row with no further step (issue 11: memory outlived the tabs)."""
    model = ModelManager(device="cpu").load(str(long_context_model_path))
    short = model.start("Hello", SamplingParams(seed=1))
    long = model.start_from_ids([(5 * i + 1) % 300 for i in range(1000)], SamplingParams(seed=2))
    run_together([short, long], lambda s: s.generate(4))
    widths = model.lane.batch_widths()
    assert len(widths) == 2 and min(w for _, w in widths.values()) < 64, widths
    check_all(short, model)
    check_all(long, model)
    long.close()
    deadline = time.monotonic() + 20
    while model.lane.resident_rows() != 1:
        assert time.monotonic() < deadline, model.lane.batch_widths()
        time.sleep(0.01)
    assert len(model.lane.batch_widths()) == 1
    short.generate(3)
    check_all(short, model)


def test_a_long_prompt_crossing_into_a_longer_bucket_stays_exact(long_context_model_path):
    model = ModelManager(device="cpu").load(str(long_context_model_path))
    a = model.start_from_ids([(3 * i + 2) % 300 for i in range(505)], SamplingParams(seed=3))
    b = model.start("Hello world", SamplingParams(seed=4))
    run_together([a, b], lambda s: s.generate(12))  # a grows from 505 to 517 tokens: bucket 0 -> 1
    check_all(a, model)
    check_all(b, model)
    a.truncate(2)  # and back
    run_together([a, b], lambda s: s.generate(3))
    check_all(a, model)
    check_all(b, model)


def test_a_step_is_drawn_on_the_lane_and_its_failure_stays_its_own(fresh_model):
    """Decoding steps hand the lane their draw (`feed(finish=...)`): it runs on the lane's thread, right after the
    batch's forward; a draw that fails reaches its own caller, and the other rows of the batch get their tokens."""
    sessions = [fresh_model.start(p, SamplingParams(seed=i)) for i, p in enumerate(PROMPTS[:4])]
    for s in sessions:
        s.step()  # resident
    drawn_on = []
    real_draw = type(sessions[0])._draw

    def draw(session, logits):
        drawn_on.append(threading.current_thread().name)
        if session is sessions[0]:
            raise ValueError("this row's draw failed")
        return real_draw(session, logits)

    sessions[0]._draw = lambda logits: draw(sessions[0], logits)
    for s in sessions[1:]:
        s._draw = (lambda session: lambda logits: draw(session, logits))(s)
    failures = []

    def step(s):
        try:
            s.step()
        except ValueError as error:
            failures.append((s, str(error)))

    batches = fresh_model.lane.stats["batched_rows"]
    run_together(sessions, step)
    assert failures == [(sessions[0], "this row's draw failed")]
    assert set(drawn_on) == {"tokviz-lane"} and len(drawn_on) == 4
    assert fresh_model.lane.stats["batched_rows"] - batches == 4
    assert [len(s.tokens) for s in sessions] == [1, 2, 2, 2]
    del sessions[0]._draw
    sessions[0].step()  # the failed step left the session usable
    for s in sessions:
        check_all(s, fresh_model)
