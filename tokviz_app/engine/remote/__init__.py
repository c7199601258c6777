"""A second engine backend: models served by an OpenAI-compatible server that returns logprobs.

vLLM (`vllm serve MODEL`), llama.cpp's `llama-server`, llama-cpp-python's server, or anything else
that speaks `POST /v1/completions` with `logprobs`. `RemoteModel` and `RemoteSession` implement the
contract's `Model` and `Session` (core/contract.py), as the local engine does, so the page drives both alike.

What the server tells us, and what it cannot:

- Token ids. Where the server takes a prompt as a list of token ids (vLLM, llama-server), the session
  sends ids, so a continuation starts exactly after the chosen token; with vLLM, the returned tokens come
  back as ids too (`return_tokens_as_token_ids`). A server that takes text only (llama-cpp-python) gets the
  decoded text and returns token *strings*, which are mapped back to ids with the model's tokenizer; a
  string that several tokens share (a token that is only part of a UTF-8 character, a control token) is
  dropped from the alternatives, never guessed. `RemoteSession.warnings` says when the text does not
  re-tokenize to the same ids.
- Numbers. `prob`/`logprob` of each generated token are exact. `rank` is its place in the server's top-k
  where the whole top-k is known, else unknown (None). `entropy` needs the full distribution: always None.
  `sampled_prob` is computed where the server's top-k determines the sampling distribution exactly
  (plain sampling, greedy, a top-k cut within the known tokens, a nucleus reached within them), else None.
- Prompt scoring uses `echo` with `logprobs` where the server supports it (probed once per model).

Modules: `servers` (addresses and their secrets), `client` (HTTP), `listing` (GET /models), `vocab` (token
ids <-> text), `logprobs` (reading answers), `probe` (what a server does, found once per model), `model`,
`session`, `scoring` (prompt and single-token scores), `steps` (answers as TokenSteps), `backend` (the catalog).

No torch here: httpx and the tokenizer only.
"""


from .backend import RemoteBackend
from .client import ServerClient, ServerError
from .listing import list_models, remote_key, remote_label
from .logprobs import _Dist, _Tok  # noqa: F401  (used by the tests)
from .model import RemoteModel
from .servers import API_KEY_ENV, ServerConfig, build_configs, scrub
from .session import RemoteSession

__all__ = ["API_KEY_ENV", "RemoteBackend", "RemoteModel", "RemoteSession", "ServerClient", "ServerConfig",
           "ServerError", "build_configs", "list_models", "remote_key", "remote_label", "scrub"]
