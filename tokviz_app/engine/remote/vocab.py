"""Token ids <-> text for a served model: a local tokenizer, or the server's tokenize endpoints."""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ...core.errors import ModelLoadError, TokvizError
from .client import ServerClient, ServerError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Flavour = tuple[str, str, str, str]  # (tokenize path, text field, detokenize path, text field of the answer)


class HFVocab:
    """Token ids <-> text with a local Hugging Face tokenizer (exact, fast, searchable)."""

    searchable = True

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        from ..chat import end_of_turn_ids, has_template
        from ..texts import TokenTexts

        self.tokenizer = tokenizer
        self._texts = TokenTexts(tokenizer)
        self.size = len(tokenizer)
        self.bos_token_id = tokenizer.bos_token_id
        eos = tokenizer.eos_token_id
        self.eos_token_ids = frozenset([eos] if eos is not None else []) | end_of_turn_ids(tokenizer)
        self.chat_template = has_template(tokenizer)  # chats are rendered here, to token ids
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self._by_text: dict[str, list[int]] | None = None
        self._by_bytes: dict[bytes, list[int]] | None = None
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_text(self, token_id: int) -> tuple[str, bool]:
        return self._texts.text(token_id)

    def bytes_of(self, token_id: int) -> bytes | None:
        return self._texts.raw_bytes(token_id)

    def _index(self) -> tuple[dict[str, list[int]], dict[bytes, list[int]]]:
        with self._lock:
            if self._by_text is None:
                by_text: dict[str, list[int]] = defaultdict(list)
                by_bytes: dict[bytes, list[int]] = defaultdict(list)
                for token_id in range(self.size):
                    raw = self._texts.raw_bytes(token_id)
                    by_bytes[raw].append(token_id)
                    by_text[raw.decode("utf-8", errors="ignore")].append(token_id)
                for token_id in self.special_ids:  # servers render control tokens as "" or as their text
                    by_text[""].append(token_id)
                self._by_text, self._by_bytes = dict(by_text), dict(by_bytes)
            return self._by_text, self._by_bytes  # type: ignore[return-value]

    def ids_for_text(self, text: str) -> list[int]:
        """Every token a server could have written as `text` (UTF-8 decoded with errors ignored)."""
        return self._index()[0].get(text, [])

    def ids_for_bytes(self, raw: bytes) -> list[int]:
        return self._index()[1].get(raw, [])

    def server_texts(self, token_id: int) -> set[str]:
        texts = {self._texts.raw_bytes(token_id).decode("utf-8", errors="ignore")}
        if token_id in self.special_ids:
            texts.add("")
        return texts

    def all_texts(self) -> list[str]:
        return [self.token_text(i)[0] for i in range(self.size)]


class ServerVocab:
    """Token ids <-> text through the server's own tokenize/detokenize endpoints (no local tokenizer).

    Supports vLLM (`/tokenize`, `/detokenize`), llama-cpp-python (`/extras/tokenize`) and llama-server
    (`/tokenize` with `content`). Token texts are fetched once per id and remembered.
    """

    searchable = False
    chat_template = False  # no template here; the server's chat endpoint is not used
    size: int | None = None
    bos_token_id: int | None = None
    special_ids: frozenset[int] = frozenset()

    _FLAVOURS: tuple[Flavour, ...] = (
        ("/tokenize", "prompt", "/detokenize", "prompt"),
        ("/extras/tokenize", "input", "/extras/detokenize", "text"),
        ("/tokenize", "content", "/detokenize", "content"),
    )

    def __init__(self, client: ServerClient, model_id: str) -> None:
        self.client = client
        self.model_id = model_id
        self.eos_token_ids: frozenset[int] = frozenset()
        self._memo: dict[int, tuple[str, bool]] = {}
        self._flavour = self._find_flavour()

    def _find_flavour(self) -> Flavour:
        """The first of the known tokenize endpoints that this server answers."""
        for flavour in self._FLAVOURS:
            try:
                tokens = self._tokenize("Hello", flavour)
            except TokvizError:
                continue
            if tokens:
                return flavour
        raise ModelLoadError(f"No tokenizer was found for '{self.model_id}': it is not a local folder, GGUF file or "
                             f"cached hub model, and the server at {self.client.base} offers no tokenize endpoint.")

    def _tokenize(self, text: str, flavour: Flavour | None = None) -> list[int]:
        path, key, _, _ = flavour or self._flavour
        body = {"model": self.model_id, key: text}
        answer = self.client.post(path, body, root=True)
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise TokvizError("unexpected tokenize answer")
        return tokens

    def encode(self, text: str) -> list[int]:
        return self._tokenize(text)

    def decode(self, ids: Sequence[int]) -> str:
        _, _, path, key = self._flavour
        try:
            answer = self.client.post(path, {"model": self.model_id, "tokens": list(ids)}, root=True)
        except ServerError:
            return "\ufffd"
        return str(answer.get(key, "")) if isinstance(answer, dict) else ""

    def token_text(self, token_id: int) -> tuple[str, bool]:
        cached = self._memo.get(token_id)
        if cached is None:
            text = self.decode([token_id])
            cached = (text, "\ufffd" in text)
            self._memo[token_id] = cached
        return cached

    def bytes_of(self, token_id: int) -> bytes | None:
        return None  # the server's endpoints give text only

    def ids_for_text(self, text: str) -> list[int]:
        if not text:
            return []
        try:
            ids = self._tokenize(text)
        except TokvizError:
            return []
        return ids if len(ids) == 1 and self.token_text(ids[0])[0] == text else []

    def ids_for_bytes(self, raw: bytes) -> list[int]:
        try:
            return self.ids_for_text(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return []

    def server_texts(self, token_id: int) -> set[str]:
        return {self.token_text(token_id)[0]}

    def all_texts(self) -> list[str]:
        return []


Vocab = HFVocab | ServerVocab  # what a RemoteModel reads token texts with


def find_tokenizer(names: Sequence[str]) -> PreTrainedTokenizerBase | None:
    """The first tokenizer found for any of `names`: on this machine, else downloaded from the hub
    (a few MB) when it is reachable. None when there is none: the server's endpoints are used."""
    names = [n for i, n in enumerate(names) if n and n not in names[:i]]
    for name in names:
        tokenizer = load_local_tokenizer(name)
        if tokenizer is not None:
            return tokenizer
    hub_ids = [n for n in names if re.fullmatch(r"[\w.\-]+/[\w.\-]+", n) and not Path(n).exists()]
    if hub_ids:
        from ..catalog import hub_reachable

        if hub_reachable():
            from transformers import AutoTokenizer

            for name in hub_ids:
                try:
                    return AutoTokenizer.from_pretrained(name)
                except Exception:  # noqa: BLE001 - gated, missing, or not a tokenizer: try the next
                    continue
    return None


def load_local_tokenizer(model_id: str) -> PreTrainedTokenizerBase | None:
    """The tokenizer for a served model id, from this machine only: a GGUF file (llama.cpp servers name
    models by their path), a local folder, or a hub id in the Hugging Face cache. None if not found."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(model_id).expanduser()
    try:
        if path.suffix.lower() == ".gguf" and path.is_file():
            from .. import bundled

            try:
                if path.resolve() == bundled.gguf_path().resolve() and bundled.is_converted():
                    return AutoTokenizer.from_pretrained(str(bundled.converted_folder()))
            except ModelLoadError:
                pass
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if path.is_dir():
            return AutoTokenizer.from_pretrained(str(path))
        if re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", model_id):
            return AutoTokenizer.from_pretrained(model_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not available locally"
        return None
    return None
