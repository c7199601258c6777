"""Finding out, once per model, how to talk to its server: ids or text, how many logprobs, prompt scoring."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core.errors import ModelLoadError, TokvizError
from .client import DEEP_N, TOP_N, ServerClient, ServerError
from .logprobs import _Dist, _int_or_none, align

if TYPE_CHECKING:
    from .model import RemoteModel

PROBE_TEXT = "The capital of France is"


@dataclass
class ServerFeatures:
    """What a server does with completion requests (not the contract's `Capabilities`: those are what the
    page may offer; these are how to phrase requests and read the answers)."""

    ids_in: bool = False  # the server takes a prompt as token ids
    ids_out: bool = False  # it returns tokens as "token_id:N" (asked for while probing)
    adds_bos: bool = False  # its tokenizer starts a text with the BOS token (a text prompt leaves it out)
    echo: str | None = None  # "aligned": echo entry k scores prompt token k; "shifted": it holds the
    # distribution after token k (llama-cpp-python without a leading BOS); None: no prompt scoring
    deep: int = TOP_N  # the most logprobs the server gives per position
    served_top: int = TOP_N  # how many it actually returned when asked for TOP_N
    prompt_logprobs: bool = False  # vLLM's exact prompt ranks
    top_k_off: int = 0  # the value of top_k that means "no cut"


def props_context(client: ServerClient) -> int | None:
    """The context length llama-server reports at /props; None from other servers."""
    try:
        props = client.get("/props", root=True, timeout=5)
    except TokvizError:
        return None
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    return _int_or_none((settings.get("n_ctx") if isinstance(settings, dict) else None) or props.get("n_ctx"))


def probe(model: RemoteModel) -> list[str]:
    """A few small requests that find out how to talk to this server (about a second). Fills in
    `model.caps` as it goes (the requests are phrased by it) and returns what the page should say."""
    caps = model.caps
    ids = model.encode(PROBE_TEXT)
    caps.adds_bos = model.bos_token_id is not None and ids[:1] == [model.bos_token_id]
    caps.ids_out = True
    entries = model.parse(_first_answer(model, ids))
    if not entries or entries[0].top is None:
        raise ModelLoadError(f"The server at {model.config.url} returns no logprobs for '{model.model_id}'; tokviz "
                             f"needs them (llama-cpp-python: start it with --logits_all true).")
    caps.ids_out = any(e.token.text.startswith("token_id:") for e in entries)
    caps.served_top = len(entries[0].top)
    notices = []
    if caps.served_top < TOP_N:
        notices.append(f"The server returns {caps.served_top} alternatives per token where tokviz asks for "
                       f"{TOP_N}, so fewer alternatives are shown.")
    reference = _Dist.from_top(entries[0].top, TOP_N)
    prompt, exact = model.prompt_for(ids)
    if not exact:
        notices.append("This server takes text, and the tokenizer found here does not reproduce its own tokens "
                       "from text: the numbers may belong to a different tokenization.")
    caps.deep = TOP_N
    for deep in (DEEP_N, 20):
        try:
            model.complete(model.body(prompt, max_tokens=1, logprobs=deep, params=None))
            caps.deep = deep
            break
        except ServerError as error:
            if error.status is None:
                raise
    caps.echo = _probe_echo(model, ids, prompt, reference)
    if caps.echo is None:
        notices.append("This server does not score prompts (no echo with logprobs), so the prompt's tokens show "
                       "no probabilities.")
    elif caps.echo == "shifted":
        notices.append(f"This server scores prompts only as top-{caps.deep} lists, so a prompt token outside "
                       f"them shows no probability.")
    if not caps.ids_in:
        notices.append("This server takes text prompts only: after a chosen token it reads the text again, and "
                       "a token text that several tokens share cannot be told apart.")
    return notices


def _first_answer(model: RemoteModel, ids: list[int]) -> dict:
    """The first completion the server accepts: token ids as the prompt where it takes them, else text;
    top_k 0 as "no cut", else -1. Sets `ids_in` and `top_k_off`."""
    caps = model.caps
    errors = []
    for ids_in in (True, False):
        caps.ids_in = ids_in
        prompt, _ = model.prompt_for(ids)
        for top_k_off in (0, -1):
            caps.top_k_off = top_k_off
            try:
                return model.complete(model.body(prompt, max_tokens=1, logprobs=TOP_N, params=None))
            except ServerError as error:  # (a ServerContextFull is no ServerError: it ends the probe)
                errors.append(str(error))
                if error.status is None:
                    raise  # unreachable or timed out: no point in trying other forms
                if "top_k" not in str(error):
                    break
    raise ModelLoadError(f"The server at {model.config.url} accepts no completion request for "
                         f"'{model.model_id}': {errors[-1] if errors else 'no answer'}")


def _probe_echo(model: RemoteModel, ids: list[int], prompt: list[int] | str, reference: _Dist) -> str | None:
    """How the server's echo scores a prompt ("aligned", "shifted"), or None where it does not."""
    caps = model.caps
    body = model.body(prompt, max_tokens=1, logprobs=TOP_N, params=None, echo=True)
    if caps.ids_out:
        body["prompt_logprobs"] = TOP_N
    try:
        choice = model.complete(body)
    except ServerError as error:
        if error.status is None:
            raise
        if not caps.ids_out:
            return None
        del body["prompt_logprobs"]
        try:
            choice = model.complete(body)
        except ServerError:
            return None
    else:
        caps.prompt_logprobs = caps.ids_out and isinstance(choice.get("prompt_logprobs"), list)
    entries = model.parse(choice)
    pairs = align(entries, ids, model.vocab)
    if pairs is None or not reference.known:
        return None
    last = next((j for j, k in pairs if k == len(ids) - 1), None)
    if last is None:
        return None
    best = reference.known[0]

    def same(entry_index: int) -> bool:
        if not 0 <= entry_index < len(entries) or not entries[entry_index].top:
            return False
        dist = _Dist.from_top(entries[entry_index].top, TOP_N)
        return bool(dist.known) and dist.known[0].id == best.id and abs(dist.known[0].logprob - best.logprob) < 1e-3

    if same(last + 1):
        return "aligned"
    if same(last):
        return "shifted"
    return None
