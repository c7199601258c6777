"""HTTP to an OpenAI-compatible server: JSON requests, SSE streams, readable errors."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from typing import Any, Callable, Iterator

import httpx

from ...core.errors import ContextFullError, TokvizError
from .servers import API_KEY_ENV, REQUEST_DEADLINE, ServerConfig, scrub

TOP_N = 10  # alternatives per token, as the local engine
DEEP_N = 100  # logprobs asked for where a deeper list helps (prompt scoring, a chosen token) and the server allows
PROBE_TEXT = "The capital of France is"
MAX_ANSWER_BYTES = 256 * 2**20  # a JSON answer larger than this is refused, not read into memory


class ServerError(TokvizError):
    """The model server could not be reached, timed out, or rejected a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerContextFull(ContextFullError):
    """The server refused a text longer than the model's context; `context_length` where it said."""

    def __init__(self, message: str, context_length: int | None = None) -> None:
        super().__init__(message)
        self.context_length = context_length


# ============================================================================ HTTP
class ServerClient:
    """Thin httpx wrapper: JSON requests, SSE streams, and errors as readable TokvizErrors."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.base = config.url.rstrip("/")
        self.root = self.base[: -len("/v1")] if self.base.endswith("/v1") else self.base
        # this server's own key (or the URL's user and password); redirects are not followed, so the
        # credentials never go to another host
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(headers=headers, auth=None if config.api_key else config.auth,
                                  follow_redirects=False,
                                  timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout))
        self._secrets = config.secrets()

    def close(self) -> None:
        self._http.close()

    # ---------------------------------------------------------------- requests
    def get(self, path: str, *, root: bool = False, timeout: float | None = None, max_bytes: int = MAX_ANSWER_BYTES,
            deadline: float = REQUEST_DEADLINE) -> Any:
        """The server's JSON answer (any JSON: the caller checks its shape); `root`: outside /v1."""
        return self._send("GET", (self.root if root else self.base) + path, None, timeout, max_bytes=max_bytes,
                          deadline=deadline)

    def post(self, path: str, body: dict[str, Any], *, root: bool = False, timeout: float | None = None) -> Any:
        return self._send("POST", (self.root if root else self.base) + path, body, timeout)

    def _send(self, method: str, url: str, body: dict[str, Any] | None = None, timeout: float | None = None, *,
              max_bytes: int = MAX_ANSWER_BYTES, deadline: float = REQUEST_DEADLINE) -> Any:
        """One request; the answer is read in chunks so that its size and total time stay bounded
        (a server that drips bytes never trips the read timeout)."""
        limit = httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout,
                                                                                connect=self.config.connect_timeout)
        started = time.monotonic()
        try:
            with self._http.stream(method, url, json=body, timeout=limit) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    chunks.append(chunk)
                    if size > max_bytes:
                        raise self.error(f"The model server at {self.base} sent an answer larger than "
                                         f"{max_bytes // 2**20 or 1} MB; it was not read.")
                    if time.monotonic() - started > deadline:
                        raise self.error(f"The model server at {self.base} took longer than {deadline:.0f} s "
                                         f"to answer.")
                content = b"".join(chunks)
        except httpx.HTTPError as error:
            raise self._transport_error(error) from error
        if response.status_code >= 400:
            raise self._status_error(response.status_code, content, response.reason_phrase)
        try:
            return json.loads(content)
        except ValueError as error:
            raise self.error(f"The model server at {self.base} sent an answer that is not JSON.") from error

    def error(self, message: str, status: int | None = None) -> ServerError:
        """A ServerError whose message holds none of this server's secrets."""
        return ServerError(scrub(message, self._secrets, limit=600), status)

    def stream(self, path: str, body: dict, should_stop: Callable[[], bool] | None = None,
               poll: float = 0.05) -> Iterator[dict]:
        """Server-sent events of a streaming request, as parsed JSON objects.

        The response is read in a helper thread, so `should_stop` is checked every `poll` seconds
        even while the server is silent; stopping (or leaving the loop) closes the connection, which
        is how OpenAI-compatible servers learn to cancel the generation.
        """
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()
        url = self.base + path

        def reader() -> None:
            try:
                with self._http.stream("POST", url, json=body) as response:
                    if response.status_code >= 400:
                        events.put(("error", self._status_error(response.status_code,
                                                                _head(response), response.reason_phrase)))
                        return
                    data: list[str] = []
                    for line in response.iter_lines():
                        if cancel.is_set():
                            return
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip(" "))
                        elif not line.strip() and data:
                            payload, data = "\n".join(data), []
                            if payload.strip() == "[DONE]":
                                return
                            events.put(("data", payload))
                        # comments (": ping") and other fields are ignored
                    if data and "\n".join(data).strip() != "[DONE]":
                        events.put(("data", "\n".join(data)))
            except httpx.HTTPError as error:
                if not cancel.is_set():
                    events.put(("error", self._transport_error(error)))
            except Exception as error:  # noqa: BLE001 - reported to the caller below
                if not cancel.is_set():
                    events.put(("error", self.error(f"Reading the stream from {self.base} failed: {error}")))
            finally:
                events.put(("end", None))

        thread = threading.Thread(target=reader, name="tokviz-remote-stream", daemon=True)
        thread.start()
        waited = 0.0
        try:
            while True:
                if should_stop is not None and should_stop():
                    return
                try:
                    kind, payload = events.get(timeout=poll)
                except queue.Empty:
                    waited += poll
                    if waited > self.config.read_timeout + self.config.connect_timeout:
                        raise self.error(f"The model server at {self.base} sent nothing for "
                                          f"{self.config.read_timeout:.0f} s; the generation was cancelled.") from None
                    continue
                waited = 0.0
                if kind == "end":
                    return
                if kind == "error":
                    raise payload
                try:
                    event = json.loads(payload)
                except ValueError as error:
                    raise self.error(f"The model server at {self.base} streamed something that is not JSON.") \
                        from error
                if isinstance(event, dict) and "error" in event and not event.get("choices"):
                    raise self.error(f"The model server at {self.base} reported an error: "
                                     f"{scrub(_error_text(event), self._secrets)}")
                yield event
        finally:
            cancel.set()

    # ---------------------------------------------------------------- errors
    def _transport_error(self, error: httpx.HTTPError) -> ServerError:
        detail = scrub(_short(error), self._secrets)
        if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
            return self.error(f"Cannot reach the model server at {self.base} ({detail}). "
                              f"Is it running, and is the address right?")
        if isinstance(error, httpx.TimeoutException):
            return self.error(f"The model server at {self.base} did not answer within "
                              f"{self.config.read_timeout:.0f} s.")
        return self.error(f"The connection to the model server at {self.base} failed: {detail}.")

    def _status_error(self, status: int, content: bytes, reason: str = "") -> ServerError | ServerContextFull:
        """A readable error from a refusal; the server's own words are trimmed and scrubbed."""
        try:
            detail = _error_text(json.loads(content))
        except ValueError:
            detail = content.decode("utf-8", errors="replace") or reason
        detail = scrub(detail, self._secrets)
        if status in (401, 403):
            return self.error(f"The model server at {self.base} refused the request (HTTP {status}: {detail}). "
                              f"Give it its API key with --server-key URL=KEY (or ${API_KEY_ENV} for a single "
                              f"server).", status)
        if re.search(r"context length|context window|maximum context|context_length|prompt is too long", detail, re.I):
            match = re.search(r"maximum context length is (\d+)", detail)
            return ServerContextFull(f"The model server says the text does not fit the model's context: {detail}",
                                     int(match.group(1)) if match else None)
        return self.error(f"The model server at {self.base} rejected the request (HTTP {status}): {detail}", status)


def _head(response: httpx.Response, limit: int = 65536) -> bytes:
    """The start of an error body (enough to explain it; a hostile server may send gigabytes)."""
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit]


def _error_text(data: Any) -> str:
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            error = error.get("message", error)
        if isinstance(error, list):  # FastAPI validation errors
            error = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in error)
        text = str(error)
    else:
        text = str(data)
    text = text.split("\n\n  File ")[0]  # llama-cpp-python appends a traceback
    return text.strip()  # trimmed by scrub(), after the secrets are out (a cut could leave half a key)


def _short(error: Exception) -> str:
    return str(error) or type(error).__name__
