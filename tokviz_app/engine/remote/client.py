"""HTTP to an OpenAI-compatible server: JSON requests, SSE streams, readable errors."""

from __future__ import annotations

import json
import os
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import httpx

from ..errors import ContextFullError, TokvizError

TOP_N = 10  # alternatives per token, as the local engine
DEEP_N = 100  # logprobs asked for where a deeper list helps (prompt scoring, a chosen token) and the server allows
API_KEY_ENV = "TOKVIZ_SERVER_API_KEY"
PROBE_TEXT = "The capital of France is"
MODELS_TTL = 30.0  # seconds a server's model list is reused by the catalog


class ServerError(TokvizError):
    """The model server could not be reached, timed out, or rejected a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# ============================================================================ configuration and HTTP
@dataclass(frozen=True)
class ServerConfig:
    """One `--server URL`. The API key is read from $TOKVIZ_SERVER_API_KEY unless given."""

    url: str
    api_key: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 60.0  # per request, and the longest wait between two streamed tokens

    @staticmethod
    def parse(value: str | ServerConfig, **options: Any) -> ServerConfig:
        if isinstance(value, ServerConfig):
            return value
        url = value.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        parsed = urlparse(url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise TokvizError(f"'{value}' is not a server address; expected something like http://host:8000/v1.")
        if not parsed.path:
            url += "/v1"
        options.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
        return ServerConfig(url, **options)

    @property
    def netloc(self) -> str:
        return urlparse(self.url).netloc


class ServerClient:
    """Thin httpx wrapper: JSON requests, SSE streams, and errors as readable TokvizErrors."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.base = config.url.rstrip("/")
        self.root = self.base[: -len("/v1")] if self.base.endswith("/v1") else self.base
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(config.read_timeout,
                                                                          connect=config.connect_timeout))

    def close(self) -> None:
        self._http.close()

    # ---------------------------------------------------------------- requests
    def get(self, path: str) -> Any:
        return self._send("GET", self.base + path)

    def post(self, path: str, body: dict, *, root: bool = False, timeout: float | None = None) -> Any:
        return self._send("POST", (self.root if root else self.base) + path, body, timeout)

    def _send(self, method: str, url: str, body: dict | None = None, timeout: float | None = None) -> Any:
        try:
            kwargs: dict[str, Any] = {"json": body} if body is not None else {}
            if timeout is not None:
                kwargs["timeout"] = httpx.Timeout(timeout, connect=self.config.connect_timeout)
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise self._transport_error(error) from error
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            return response.json()
        except ValueError as error:
            raise ServerError(f"The model server at {self.base} sent an answer that is not JSON.") from error

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
                        response.read()
                        events.put(("error", self._status_error(response)))
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
                    events.put(("error", ServerError(f"Reading the stream from {self.base} failed: {error}")))
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
                        raise ServerError(f"The model server at {self.base} sent nothing for "
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
                    raise ServerError(f"The model server at {self.base} streamed something that is not JSON.") \
                        from error
                if isinstance(event, dict) and "error" in event and not event.get("choices"):
                    raise ServerError(f"The model server at {self.base} reported an error: "
                                      f"{_error_text(event)}")
                yield event
        finally:
            cancel.set()

    # ---------------------------------------------------------------- errors
    def _transport_error(self, error: httpx.HTTPError) -> ServerError:
        if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
            return ServerError(f"Cannot reach the model server at {self.base} ({_short(error)}). "
                               f"Is it running, and is the address right?")
        if isinstance(error, httpx.TimeoutException):
            return ServerError(f"The model server at {self.base} did not answer within "
                               f"{self.config.read_timeout:.0f} s.")
        return ServerError(f"The connection to the model server at {self.base} failed: {_short(error)}.")

    def _status_error(self, response: httpx.Response) -> ServerError:
        try:
            detail = _error_text(response.json())
        except ValueError:
            detail = response.text.strip()[:300] or response.reason_phrase
        status = response.status_code
        if status in (401, 403):
            return ServerError(f"The model server at {self.base} refused the request (HTTP {status}: {detail}). "
                               f"Set its API key in ${API_KEY_ENV}.", status)
        if re.search(r"context length|context window|maximum context|context_length|prompt is too long", detail, re.I):
            match = re.search(r"maximum context length is (\d+)", detail)
            error = ContextFullError(f"The model server says the text does not fit the model's context: {detail}")
            error.context_length = int(match.group(1)) if match else None  # type: ignore[attr-defined]
            return error  # type: ignore[return-value]
        return ServerError(f"The model server at {self.base} rejected the request (HTTP {status}): {detail}",
                           status)


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
    return text.strip()[:400]


def _short(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 160 else text[:157] + "…"


# ============================================================================ vocabularies


def list_models(client: ServerClient) -> list[dict]:
    answer = client.get("/models")
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise ServerError(f"The server at {client.base} did not list its models (GET /models).")
    return [m for m in data if isinstance(m, dict) and m.get("id")]


def remote_key(config: ServerConfig, model_id: str) -> str:
    return f"{model_id} @ {config.url}"


def remote_label(config: ServerConfig, model_id: str) -> str:
    name = Path(model_id).name if ("/" in model_id and Path(model_id).suffix) else model_id
    return f"{name} @ {config.netloc}"
