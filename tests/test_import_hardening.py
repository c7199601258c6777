"""Issue 11, item 4: hostile or broken session imports.

A fuzzed import suite (every bad file gives one clear sentence, never a traceback), the size and token caps,
parsing off the event loop, the current session kept when an import fails (NiceGUI User fixture), and a
hostile snapshot rendered by the HTML export and opened in real headless Chromium.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path

import pytest
from nicegui.testing import User

from tests.test_browser import CHROMEDRIVER, CHROMIUM, driver  # noqa: F401 (driver is a fixture)
from tests.ui_helpers import chips, idle, loop_gaps, open_ready
from tokviz_app.core.errors import ImportFormatError, TokvizError
from tokviz_app.exports.snapshot import MAX_IMPORT_BYTES, MAX_IMPORT_TOKENS, SessionSnapshot, from_json, to_dict, to_json
from tokviz_app.core.types import Alternative, Branch, SamplingParams, TokenStep
from tokviz_app.exports.html import render_html

PAYLOAD = '"><script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def make_snapshot(text: str = "tok", *, n: int = 4, key: str = "some-model", alternatives: int = 3) -> SessionSnapshot:
    params = SamplingParams(temperature=0.8, top_k=5, seed=3)

    def steps(count: int, is_prompt: bool) -> list[TokenStep]:
        out = []
        for i in range(count):
            first = is_prompt and i == 0
            alts = () if first else tuple(Alternative(10 + a, f"{text}{a}", 0.1, 0.2) for a in range(alternatives))
            out.append(TokenStep(i + 1, f"{text}{i}", None if first else 0.25, None if first else -1.386,
                                 None if first else 2, None if first else 3.5, None if first else 0.3, alts,
                                 position=i, is_prompt=is_prompt, sampling=params))
        return out

    prompt = steps(3, True)
    root = steps(n, False)
    child = root[:2] + steps(n, False)[2:]
    return SessionSnapshot(model={"key": key, "label": f"{text} label", "source": f"{text} source"},
                           settings=params, prompt=f"{text} prompt", prompt_ids=[t.token_id for t in prompt],
                           prompt_tokens=prompt, branches=[Branch(0, root), Branch(1, child, 0, 2)], active=1)


def base() -> dict:
    return to_dict(make_snapshot())


def edit(path: str, value):
    """A mutation that sets one field, addressed like 'branches.0.tokens.1.prob'."""
    def mutate(doc: dict) -> dict:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = doc
        for p in parents:
            target = target[p]
        target[last] = value
        return doc
    return mutate


def drop(path: str):
    def mutate(doc: dict) -> dict:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = doc
        for p in parents:
            target = target[p]
        del target[last]
        return doc
    return mutate


def dumped(mutate) -> bytes:
    return json.dumps(mutate(base())).encode()


STEP = "branches.0.tokens.1"
DEEP = 100_000
# name -> the file's bytes. The first eight are the tracebacks; the rest widen the net.
BAD_FILES = {
    "deep nesting": b"[" * DEEP + b"]" * DEEP,
    "text as an int": dumped(edit(f"{STEP}.text", 7)),
    "prob as a string": dumped(edit(f"{STEP}.prob", "0.5")),
    "logprob -1e308": dumped(edit(f"{STEP}.logprob", -1e308)),
    "label as an int": dumped(edit("model.label", 7)),
    "negative prompt id": dumped(edit("prompt_ids.0", -1)),
    "token id 10^30": dumped(edit(f"{STEP}.token_id", 10**30)),
    "seed as a string": dumped(edit("settings.seed", "42")),
    "deep nesting in a field": json.dumps(base()).encode()[:-1] + b', "extra": ' + b'{"a": ' * 500 + b"1" + b"}" * 500 + b"}",
    "empty file": b"",
    "binary garbage": bytes(range(256)) * 4,
    "not UTF-8": b'{"format": "tokviz-session", "prompt": "\xff\xfe"}',
    "a list": b"[]",
    "other format": b'{"format": "other"}',
    "version 2": dumped(edit("version", 2)),
    "version as a string": dumped(edit("version", "1")),
    "NaN prob": json.dumps(edit(f"{STEP}.prob", float("nan"))(base())).encode(),
    "Infinity entropy": json.dumps(edit(f"{STEP}.entropy", float("inf"))(base())).encode(),
    "1e400 prob": dumped(edit(f"{STEP}.prob", 0.5)).replace(b'"prob": 0.5', b'"prob": 1e400'),
    "prob above 1": dumped(edit(f"{STEP}.prob", 1.5)),
    "negative prob": dumped(edit(f"{STEP}.prob", -0.1)),
    "positive logprob": dumped(edit(f"{STEP}.logprob", 3.0)),
    "prob without logprob": dumped(edit(f"{STEP}.logprob", None)),
    "rank 0": dumped(edit(f"{STEP}.rank", 0)),
    "rank as a float": dumped(edit(f"{STEP}.rank", 2.0)),
    "entropy negative": dumped(edit(f"{STEP}.entropy", -4.0)),
    "token id true": dumped(edit(f"{STEP}.token_id", True)),
    "token id 3.0": dumped(edit(f"{STEP}.token_id", 3.0)),
    "token id null": dumped(edit(f"{STEP}.token_id", None)),
    "a 5,000-digit id": dumped(edit(f"{STEP}.token_id", 1)).replace(b'"token_id": 1,', b'"token_id": ' + b"9" * 5000
                                                                       + b",", 1),
    "position as a string": dumped(edit(f"{STEP}.position", PAYLOAD)),
    "position out of order": dumped(edit(f"{STEP}.position", 7)),
    "is_prompt wrong": dumped(edit(f"{STEP}.is_prompt", True)),
    "partial as 0": dumped(edit(f"{STEP}.partial", 0)),
    "alternatives not a list": dumped(edit(f"{STEP}.alternatives", {"a": 1})),
    "alternative missing a field": dumped(drop(f"{STEP}.alternatives.0.prob")),
    "alternative text as a list": dumped(edit(f"{STEP}.alternatives.0.text", ["x"])),
    "too many alternatives": dumped(edit(f"{STEP}.alternatives", [base()["branches"][0]["tokens"][1]
                                                                  ["alternatives"][0]] * 101)),
    "step missing a field": dumped(drop(f"{STEP}.logprob")),
    "unknown step field": dumped(edit(f"{STEP}.onclick", "x")),
    "step as a string": dumped(edit(STEP, "token")),
    "step sampling broken": dumped(edit(f"{STEP}.sampling.top_p", 0)),
    "token text too long": dumped(edit(f"{STEP}.text", "x" * 5000)),
    "lone surrogate": dumped(edit(f"{STEP}.text", "a")).replace(b'"text": "a"', b'"text": "\\ud800"'),
    "greedy as yes": dumped(edit("settings.greedy", "yes")),
    "greedy as the payload": dumped(edit("settings.greedy", PAYLOAD)),
    "temperature 0 when sampling": dumped(edit("settings.temperature", 0)),
    "temperature as a string": dumped(edit("settings.temperature", "hot")),
    "top_k negative": dumped(edit("settings.top_k", -1)),
    "top_p above 1": dumped(edit("settings.top_p", 1.5)),
    "seed negative": dumped(edit("settings.seed", -5)),
    "seed 2^70": dumped(edit("settings.seed", 2**70)),
    "settings missing": dumped(drop("settings")),
    "model as a list": dumped(edit("model", ["gpt2"])),
    "model key as an object": dumped(edit("model.key", {"a": 1})),
    "prompt as an int": dumped(edit("prompt", 5)),
    "prompt too long": dumped(edit("prompt", "x" * 200_001)),
    "prompt ids not the tokens": dumped(edit("prompt_ids.1", 9)),
    "prompt ids empty": dumped(edit("prompt_ids", [])),
    "prompt tokens empty": dumped(edit("prompt_tokens", [])),
    "no branches": dumped(edit("branches", [])),
    "branches not a list": dumped(edit("branches", "all")),
    "branch id out of order": dumped(edit("branches.1.id", 5)),
    "branch parent is itself": dumped(edit("branches.1.parent", 1)),
    "root with a parent": dumped(edit("branches.0.parent", 0)),
    "split negative": dumped(edit("branches.1.split", -2)),
    "split as a float": dumped(edit("branches.1.split", 1.5)),
    "active out of range": dumped(edit("active", 2)),
    "active as a string": dumped(edit("active", "1")),
    "extra as a list": dumped(edit("extra", [1, 2])),
    "unknown top-level field": dumped(edit("script", PAYLOAD)),
}


def is_sentence(message: str) -> bool:
    return bool(message) and message[0].isupper() and message.endswith(".") and "\n" not in message \
        and len(message) < 300 and "Traceback" not in message


def test_the_base_file_is_valid_and_round_trips() -> None:
    text = to_json(make_snapshot())
    assert to_json(from_json(text)) == text
    assert to_json(from_json(text.encode())) == text


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_file_gives_one_sentence(name: str) -> None:
    with pytest.raises(ImportFormatError) as caught:  # nothing else escapes: no TypeError, RecursionError...
        from_json(BAD_FILES[name])
    assert is_sentence(str(caught.value)), str(caught.value)


def test_a_message_names_the_field_and_the_value() -> None:
    with pytest.raises(ImportFormatError, match=r"branches\[0\]\.tokens\[1\]\.prob must be a number from 0 to 1 "
                                                r"\(found '0\.5'\)\."):
        from_json(BAD_FILES["prob as a string"])
    with pytest.raises(ImportFormatError, match=r"settings\.seed must be a whole number"):
        from_json(BAD_FILES["seed as a string"])


def test_random_corruptions_never_escape_as_tracebacks() -> None:
    """Seeded fuzzing: replace any one value of a valid file by something of another type or range."""
    import random

    rng = random.Random(11)
    weird = [None, True, -1, 0, 2**40, 10**30, -1e308, 1e308, 0.5, "", PAYLOAD, [], {}, [PAYLOAD], {"a": [1]}]

    def slots(node, path=()):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            yield path + (key,)
            yield from slots(child, path + (key,))

    doc = base()
    every = list(slots(doc))
    accepted = 0
    for _ in range(600):
        mutated = copy.deepcopy(doc)
        *parents, last = rng.choice(every)
        target = mutated
        for p in parents:
            target = target[p]
        target[last] = rng.choice(weird)
        try:
            snapshot = from_json(json.dumps(mutated))
        except ImportFormatError as error:
            assert is_sentence(str(error)), str(error)
        else:  # the change was harmless (a label, a text...): the result renders and re-exports
            accepted += 1
            render_html(snapshot)
            assert from_json(to_json(snapshot)).branches == snapshot.branches
    assert accepted < 600


def test_size_and_token_caps() -> None:
    assert MAX_IMPORT_BYTES == 16 * 2**20 and MAX_IMPORT_TOKENS == 50_000  # documented in README and DESIGN
    too_big = b" " * (MAX_IMPORT_BYTES + 1)
    started = time.perf_counter()
    with pytest.raises(ImportFormatError, match="at most 16 MB"):
        from_json(too_big)
    # refused by its length alone; 1 s is ~1000x what it takes, for a loaded machine
    assert time.perf_counter() - started < 1.0

    # 50,001 tokens without alternatives fit in 16 MB but are too many
    doc = to_dict(make_snapshot(n=MAX_IMPORT_TOKENS - 3 + 1, alternatives=0))
    doc["branches"] = doc["branches"][:1]
    doc["active"] = 0
    data = json.dumps(doc, separators=(",", ":")).encode()
    assert len(data) < MAX_IMPORT_BYTES
    with pytest.raises(ImportFormatError, match="holds 50,001 tokens; tokviz imports at most 50,000"):
        from_json(data)


def test_ids_outside_the_vocabulary_and_context_are_refused(tiny_model) -> None:
    from tokviz_app.exports.snapshot import check_fits

    snapshot = make_snapshot(key=tiny_model.key)
    check_fits(snapshot, tiny_model)
    snapshot.branches[0].tokens[1] = TokenStep(tiny_model.vocab_size, "x", 0.5, -0.69, 1, 1.0, 0.5, position=1)
    with pytest.raises(ImportFormatError, match=f"token id {tiny_model.vocab_size}, but .* vocabulary has"):
        check_fits(snapshot, tiny_model)
    long = make_snapshot(n=tiny_model.context_length)
    with pytest.raises(ImportFormatError, match="reads at most"):
        check_fits(long, tiny_model)


# ------------------------------------------------------------------------------------------- off the loop
class TracedBytes(bytes):
    """The file's bytes, noting which thread decodes them (the parser's first step)."""

    threads: list[int] = []

    def decode(self, *args, **kwargs):
        TracedBytes.threads.append(threading.get_ident())
        return super().decode(*args, **kwargs)


async def test_parsing_runs_in_a_worker_thread_and_the_loop_stays_responsive(user: User, tokviz_page) -> None:
    app = tokviz_page()
    await user.open("/")
    c = app.controllers[-1]
    data = TracedBytes(to_json(make_snapshot(n=3000, alternatives=10)).encode())  # 6,000 steps, ~8.5 MB
    TracedBytes.threads.clear()

    async with loop_gaps() as gaps:
        started = time.perf_counter()
        snapshot = await c.service.read_snapshot(data)
        took = time.perf_counter() - started
    assert TracedBytes.threads and threading.get_ident() not in TracedBytes.threads
    assert len(snapshot.tokens) == 3000
    # json.loads holds the GIL for its part (C code, ~1/4 of the time); the checks in Python yield every
    # 5 ms. On the loop (before the fix) one gap would be the whole parse; 0.9 of it (or 1 s) leaves room
    # for a machine busy with other work. The thread check above is the exact proof.
    assert max(gaps) < max(1.0, 0.9 * took), (max(gaps), took)


# --------------------------------------------------------------------------------------------- the page
async def test_a_bad_import_keeps_the_current_session(user: User, tokviz_page) -> None:
    from nicegui.elements.upload_files import SmallFileUpload

    app, c = await open_ready(user, tokviz_page)
    user.find(marker="max-tokens").elements.pop().value = 5
    user.find("Generate to End").click()
    await idle(c)
    handle, tokens = c.state.handle, list(c.state.tokens)
    shown = [ch.props["data-prob"] for ch in chips(user)]
    assert len(tokens) == 5 and len(shown) == 5

    def unchanged() -> None:
        assert c.state.handle is handle and not handle.closed
        assert c.state.tokens == tokens
        assert [ch.props["data-prob"] for ch in chips(user)] == shown

    for name in ("deep nesting", "text as an int", "logprob -1e308", "token id 10^30", "greedy as the payload"):
        await c.files.import_json(BAD_FILES[name])
        await user.should_see("This ")  # the notification
        unchanged()
    await c.files.import_json(BAD_FILES["prob as a string"])
    await user.should_see("branches[0].tokens[1].prob must be a number from 0 to 1 (found '0.5').")
    unchanged()

    # valid JSON for the loaded model's key, but its ids are outside that model's vocabulary
    model = c.state.model
    foreign = make_snapshot(key=model.key)
    foreign.branches[0].tokens[1] = TokenStep(model.vocab_size + 5, "x", 0.5, -0.69, 1, 1.0, 0.5, position=1)
    await c.files.import_json(to_json(foreign).encode())
    await user.should_see(f"This session uses token id {model.vocab_size + 5}")
    unchanged()

    upload = user.find(marker="import").elements.pop()  # the real upload path, refused by size before reading
    await upload.handle_uploads([SmallFileUpload("big.json", "application/json", b" " * (MAX_IMPORT_BYTES + 1))])
    await user.should_see("tokviz imports session files of at most 16 MB.")
    unchanged()

    user.find("Generate Next Token").click()  # the kept session is live
    await idle(c)
    assert len(c.state.tokens) == 6

    # a good file still imports (read-only: its model is not loaded), replacing the session
    await c.files.import_json(to_json(make_snapshot()).encode())
    await user.should_see("read-only")
    assert handle.closed and len(chips(user)) == 4


# ------------------------------------------------------------------------------------------ HTML export
def hostile_snapshot() -> SessionSnapshot:
    """Every string field the schema lets through set to the payload, from a file that passed the import."""
    doc = base()
    doc["model"] = {"key": PAYLOAD, "label": PAYLOAD, "source": PAYLOAD}
    doc["prompt"] = PAYLOAD
    for step in [*doc["prompt_tokens"], *(t for b in doc["branches"] for t in b["tokens"])]:
        step["text"] = PAYLOAD
        for alt in step["alternatives"]:
            alt["text"] = PAYLOAD
    doc["extra"] = {"note": PAYLOAD}
    return from_json(json.dumps(doc))


def hostile_numbers() -> SessionSnapshot:
    """Numeric fields the page writes holding the payload: a snapshot that never went through the import."""
    snapshot = hostile_snapshot()
    object.__setattr__(snapshot.settings, "seed", PAYLOAD)  # (greedy is only read as on/off: "greedy" or not)
    object.__setattr__(snapshot.settings, "top_k", PAYLOAD)
    object.__setattr__(snapshot.settings, "temperature", PAYLOAD)
    for branch in snapshot.branches:
        branch.split = PAYLOAD
        for i, step in enumerate(branch.tokens):
            object.__setattr__(step, "position", PAYLOAD)
            object.__setattr__(step, "token_id", PAYLOAD)
            object.__setattr__(step, "rank", PAYLOAD)
    snapshot.branches[1].id = PAYLOAD
    return snapshot


def test_hostile_numbers_are_refused_by_the_import() -> None:
    for name in ("greedy as the payload", "position as a string"):
        with pytest.raises(ImportFormatError):
            from_json(BAD_FILES[name])
    with pytest.raises(TokvizError):
        from_json(json.dumps(edit("branches.0.split", PAYLOAD)(base())))


@pytest.mark.browser
@pytest.mark.parametrize("make", [hostile_snapshot, hostile_numbers])
def test_hostile_snapshot_renders_inert_in_chromium(driver, tmp_path: Path, make) -> None:  # noqa: F811
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed")
    from selenium.webdriver.common.by import By

    snapshot = make()
    page = render_html(snapshot, mode="prob" if make is hostile_numbers else "rank")  # rank mode compares ranks
    assert "<script" not in page and "<img" not in page
    path = tmp_path / "hostile.html"
    path.write_text(page, encoding="utf-8")
    driver.get(path.as_uri())
    time.sleep(0.3)  # an injected onerror would fire once the broken image fails to load
    assert driver.execute_script("return typeof window.pwned") == "undefined"
    assert driver.find_elements(By.TAG_NAME, "script") == [] and driver.find_elements(By.TAG_NAME, "img") == []
    shown = PAYLOAD.replace(" ", "·")  # token chips show spaces as middle dots
    chips_ = driver.find_elements(By.CSS_SELECTOR, ".k")
    assert chips_ and all(chip.text == shown for chip in chips_)
    assert all(PAYLOAD in chip.get_dom_attribute("title") for chip in chips_)
    assert driver.find_element(By.CSS_SELECTOR, "p b").text == PAYLOAD  # the model label, literally
    assert driver.title == f"tokviz – {PAYLOAD}"
    if make is hostile_numbers:
        body = driver.find_element(By.TAG_NAME, "body").text
        assert f"T={PAYLOAD}, top-k={PAYLOAD}" in body and f"seed={PAYLOAD}" in body
        assert all(chip.get_dom_attribute("data-position") == PAYLOAD for chip in driver.find_elements(
            By.CSS_SELECTOR, ".k.g"))
