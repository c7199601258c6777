"""The remote engine backend: models served over the OpenAI-compatible completions API.

Three servers:
- a real llama-cpp-python server (`llama-cpp-python[server]`, serving the bundled SmolLM2 GGUF), started
  by the tests: text prompts, token strings back, echo with shifted rows (tests marked slow);
- a miniature vLLM (token-id prompts, `return_tokens_as_token_ids`, aligned echo, `prompt_logprobs`,
  SSE streams) backed by the local engine on the tiny GPT-2, so the id-exact path can be checked to
  reproduce the local engine's numbers exactly;
- no server at all, and one that accepts connections and never answers.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tokviz_app.engine import SamplingParams, TokvizError
from tokviz_app.core.errors import ModelLoadError, ModelNotFoundError
from tests.llama_servers import LLAMA_SERVERS, running_llama_server
from tests.server_process import free_port
from tokviz_app.engine.remote import RemoteBackend, RemoteModel, ServerConfig, ServerError, _Dist, _Tok



# ============================================================================ a miniature vLLM
class MiniVLLM:
    """vLLM's /v1/completions in miniature, computed by the local engine (exact numbers)."""

    def __init__(self, model, model_id: str, *, max_logprobs: int = 20, token_delay: float = 0.0,
                 serve_top: int | None = None) -> None:
        self.model, self.model_id, self.serve_top = model, model_id, serve_top
        self.max_logprobs, self.token_delay = max_logprobs, token_delay
        self.requests: list[dict] = []
        self.cancelled = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _json(self, status: int, data: dict) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [
                        {"id": server.model_id, "object": "model", "max_model_len": server.model.context_length}]})
                else:
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if self.path != "/v1/completions":
                    return self._json(404, {"detail": "Not Found"})
                if body.get("model") != server.model_id:
                    return self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                k = body.get("logprobs")
                if k is not None and k > server.max_logprobs:
                    return self._json(400, {"error": {"message": f"Requested logprobs of {k}, which is greater than "
                                                                 f"max allowed: {server.max_logprobs}"}})
                server.complete(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _top(step, k: int) -> dict[str, float]:
        top = {f"token_id:{a.token_id}": math.log(a.prob) for a in step.alternatives[:k]}
        top[f"token_id:{step.token_id}"] = step.logprob  # the sampled/echoed token is always listed
        return top

    def complete(self, handler, body: dict) -> None:
        model = self.model
        prompt = body["prompt"]
        ids = prompt if isinstance(prompt, list) else model.encode(prompt)
        temperature = body.get("temperature", 1.0)
        params = SamplingParams(greedy=True) if temperature == 0 else SamplingParams(
            temperature=temperature, top_k=max(body.get("top_k", 0), 0), top_p=body.get("top_p", 1.0),
            seed=body.get("seed"))
        session = model.start_from_ids(ids, params)
        k = min(body.get("logprobs") or 0, self.serve_top or 10**9)
        entries = []
        if body.get("echo"):  # as vLLM: the prompt's lists have `prompt_logprobs` entries where it is given
            prompt_k = body["prompt_logprobs"] if body.get("prompt_logprobs") is not None else k
            entries.append((ids[0], None, None))
            entries += [(t.token_id, t.logprob, self._top(t, prompt_k)) for t in session.prompt_tokens[1:]]
        prompt_logprobs = None
        if body.get("prompt_logprobs") is not None:
            prompt_logprobs = [None] + [{str(t.token_id): {"logprob": t.logprob, "rank": t.rank}}
                                        for t in session.prompt_tokens[1:]]
        if body.get("stream"):
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.end_headers()
            try:
                for _ in range(body["max_tokens"]):
                    step = session.step()
                    finish = "stop" if session.is_eos(step) else None
                    chunk = {"choices": [{"index": 0, "text": step.text, "finish_reason": finish, "logprobs": {
                        "tokens": [f"token_id:{step.token_id}"], "token_logprobs": [step.logprob],
                        "top_logprobs": [self._top(step, k)], "text_offset": [0]}}]}
                    handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    handler.wfile.flush()
                    if finish:
                        break
                    time.sleep(self.token_delay)
                else:
                    handler.wfile.write(b'data: {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}\n\n')
                handler.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                self.cancelled.set()
            return
        finish = "length"
        for _ in range(body["max_tokens"]):
            step = session.step()
            entries.append((step.token_id, step.logprob, self._top(step, k)))
            if session.is_eos(step):
                finish = "stop"
                break
        choice = {"index": 0, "text": "", "finish_reason": finish, "logprobs": {
            "tokens": [f"token_id:{i}" for i, _, _ in entries], "token_logprobs": [lp for _, lp, _ in entries],
            "top_logprobs": [top for _, _, top in entries], "text_offset": [0] * len(entries)}}
        if prompt_logprobs is not None:
            choice["prompt_logprobs"] = prompt_logprobs
        handler._json(200, {"id": "cmpl-1", "object": "text_completion", "choices": [choice]})


@pytest.fixture(scope="module")
def mini_vllm(tiny_model, tiny_model_path):
    server = MiniVLLM(tiny_model, str(tiny_model_path), token_delay=0.02)
    yield server
    server.close()


@pytest.fixture(scope="module")
def vllm_model(mini_vllm):
    return RemoteModel(mini_vllm.url, mini_vllm.model_id)


def assert_same_step(remote, local, *, rank_known: bool = True):
    assert remote.token_id == local.token_id
    assert remote.text == local.text and remote.partial == local.partial
    assert remote.prob == pytest.approx(local.prob, rel=1e-5)
    assert remote.logprob == pytest.approx(local.logprob, abs=1e-5)
    assert remote.rank == (local.rank if rank_known else None)
    assert remote.entropy is None  # needs the whole vocabulary: unknown, never invented
    assert [a.token_id for a in remote.alternatives] == [a.token_id for a in local.alternatives]
    for a, b in zip(remote.alternatives, local.alternatives):
        assert a.prob == pytest.approx(b.prob, rel=1e-5)


def test_vllm_style_server_is_driven_with_token_ids(vllm_model, mini_vllm):
    caps = vllm_model.caps
    assert caps.ids_in and caps.ids_out and caps.echo == "aligned" and caps.prompt_logprobs
    assert caps.deep == 20  # it refused 100, as vLLM's default max_logprobs does
    assert vllm_model.context_length == mini_vllm.model.context_length
    assert vllm_model.vocab_size == mini_vllm.model.vocab_size
    session = vllm_model.start("The quick brown", SamplingParams(greedy=True))
    session.step()
    assert mini_vllm.requests[-1]["prompt"] == session.token_ids[:-1]  # ids, never re-encoded text


def test_id_mode_reproduces_the_local_engine_exactly(vllm_model, tiny_model):
    prompt = "The quick brown fox"
    remote = vllm_model.start(prompt, SamplingParams(greedy=True))
    local = tiny_model.start(prompt, SamplingParams(greedy=True))
    assert remote.token_ids == local.token_ids
    assert remote.prompt_tokens[0].prob is None
    for r, l in zip(remote.prompt_tokens[1:], local.prompt_tokens[1:]):
        assert_same_step(r, l)  # echo + prompt_logprobs: exact numbers and ranks for every prompt token
    for _ in range(6):
        r, l = remote.step(), local.step()
        assert_same_step(r, l, rank_known=l.rank <= 10)
        assert r.sampled_prob == l.sampled_prob  # greedy: 1 for the argmax


def test_id_mode_choose_far_outside_the_top_list_is_exact(vllm_model, tiny_model):
    remote = vllm_model.start("Hello world", SamplingParams(greedy=True))
    local = tiny_model.start("Hello world", SamplingParams(greedy=True))
    for _ in range(3):
        remote.step(), local.step()
    far = next(t for t, _, rank, _ in local.score(1, list(range(tiny_model.vocab_size))) if rank > 50)
    r, l = remote.choose(1, far), local.choose(1, far)
    assert_same_step(r, l, rank_known=False)  # echo scoring: the exact probability; rank beyond the list unknown
    assert remote.token_ids == local.token_ids
    assert [b.split for b in remote.branches] == [0, 1]
    (token, prob, rank, sampled), = remote.score(1, [far])
    assert prob == pytest.approx(l.prob, rel=1e-5) and rank is None and sampled is None


def test_id_mode_sampled_prob_where_the_top_list_decides_it(vllm_model, tiny_model):
    params = SamplingParams(temperature=0.7, top_k=5, seed=3)
    remote = vllm_model.start("Tokens are", params)
    local = tiny_model.start("Tokens are", params)
    steps = [remote.step() for _ in range(4)]
    for step in steps:  # a top-5 cut inside the known list: the sampling distribution is exact
        ref = local.score(step.position, [step.token_id])  # (id, prob, rank, sampled): prob at temperature 1
        assert step.prob == pytest.approx(ref[0][1], rel=1e-5)
        local.choose(step.position, step.token_id)
        assert step.sampled_prob == pytest.approx(local.tokens[-1].sampled_prob, rel=1e-4)
        assert sum(a.sampled_prob for a in step.alternatives) == pytest.approx(1.0, rel=1e-4)
    remote.params = SamplingParams(temperature=0.7, top_p=0.9)
    step = remote.step()
    assert step.sampled_prob is None and all(a.sampled_prob is None for a in step.alternatives)  # not knowable


def test_id_mode_stream_matches_steps_and_stop_cancels(vllm_model, mini_vllm):
    greedy = SamplingParams(greedy=True)
    stepped = vllm_model.start("A language model", greedy)
    expected = [stepped.step() for _ in range(6)]
    streamed = vllm_model.start("A language model", greedy)
    seen = []
    steps = streamed.generate(6, on_token=seen.append)
    assert [s.token_id for s in steps] == [s.token_id for s in expected] and seen == steps
    assert streamed.finish_reason in {"length", "eos"}
    for a, b in zip(steps, expected):
        assert_same_step(a, b, rank_known=b.rank is not None)

    mini_vllm.cancelled.clear()
    stopping = vllm_model.start("A language model", greedy)
    got = []
    started = time.perf_counter()
    kept = stopping.generate(200, should_stop=lambda: len(got) >= 2, on_token=got.append)
    assert len(kept) == 2 and len(stopping.tokens) == 2 and stopping.finish_reason == "stopped"
    assert time.perf_counter() - started < 10  # 198 more tokens were asked for; a loaded machine is slow
    assert mini_vllm.cancelled.wait(10)  # the server saw the connection close


def test_server_that_returns_fewer_logprobs_says_so(tiny_model, tiny_model_path):
    stingy = MiniVLLM(tiny_model, str(tiny_model_path), serve_top=4)
    try:
        model = RemoteModel(stingy.url, stingy.model_id)
        assert model.caps.served_top == 4 and any("returns 4 alternatives" in n for n in model.notices)
        session = model.start("Hello world", SamplingParams(greedy=True))
        step = session.step()
        assert len(step.alternatives) == 4 and step.rank == 1  # fewer alternatives, none invented
        assert session.warnings == ["The server returned 4 alternatives where 10 were asked for."]
    finally:
        stingy.close()


# ============================================================================ no server, a silent server
def test_server_down_is_a_clear_error_at_once():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.perf_counter()
    with pytest.raises(ServerError, match="Cannot reach the model server"):
        RemoteModel(url, "anything")
    assert time.perf_counter() - started < 10  # a refused connection fails at once; 10 s leaves room for load


def test_silent_server_times_out_instead_of_hanging():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does), never answers
    try:
        config = ServerConfig.parse(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", read_timeout=1.0)
        started = time.perf_counter()
        with pytest.raises(ServerError, match="did not answer within 1 s"):
            RemoteModel(config, "anything")
        assert time.perf_counter() - started < 15  # the 1-s timeout, not the default 60 s
    finally:
        listener.close()


def test_catalog_lists_an_unreachable_server_and_explains_it():
    catalog = RemoteBackend([f"127.0.0.1:{free_port()}"])  # scheme and /v1 are added
    (info,) = catalog.infos()
    assert info.status == "remote" and "Cannot reach" in info.description
    with pytest.raises(ModelLoadError, match="Cannot reach"):
        catalog.load(info.key)


def test_sampler_is_honest_about_what_the_top_list_decides():
    def dist(logprobs, ids=None, asked=10):
        ids = ids or list(range(len(logprobs)))
        return _Dist.from_top([(_Tok(i, str(i)), lp) for i, lp in zip(ids, logprobs)], asked)

    probs = [0.5, 0.2, 0.1, 0.05]
    d = dist([math.log(p) for p in probs])
    assert [k.rank for k in d.known] == [1, 2, 3, 4]
    nucleus = d.sampler(SamplingParams(top_p=0.75))  # 0.5 + 0.2 < 0.75 <= 0.8: three tokens
    assert nucleus(0) == pytest.approx(0.5 / 0.8) and nucleus(3) == 0.0
    assert d.sampler(SamplingParams(top_p=0.9))(0) is None  # the nucleus reaches past the listed tokens
    assert d.sampler(SamplingParams(temperature=2.0))(0) is None  # needs the whole vocabulary
    assert d.sampler(SamplingParams(greedy=True))(0) == 1.0
    # an entry the tokenizer cannot identify: ranks after it are unknown, and so is a top-k cut past it
    d = _Dist.from_top([(_Tok(0, "a"), -0.5), (_Tok(None, ""), -1.0), (_Tok(2, "c"), -2.0)], 10)
    assert [(k.id, k.rank) for k in d.known] == [(0, 1), (2, None)]
    assert d.sampler(SamplingParams(top_k=1))(0) == 1.0
    assert d.sampler(SamplingParams(top_k=2))(0) is None


# ============================================================================ the real llama.cpp servers
@pytest.fixture(scope="module", params=LLAMA_SERVERS)
def llama_server(request):
    with running_llama_server(request.param) as url:
        yield url


@pytest.fixture(scope="module")
def llama_manager(llama_server):
    from tokviz_app.engine import ModelManager

    return ModelManager(device="cpu", servers=[llama_server])


@pytest.fixture(scope="module")
def llama_model(llama_manager):
    (info,) = [i for i in llama_manager.catalog() if i.extra.get("remote")]
    return llama_manager.load(info.key)


@pytest.mark.slow
def test_llama_server_models_are_remote_catalog_entries(llama_manager, llama_server, llama_model):
    from tokviz_app.engine.bundled import gguf_path

    remote = [i for i in llama_manager.catalog() if i.extra.get("remote")]
    assert [i.extra["model"] for i in remote] == [str(gguf_path())]
    assert remote[0].status == "remote" and remote[0].extra["loaded"] and remote[0].label.endswith(
        f"@ {llama_server.split('//')[1].split('/')[0]}")
    assert llama_manager.add(remote[0].key).key == remote[0].key
    assert llama_model in llama_manager.loaded()
    caps = llama_model.caps
    if caps.ids_in:  # llama.cpp's own server: token-id prompts, no prompt scoring
        assert caps.ids_in and caps.echo is None and caps.deep == 100
        assert any("does not score prompts" in n for n in llama_model.notices)
        assert not llama_model.capabilities.text_scoring
    else:  # llama-cpp-python: text prompts only; echo rows shifted by one (its quirk)
        assert not caps.ids_in and not caps.ids_out and caps.echo == "shifted" and caps.deep == 100
        assert llama_model.notices


@pytest.mark.slow
def test_llama_server_unknown_model_is_a_clear_error(llama_manager, llama_server):
    with pytest.raises(ModelNotFoundError, match="does not serve a model named 'no-such-model'.*It serves"):
        llama_manager.load(f"no-such-model @ {llama_server}")


@pytest.mark.slow
def test_llama_server_agrees_with_the_local_engine(llama_model):
    """Top-10 probabilities of the first greedy steps: llama.cpp (Q4_1 weights times 8-bit quantised
    activations) against transformers (the same Q4_1 weights dequantised, float32 compute). Where the two
    argmaxes differ (a near tie), the remote session is given the local token, so both keep reading the
    same text."""
    from tokviz_app.engine import ModelManager

    local_model = ModelManager(device="cpu").load("smollm2-135m")
    chat = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    prompts = ("Once upon a time, there was a little", "The quick brown fox", "def add(a, b):", chat,
               "My favourite food is", "In 1969, Neil Armstrong")
    diffs, shared, total, same_argmax, steps = [], 0, 0, 0, 0
    prompt_diffs, likely, likely_rank_close = [], 0, 0
    for prompt in prompts:
        greedy = SamplingParams(greedy=True)
        remote, local = llama_model.start(prompt, greedy), local_model.start(prompt, greedy)
        assert remote.token_ids == local.token_ids
        scored = [(rp, lp) for rp, lp in zip(remote.prompt_tokens, local.prompt_tokens) if rp.prob is not None]
        if llama_model.caps.echo is None:  # llama-server scores no prompt: nothing shown rather than a guess
            assert not scored
        else:
            assert len(scored) >= len(remote.prompt_tokens) // 2  # those in the server's top-100 lists
        for rp, lp in scored:  # aggregated below: one token's rank at a near tie differs from CPU to CPU
            prompt_diffs.append(abs(rp.prob - lp.prob))
            if lp.prob >= 0.05 and rp.rank is not None:
                likely += 1
                likely_rank_close += abs(rp.rank - lp.rank) <= 1
        for position in range(5):
            r, l = remote.step(), local.step()
            assert r.entropy is None and r.prob is not None and r.rank in (1, None)
            local_probs = {a.token_id: a.prob for a in l.alternatives}
            remote_probs = {a.token_id: a.prob for a in r.alternatives}
            assert len(remote_probs) >= 8  # only tokens the server's text cannot identify are left out
            diffs += [abs(p - local_probs[t]) for t, p in remote_probs.items() if t in local_probs]
            shared += len(local_probs.keys() & remote_probs.keys())
            total += len(local_probs)
            steps += 1
            same_argmax += r.token_id == l.token_id
            if r.token_id != l.token_id:
                remote.choose(position, l.token_id)
        assert not remote.warnings, remote.warnings
    mean = sum(diffs) / len(diffs)
    prompt_diffs = prompt_diffs or [0.0]  # llama-server: no prompt scoring
    prompt_mean = sum(prompt_diffs) / len(prompt_diffs)
    prompt_close = sum(d < 0.05 for d in prompt_diffs) / len(prompt_diffs)
    print(f"\nllama.cpp server vs local transformers, {steps} greedy steps on {len(prompts)} prompts: "
          f"max |dp| over top-10 = {max(diffs):.4f}, mean |dp| = {mean:.4f}, same argmax {same_argmax}/{steps}, "
          f"top-10 ids shared {shared}/{total} ({shared / total:.0%}); {len(prompt_diffs)} prompt tokens: "
          f"mean |dp| {prompt_mean:.4f}, max {max(prompt_diffs):.4f}, {prompt_close:.0%} within 0.05, "
          f"rank within 1 for {likely_rank_close}/{likely} tokens with p >= 0.05")
    # Only aggregates are asserted: llama.cpp multiplies the Q4_1 weights by 8-bit-quantised activations
    # with kernels that differ from CPU to CPU, so at a near tie of two or three tokens any one rank can
    # swap (an Intel Xeon put ' France' 3rd where the fp32 engine has it 1st: p 0.063 vs 0.073). Measured:
    # AMD EPYC AVX2, mean |dp| 0.005, argmax 48/49, 94 % of top-10 ids shared; Intel Xeon AVX-512 (issue 10),
    # mean 0.007; AMD EPYC AVX-512 (Zen 5), mean 0.005, argmax 29/30, 95 % shared, prompt tokens mean 0.0085
    # with 94 % within 0.05 and 27/28 likely ranks within 1. The margins are 2-3x those figures and far from
    # what an engine bug gives (a position or cache bug moves most probabilities by > 0.1 and the argmax of
    # most steps). On the id-exact path (the miniature vLLM above) remote and local agree to 1e-5.
    assert mean < 0.02 and prompt_mean < 0.025 and prompt_close >= 0.8
    assert same_argmax >= 0.8 * steps and shared / total >= 0.85
    assert likely_rank_close >= 0.8 * likely


@pytest.mark.slow
def test_llama_server_step_generate_choose_and_branches(llama_model):
    session = llama_model.start("Once upon a time", SamplingParams(temperature=0.8, seed=7))
    first = session.step()
    assert first.prob is not None and 0 < first.prob <= 1 and first.entropy is None
    assert first.sampled_prob is None  # temperature 0.8 without a top-k cut: not knowable from a top-10
    session.params = SamplingParams(greedy=True)
    steps = session.generate(6)
    assert len(steps) == 6 and session.finish_reason == "length" and len(session.tokens) == 7
    assert all(s.sampled_prob in (0.0, 1.0) for s in steps)
    alternative = session.tokens[2].alternatives[1]
    chosen = session.choose(2, alternative.token_id)
    assert chosen.prob == pytest.approx(alternative.prob, rel=1e-3) and chosen.rank in (2, None)
    assert len(session.tokens) == 3 and [b.split for b in session.branches] == [0, 2]
    session.switch_branch(0)
    assert len(session.tokens) == 7
    session.switch_branch(1)
    assert session.step().token_id is not None
    far = llama_model.encode(" zebra")[0]
    forced = session.choose(len(session.tokens), far)  # forcing an unlikely next token
    text = llama_model.token_text(far)[0]
    assert forced.token_id == far and forced.text == text and session.text.endswith(text)
    assert forced.rank is None or forced.rank > 10


@pytest.mark.slow
def test_llama_server_stop_cancels_the_stream(llama_model):
    session = llama_model.start("Once upon a time, in a land far away,", SamplingParams(greedy=True))
    got = []
    kept = session.generate(300, should_stop=lambda: len(got) >= 2, on_token=got.append)
    assert len(kept) == 2 and len(session.tokens) == 2 and session.finish_reason == "stopped"
    after = session.step()  # the server is free again at once: the cancelled stream is not still running
    assert after.position == 2


@pytest.mark.slow
def test_llama_server_end_of_text_and_honest_retokenisation(llama_model):
    chat = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    session = llama_model.start(chat, SamplingParams(greedy=True))
    assert session.prompt_tokens[0].text == "<|im_start|>"
    steps = session.generate(40)
    assert session.finish_reason == "eos" and session.is_eos(steps[-1])
    assert steps[-1].token_id == 2  # <|im_end|>: the server stops without naming it; tokviz fills it in
    # A text server re-reads the text: two "\n" tokens come back as one "\n\n"; the session says so.
    # A server that takes token ids (llama-server) gets them as they are: nothing to say.
    newline = llama_model.encode("\n")[0]
    text_session = llama_model.start("Paris.", SamplingParams(greedy=True))
    text_session.choose(0, newline)
    text_session.choose(1, newline)
    text_session.step()
    assert text_session.token_ids[-3:-1] == [newline, newline]
    retokenised = any("read back as the same tokens" in w for w in text_session.warnings)
    assert retokenised != llama_model.caps.ids_in


@pytest.mark.slow
def test_llama_server_fragment_of_a_character_is_an_error_not_a_guess(llama_model):
    """llama-cpp-python writes each token as text with invalid UTF-8 dropped: the two halves of an emoji
    come back as "" and cannot be told from 270-odd other tokens. llama-server sends nothing for a token that
    ends inside a character, then one entry (the last id, the whole character's bytes) for all of them.
    tokviz says so instead of guessing."""
    session = llama_model.start("I love pizza 🍕🍕🍕 and burgers 🍔🍔", SamplingParams(greedy=True))
    assert session.prompt_tokens[-1].partial
    for generate in (session.step, lambda: session.generate(8)):
        with pytest.raises(ServerError, match="cannot identify"):
            generate()
        assert session.tokens == []  # nothing invented, nothing half-kept


@pytest.mark.slow
def test_llama_server_without_local_tokenizer_uses_its_endpoints(llama_server):
    from tokviz_app.engine.bundled import gguf_path

    model = RemoteModel(llama_server, str(gguf_path()), tokenizer="server")
    session = model.start("The capital of France is", SamplingParams(greedy=True))
    step = session.step()
    assert step.text == " Paris" and step.prob > 0.5
    assert model.find_tokens("Paris") == [] and any("No local tokenizer" in n for n in model.notices)


# llama.cpp's sampler settings with every cut off; a case turns on what it tests
LLAMA_OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "temperature": 1.0}
KEPT_CASES = [  # (tokviz settings, llama.cpp's, whether the raw top-20 list decides the kept set)
    (SamplingParams(greedy=True), {"temperature": 0.0}, True),
    (SamplingParams(top_k=3), {"top_k": 3}, True),
    (SamplingParams(top_k=5, temperature=0.7), {"top_k": 5, "temperature": 0.7}, True),
    (SamplingParams(top_p=0.5), {"top_p": 0.5}, True),
    (SamplingParams(min_p=0.1), {"min_p": 0.1}, True),
    (SamplingParams(top_k=10, min_p=0.05), {"top_k": 10, "min_p": 0.05}, True),
    # llama.cpp applies the temperature after top-p and min-p, transformers before: tokviz does not guess
    (SamplingParams(top_p=0.8, temperature=0.7), {"top_p": 0.8, "temperature": 0.7}, False),
]


@pytest.mark.slow
def test_kept_sets_read_from_raw_lists_are_llama_servers_own_post_sampling_probs():
    """What tokviz computes from a server's raw top list (`remote/kept.py`) against what llama.cpp's own server
    reports after its samplers (`post_sampling_probs`), for the same request: the same kept tokens, the same
    probabilities to float32 rounding; where the list cannot decide it, tokviz says unknown (None)."""
    import httpx

    from tokviz_app.engine.remote.kept import kept
    from tokviz_app.engine.remote.logprobs import _Known

    with running_llama_server("llama-server") as url:
        root = url.removesuffix("/v1")
        prompts = ["The capital of France is", "Once upon a time, there was a", "def add(a, b):\n    return"]
        checked = 0
        for text in prompts:
            ids = httpx.post(f"{root}/tokenize", json={"content": text}).json()["tokens"]
            for params, settings, decided in KEPT_CASES:
                body = {"prompt": ids, "n_predict": 1, "n_probs": 20, "seed": 1, **LLAMA_OFF, **settings}
                raw, after = (httpx.post(f"{root}/completion", json={**body, "post_sampling_probs": post}, timeout=60)
                              .json()["completion_probabilities"][0] for post in (False, True))
                listed = [_Known(t["id"], t["logprob"], rank, True) for rank, t in enumerate(raw["top_logprobs"], 1)]
                ours = kept(listed, len(listed), params, vocab_size=49152)
                if not decided:
                    assert ours is None, params
                    continue
                theirs = {t["id"]: t["prob"] for t in after["top_probs"] if t["prob"] > 0}
                if ours is None:  # only where the server kept every listed token: the kept set reaches past them
                    assert len(theirs) == len(listed), (text, params)
                    continue
                assert ours.closed, params
                assert set(ours.probs) == set(theirs), (text, params)
                assert all(abs(ours.probs[i] - p) <= 2e-6 + 1e-5 * p for i, p in theirs.items()), (text, params)
                assert all(i not in theirs for i in ours.dropped)
                checked += 1
        assert checked >= len(prompts) * (sum(decided for *_, decided in KEPT_CASES) - 1)


def test_config_parsing_and_api_key(monkeypatch):
    monkeypatch.setenv("TOKVIZ_SERVER_API_KEY", "secret")
    config = ServerConfig.parse("localhost:8000")
    assert config.url == "http://localhost:8000/v1" and config.api_key == "secret"
    with pytest.raises(TokvizError, match="plain HTTP"):  # a key never goes over plain HTTP to another machine
        ServerConfig.parse("gpu-box:8000")
    assert ServerConfig.parse("gpu-box:8000", api_key=None).url == "http://gpu-box:8000/v1"
    assert ServerConfig.parse("https://x.example/v1/").url == "https://x.example/v1"
    with pytest.raises(TokvizError):
        ServerConfig.parse("ftp://nope")


def test_remote_backend_needs_no_torch():
    code = "import sys, tokviz_app.engine.remote; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
