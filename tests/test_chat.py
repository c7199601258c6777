"""Issue 13, item 2: chat with an instruct model, in the engine, the contract and the export.

The bundled SmolLM2-135M-Instruct answers "What is the capital of France?" and stops at its end-of-turn
token (slow: the real model); a tiny GPT-2 given ChatML tokens and a template checks the local path fast;
the template's end-of-turn token is found on a few template shapes; exports keep the messages and the
import refuses bad ones with one sentence.
"""

from __future__ import annotations

import json

import pytest

from tests.test_import_hardening import is_sentence, make_snapshot
from tests.tiny_model import build_tiny_model, train_tokenizer
from tokviz_app.core.chat import check_messages
from tokviz_app.core.errors import ImportFormatError, PromptTooLongError, TokvizError
from tokviz_app.core.types import SamplingParams
from tokviz_app.engine.chat import chat_ids, end_of_turn_ids
from tokviz_app.exports.snapshot import from_json, to_dict, to_json

GREEDY = SamplingParams(greedy=True)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' "
          "+ m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
USER_FIRST = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('A chat starts with the user.') }}{% endif %}"
              "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '</s>' }}{% endfor %}")
PLAIN = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"


# ------------------------------------------------------------------------------------------ the messages
@pytest.mark.parametrize("messages, sentence", [
    ([], "at least one user message"),
    ("hello", "at least one user message"),
    ([{"role": "system", "content": "Be brief."}], "needs at least one user message"),
    ([{"role": "tool", "content": "x"}], "role 'tool'; a role is system, user or assistant"),
    ([{"role": "user", "content": 3}], "content of message 1 of the chat must be text"),
    ([{"role": "user", "content": "Hi", "name": "Ann"}], "unknown field 'name'"),
    ([{"role": "user", "content": "Hi"}, "Hello"], "Message 2 of the chat is not a role and a content"),
])
def test_bad_messages_are_one_sentence(messages, sentence) -> None:
    with pytest.raises(TokvizError, match=sentence) as caught:
        check_messages(messages)
    assert is_sentence(str(caught.value))


def test_messages_are_copied() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    checked = check_messages(messages)
    assert checked == messages and checked[0] is not messages[0]


# ------------------------------------------------------------------------------------------ the template
def tokenizer_with(template: str, specials: list[str]):
    tokenizer = train_tokenizer(300)
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("template, specials, end", [
    (CHATML, ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
    (USER_FIRST, ["</s>"], "</s>"),
    (PLAIN, ["<|im_end|>"], None),  # nothing special closes a turn: only the tokenizer's end-of-text
])
def test_the_end_of_turn_token_is_found(template, specials, end) -> None:
    tokenizer = tokenizer_with(template, specials)
    expected = set() if end is None else {tokenizer.convert_tokens_to_ids(end)}
    assert end_of_turn_ids(tokenizer) == expected


def test_chat_ids_are_the_templates_tokens_not_a_reencoding() -> None:
    tokenizer = tokenizer_with(CHATML, ["<|im_start|>", "<|im_end|>"])
    ids = chat_ids(tokenizer, QUESTION, "Tiny")
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids[0] == start and ids.count(start) == 2 and ids.count(end) == 1
    assert tokenizer.decode(ids) == ("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                                     "<|im_start|>assistant\n")
    refusing = tokenizer_with(USER_FIRST, ["</s>"])
    with pytest.raises(TokvizError, match="The chat template of Tiny does not accept these messages: A chat starts "
                                          "with the user.") as caught:
        chat_ids(refusing, [{"role": "system", "content": "Be brief."}, *QUESTION], "Tiny")
    assert is_sentence(str(caught.value))


# ------------------------------------------------------------------------------------------ the local engine
@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, engine_manager):
    """The tiny GPT-2 with ChatML's two tokens added (embeddings resized) and a template, loaded from its folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), train_steps=5)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return engine_manager.load(str(folder))


def test_local_chat_starts_from_the_templates_ids(chat_model) -> None:
    tokenizer = chat_model.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert chat_model.capabilities.chat_template
    assert chat_model.eos_token_ids == {tokenizer.eos_token_id, im_end}
    messages = [{"role": "system", "content": "Be brief."}, *QUESTION]
    session = chat_model.start_chat(messages, GREEDY)
    try:
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert session.token_ids == expected and session.messages == messages
        texts = [t.text for t in session.prompt_tokens]
        assert texts[0] == "<|im_start|>" and texts.count("<|im_end|>") == 2  # the special tokens are visible
        assert "".join(texts).endswith("<|im_start|>assistant\n")
        session.generate(3)
        ended = session.choose(len(session.tokens), im_end)  # the end of the turn ends the answer
        assert session.is_eos(ended)
        assert session.snapshot().messages == messages
    finally:
        session.close()


def test_local_chat_refusals(chat_model, tiny_model) -> None:
    with pytest.raises(TokvizError, match="has no chat template, so it cannot start a chat") as caught:
        tiny_model.start_chat(QUESTION)
    assert is_sentence(str(caught.value)) and not tiny_model.capabilities.chat_template
    with pytest.raises(TokvizError, match="at least one user message"):
        chat_model.start_chat([{"role": "system", "content": "Be brief."}])
    long = [{"role": "user", "content": " the" * chat_model.context_length}]
    with pytest.raises(PromptTooLongError, match="The chat is .* tokens long with its template"):
        chat_model.start_chat(long)


@pytest.mark.slow
def test_smollm2_answers_paris_and_stops_at_the_end_of_its_turn() -> None:
    from tokviz_app.engine import ModelManager

    model = ModelManager(device="cpu").load("smollm2-135m")
    assert model.capabilities.chat_template  # the GGUF's template survived the conversion
    im_end = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in model.eos_token_ids
    session = model.start_chat(QUESTION, GREEDY)
    try:
        prompt = [t.text for t in session.prompt_tokens]
        assert prompt[0] == "<|im_start|>" and prompt[-4:] == ["<|im_start|>", "ass", "istant", "\n"]
        steps = session.generate(40)
        answer = "".join(t.text for t in steps)
        assert "Paris" in answer, answer
        assert session.finish_reason == "eos" and steps[-1].token_id == im_end and steps[-1].text == "<|im_end|>"
    finally:
        session.close()


# ------------------------------------------------------------------------------------------ export and import
def chat_snapshot():
    snapshot = make_snapshot()
    snapshot.messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>there</b>"},
                         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And now?"}]
    return snapshot


def test_the_messages_round_trip_and_old_files_still_import() -> None:
    snapshot = chat_snapshot()
    text = to_json(snapshot)
    again = from_json(text)
    assert again.messages == snapshot.messages and to_json(again) == text
    plain = to_dict(make_snapshot())
    assert "messages" not in plain and from_json(json.dumps(plain)).messages is None


def with_messages(messages) -> bytes:
    doc = to_dict(chat_snapshot())
    doc["messages"] = messages
    return json.dumps(doc).encode()


@pytest.mark.parametrize("messages, sentence", [
    ("Hi", r"messages must be a list"),
    ([], r"messages must hold 1 to 1,000 entries"),
    ([{"role": "user", "content": "x"}] * 1001, r"messages must hold 1 to 1,000 entries"),
    ([{"role": "tool", "content": "x"}],
     r"messages\[0\]\.role must be one of system, user, assistant \(found 'tool'\)"),
    ([{"role": "user", "content": 5}], r"messages\[0\]\.content must be text"),
    ([{"role": "user"}], r"messages\[0\]\.content is missing"),
    ([{"role": "user", "content": "x", "onclick": "x"}], r"messages\[0\] has an unknown field 'onclick'"),
    ([{"role": "system", "content": "x"}], r"messages must hold at least one user message"),
    ([{"role": "user", "content": "x" * 200_001}], r"messages\[0\]\.content is longer than 200,000 characters"),
    ([{"role": "user", "content": "x" * 150_000}] * 2, r"messages hold more than 200,000 characters together"),
    (["user"], r"messages\[0\] must be an object"),
])
def test_bad_messages_in_a_file_are_refused(messages, sentence) -> None:
    with pytest.raises(ImportFormatError, match=sentence) as caught:
        from_json(with_messages(messages))
    assert is_sentence(str(caught.value)), str(caught.value)
