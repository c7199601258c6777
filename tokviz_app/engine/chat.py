"""A Hugging Face tokenizer's chat template: messages -> prompt token ids, and the token that ends a turn.

Shared by the local engine and remote models with a local tokenizer. No torch.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core.chat import Message
from ..core.errors import TokvizError

_MARK = "tokviz-turn-probe"  # an answer's text, found again in the rendered chat


def has_template(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def chat_ids(tokenizer, messages: list[Message], label: str) -> list[int]:
    """The chat rendered by the template with the generation prompt, as token ids (the template's own
    special tokens, no BOS added again; the text is never encoded a second time)."""
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    except Exception as error:  # noqa: BLE001 - a template may raise anything (jinja's raise_exception)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TokvizError(f"The chat template of {label} does not accept these messages: {reason.rstrip('.')}.") \
            from error
    if isinstance(ids, Mapping):  # a tokenizer that answers with a BatchEncoding all the same
        ids = ids["input_ids"]
    ids = list(ids)
    if ids and isinstance(ids[0], (list, tuple)):
        ids = list(ids[0])
    if not ids:
        raise TokvizError(f"The chat template of {label} made an empty prompt from these messages.")
    return [int(i) for i in ids]


def end_of_turn_ids(tokenizer) -> frozenset[int]:
    """The special token the template closes an assistant turn with (`<|im_end|>`, `<|eot_id|>`,
    `<end_of_turn>`): an answer is rendered around a marker and the special token right after it is
    taken. Empty where there is no template or the rendering says nothing."""
    if not has_template(tokenizer):
        return frozenset()
    specials = _special_texts(tokenizer)
    answer = {"role": "assistant", "content": _MARK}
    for messages in ([{"role": "user", "content": "Hi"}, answer], [answer]):  # some templates want a user first
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception:  # noqa: BLE001 - this shape of chat is refused: try the next
            continue
        if not isinstance(text, str) or _MARK not in text:
            continue
        rest = text[text.rindex(_MARK) + len(_MARK):].lstrip()
        found = [s for s in specials if rest.startswith(s)]
        if found:
            return frozenset([specials[max(found, key=len)]])
    return frozenset()


def _special_texts(tokenizer) -> dict[str, int]:
    """Text -> id of every special token (added tokens marked special, and the named ones)."""
    texts: dict[str, int] = {}
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False) and str(token):
            texts[str(token)] = int(token_id)
    for text in getattr(tokenizer, "all_special_tokens", None) or []:
        token_id = tokenizer.convert_tokens_to_ids(text)
        if text and isinstance(token_id, int) and text not in texts:
            texts[text] = token_id
    return texts
