"""Hostile and careless model servers (issue 11, items 1, 3 and 6): lying model lists, silent servers,
API keys that must reach only their own server, error bodies that echo secrets, passwords in URLs.

Every server here is real HTTP on 127.0.0.1 (http.server in a thread, or a bare listening socket); the
tokviz side is the real entry point in a subprocess, or the real page with NiceGUI's simulated user.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.server_process import clean_env, free_port, get_json, serve, tokviz_command
from tokviz_app.config import parse_settings
from tokviz_app.core.errors import ModelLoadError, TokvizError
from tokviz_app.engine.remote import RemoteBackend, ServerClient, ServerConfig, ServerError, scrub
from tokviz_app.engine.remote.logprobs import _parse_logprobs, _Tok

PASSWORD = "hunter2-very-secret"
KEY_A, KEY_B = "sk-alpha-0123456789", "sk-bravo-9876543210"


class FakeServer:
    """An OpenAI-compatible server in miniature: `answer(handler)` -> (status, body bytes, content type).
    Records the headers of every request."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], tuple[int, bytes, str]]) -> None:
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self) -> None:
                fake.headers.append(dict(self.headers))
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length) if length else b""
                status, payload, kind = answer(self)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                if status in (301, 302, 307, 308):
                    self.send_header("Location", kind)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _reply  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def models_answer(data: object) -> Callable:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return lambda handler: (200, body, "application/json")


def echo_headers(handler: BaseHTTPRequestHandler) -> tuple[int, bytes, str]:
    """The careless server: refuses everything and echoes the request headers in its error body."""
    return 401, json.dumps({"error": {"message": f"unauthorized; you sent {dict(handler.headers)}"}}).encode(), \
        "application/json"


LIES = {
    "int-ids": {"data": [{"id": 123}]},
    "missing-fields": {"data": [{}, {"object": "model"}, None, "x", {"id": {"nested": 1}}]},
    "huge-strings": {"data": [{"id": "m" * 200_000, "max_model_len": "x" * 10_000}]},
    "not-a-list": {"data": {"id": "a"}},
    "non-json": b"<html>this is not JSON</html>",
}


@pytest.fixture
def silent_server():
    """Accepts connections (the kernel does) and never answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    listener.close()


def _get_page(url: str, timeout: float = 60) -> tuple[float, str]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200
        return time.monotonic() - started, response.read().decode()


@pytest.mark.slow
def test_lying_silent_and_careless_servers_never_break_the_page(tiny_model_path, silent_server, tmp_path):
    """A real tokviz process with five lying servers, a silent one, one with a password that echoes
    headers, and an honest one: GET / answers fast with the local models, /healthz stays "ok" and says
    which servers are degraded, and the password appears nowhere."""
    fakes = {name: FakeServer(models_answer(lie)) for name, lie in LIES.items()}
    honest = FakeServer(models_answer({"data": [{"id": "honest-model", "max_model_len": 4096}]}))
    careless = FakeServer(echo_headers)
    with_password = careless.url.replace("http://", f"http://alice:{PASSWORD}@")
    servers = [f.url for f in fakes.values()] + [silent_server, with_password, honest.url]
    port = free_port()
    env = clean_env(TOKVIZ_PORT=str(port), TOKVIZ_MODEL=str(tiny_model_path), TOKVIZ_DEVICE="cpu",
                    TOKVIZ_SERVER=",".join(servers), HF_HOME=str(tmp_path / "hf"))
    try:
        with serve(tokviz_command(), env, tmp_path / "server.log", port) as server:
            silent_pending = any(s["state"] == "pending" and s["url"] == silent_server
                                 for s in get_json(server.url + "/healthz")["servers"])
            elapsed, page = _get_page(server.url + "/")
            # a page build takes well under a second; the old code waited for the silent server (60 s),
            # and the catalog's own deadline is 10 s: 8 s leaves room for a loaded machine
            # (the page itself is built once its websocket connects: see the User test below for its entries)
            assert elapsed < 8, f"GET / took {elapsed:.1f} s (the silent server was pending: {silent_pending})"
            for _ in range(3):  # and no later visit waits either
                assert _get_page(server.url + "/")[0] < 8

            deadline = time.monotonic() + 60  # the silent server's answer times out after 10 s
            while True:
                health = get_json(server.url + "/healthz")
                states = {s["url"]: s for s in health["servers"]}
                if all(s["state"] != "pending" for s in states.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert health["status"] == "ok"
            for fake in fakes.values():
                assert states[fake.url]["state"] == "degraded" and states[fake.url]["problem"], states[fake.url]
            assert states[silent_server]["state"] == "degraded"
            assert "did not answer" in states[silent_server]["problem"]
            assert states[honest.url] == {**states[honest.url], "state": "ok", "models": 1, "problem": None}
            assert states[careless.url]["state"] == "degraded" and "401" in states[careless.url]["problem"]
            assert set(health["degraded"]) == set(states) - {honest.url}
            assert max(len(s["problem"] or "") for s in states.values()) <= 300

            _, page = _get_page(server.url + "/")
            shown = page + json.dumps(health) + server.output()
            basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
            assert PASSWORD not in shown and basic not in shown and "alice:" not in shown
            # the careless server did receive the password (as Basic auth), and echoed it
            assert any(h.get("Authorization") == f"Basic {basic}" for h in careless.headers)
    finally:
        for fake in [*fakes.values(), honest, careless]:
            fake.close()


# ============================================================================ keys reach only their own server
def test_each_key_goes_only_to_its_own_server_and_never_follows_a_redirect():
    plain = FakeServer(models_answer({"data": [{"id": "c"}]}))
    a = FakeServer(lambda h: (307, b"", plain.url + "/models"))  # a redirect to the keyless server
    b = FakeServer(models_answer({"data": [{"id": "b"}]}))
    try:
        settings = parse_settings(["--server", a.url, "--server", b.url.replace("/v1", ""), "--server", plain.url,
                                   "--server-key", f"{a.url}={KEY_A}", "--server-key", f"127.0.0.1:{b.port}={KEY_B}"],
                                  environ={})
        catalog = RemoteBackend(settings.server_configs())
        for config in catalog.configs:  # wait for every first answer (bounded by the catalog's deadline)
            catalog._answers[config.url].arrived.wait(30)
        assert [h.get("Authorization") for h in a.headers] == [f"Bearer {KEY_A}"]
        assert [h.get("Authorization") for h in b.headers] == [f"Bearer {KEY_B}"]
        assert [h.get("Authorization") for h in plain.headers] == [None]  # not even via a's redirect
        states = {s["url"]: s["state"] for s in catalog.health()}
        assert states == {a.url: "degraded", b.url: "ok", plain.url: "ok"}
        assert KEY_A not in repr(settings) + repr(catalog.configs)
    finally:
        for fake in (a, b, plain):
            fake.close()


@pytest.mark.parametrize(("argv", "env"), [
    (["--server", "http://10.1.2.3:8000/v1", "--server-key", f"http://10.1.2.3:8000/v1={KEY_A}"], {}),
    (["--server", "gpu-box:8000"], {"TOKVIZ_SERVER_KEYS": f"gpu-box:8000/v1={KEY_A}"}),
    (["--server", "gpu-box:8000"], {"TOKVIZ_SERVER_API_KEY": KEY_A}),
    (["--server", f"http://alice:{PASSWORD}@gpu-box:8000/v1"], {}),
])
def test_a_secret_is_refused_for_plain_http_to_another_machine_at_start(argv, env, capsys):
    """Checked when the settings are read: nothing is sent anywhere, and the message holds no secret."""
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, environ=env)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "plain HTTP" in err and "--allow-insecure-server-key" in err
    assert KEY_A not in err and PASSWORD not in err and err.count("\n") == 1
    allowed = parse_settings([*argv, "--allow-insecure-server-key"], environ=env).server_configs()
    assert allowed[0].url == "http://gpu-box:8000/v1" or allowed[0].url == "http://10.1.2.3:8000/v1"
    assert PASSWORD not in allowed[0].url
    https = parse_settings(["--server", "https://gpu-box:8000", "--server-key", f"https://gpu-box:8000={KEY_A}"],
                           environ={})  # HTTPS needs no flag
    assert https.server_configs()[0].api_key == KEY_A


@pytest.mark.parametrize(("argv", "env", "needle"), [
    (["--server", "127.0.0.1:1", "--server", "127.0.0.1:2"], {"TOKVIZ_SERVER_API_KEY": KEY_A}, "every server"),
    (["--server", "127.0.0.1:1", "--server-key", f"127.0.0.1:9={KEY_A}"], {}, "not one of the --server"),
    (["--server", "127.0.0.1:1", "--server-key", KEY_A], {}, "expected URL=KEY"),
    (["--server", "http://127.0.0.1:1/v1?api_key=" + KEY_A], {}, "query string"),
])
def test_key_mistakes_are_one_line_without_the_key(argv, env, needle, capsys):
    with pytest.raises(SystemExit):
        parse_settings(argv, environ=env)
    err = capsys.readouterr().err
    assert needle in err and KEY_A not in err and err.count("\n") == 1, err


def test_loopback_servers_take_a_key_over_plain_http():
    settings = parse_settings(["--server", "localhost:8000", "--server", "[::1]:8001"],
                              environ={"TOKVIZ_SERVER_KEYS": f"localhost:8000={KEY_A},[::1]:8001={KEY_B}"})
    assert [(c.url, c.api_key) for c in settings.server_configs()] == [
        ("http://localhost:8000/v1", KEY_A), ("http://[::1]:8001/v1", KEY_B)]


# ============================================================================ what a server says is scrubbed
def test_an_error_body_echoing_the_key_never_reaches_the_message():
    server = FakeServer(echo_headers)
    try:
        client = ServerClient(ServerConfig.parse(server.url, api_key=KEY_A))
        with pytest.raises(ServerError) as refused:
            client.post("/completions", {"prompt": "x"})
        with pytest.raises(ServerError) as streamed:
            list(client.stream("/completions", {"prompt": "x", "stream": True}))
        for error in (refused.value, streamed.value):
            assert "HTTP 401" in str(error) and KEY_A not in str(error) and "***" in str(error)
            assert len(str(error)) < 800
        assert server.headers[0]["Authorization"] == f"Bearer {KEY_A}"  # it was sent, and echoed
    finally:
        server.close()


def test_the_page_never_shows_a_password_or_an_echoed_key(tmp_path):
    """The catalog entry and the load error of a careless server with a password in its URL."""
    server = FakeServer(echo_headers)
    try:
        catalog = RemoteBackend([server.url.replace("http://", f"http://alice:{PASSWORD}@")])
        (info,) = catalog.infos()
        with pytest.raises(ModelLoadError) as failed:
            catalog.load(info.key)
        basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        shown = json.dumps([info.key, info.label, info.source, info.description, info.extra, catalog.health()]) \
            + str(failed.value)
        assert "401" in shown and PASSWORD not in shown and basic not in shown and "alice" not in shown
    finally:
        server.close()


def test_scrub_removes_credentials_in_the_forms_servers_echo_them():
    text = (f'{{"authorization": "Bearer {KEY_A}", "x-api-key": "{KEY_B}"}} https://bob:pw1234@host/v1 '
            f"Basic {base64.b64encode(b'bob:pw1234').decode()} api_key={KEY_A}\x00\x1b[31m " + "x" * 1000)
    clean = scrub(text, [KEY_A])
    assert KEY_A not in clean and KEY_B not in clean and "pw1234" not in clean and "\x1b" not in clean
    assert len(clean) <= 300 and clean.endswith("…")
    assert scrub("unexpected token in the prompt") == "unexpected token in the prompt"  # plain words stay


# ============================================================================ hostile numbers
def test_lying_logprobs_are_unknown_or_a_server_error_never_a_crash():
    resolve = lambda token_id, raw, text: _Tok(None, text)  # noqa: E731
    entries = _parse_logprobs({"tokens": ["a", "b"], "token_logprobs": ["NaN", 3.5],
                               "top_logprobs": [{"a": float("nan"), "b": -1.0}, None]}, resolve)
    assert [e.logprob for e in entries] == [None, None] and entries[0].top == [(_Tok(None, "b"), -1.0)]
    for lie in ({"content": [None]}, {"content": [{"top_logprobs": [1, 2]}]}, {"tokens": 5},
                {"tokens": ["a"], "top_logprobs": [["not", "a", "dict"]]}):
        with pytest.raises(ServerError, match="logprobs"):
            _parse_logprobs(lie, resolve)


def test_a_silent_server_fails_within_bounded_time(silent_server):
    """Connect 5 s / read 30 s by default; here a 1 s read timeout, bounded on a loaded machine too."""
    client = ServerClient(ServerConfig.parse(silent_server, api_key=None, read_timeout=1.0))
    started = time.monotonic()
    with pytest.raises(ServerError, match="did not answer within 1 s"):
        client.post("/completions", {"prompt": "x"})
    with pytest.raises(ServerError, match="did not answer within 1 s|sent nothing for 1 s"):
        list(client.stream("/completions", {"prompt": "x", "stream": True}))
    assert time.monotonic() - started < 20  # two 1 s timeouts; 20 s allows a very loaded machine
    assert issubclass(ServerError, TokvizError)


# ============================================================================ the page
async def test_the_page_offers_local_models_at_once_and_remote_ones_as_they_arrive(tokviz_page, user, silent_server,
                                                                                   tiny_model_path):
    from tests.ui_helpers import wait_until
    from tokviz_app.config import Settings
    from tokviz_app.engine import ModelManager

    def slow_answer(handler):
        time.sleep(3)  # answers after the page is built (the catalog waits at most 2 s after start)
        return models_answer({"data": [{"id": "late-model"}]})(handler)

    slow = FakeServer(slow_answer)
    try:
        manager = ModelManager(device="cpu", servers=[ServerConfig.parse(u, api_key=None)
                                                      for u in (slow.url, silent_server)])
        tokviz_page(manager=manager, settings=Settings(models=[str(tiny_model_path)]))
        started = time.monotonic()
        await user.open("/")
        # the silent server would hold a waiting page for 10 s (the catalog's deadline); 8 s is generous
        assert time.monotonic() - started < 8
        select = user.find(marker="model-select").elements.pop()
        labels = lambda: list(select.options.values()) if isinstance(select.options, dict) else select.options  # noqa: E731
        assert select.value == str(tiny_model_path) and any("connecting" in str(label) for label in labels())
        await wait_until(lambda: any("late-model" in str(label) for label in labels()), timeout=30,
                         message="the slow server's model in the dropdown")
        await wait_until(lambda: any("(unreachable)" in str(label) for label in labels()), timeout=40,
                         message="the silent server marked unreachable")
        assert select.value == str(tiny_model_path)  # the user's choice is kept
    finally:
        slow.close()
