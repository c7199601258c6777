"""Server addresses, their secrets, and keeping those secrets off the page.

No httpx and no torch here: `config.py` checks the servers at start with these functions.

- A server's address is shown everywhere (dropdown, status line, errors, /healthz), so `ServerConfig.url`
  never holds credentials: `http://user:pass@host` is split into the address and `auth`.
- Each server has its own API key (`--server-key URL=KEY`); a key, or a URL's password, is never sent
  over plain HTTP to a host other than this machine unless `allow_insecure_key` is set.
- Whatever a server says (error bodies, exception texts) goes through `scrub` before anyone sees it.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import unquote, urlsplit

from ...core.errors import TokvizError

if TYPE_CHECKING:
    from typing_extensions import Unpack

API_KEY_ENV = "TOKVIZ_SERVER_API_KEY"
INSECURE_FLAG = "--allow-insecure-server-key"
INSECURE_ENV = "TOKVIZ_ALLOW_INSECURE_SERVER_KEY"
# Timeouts of every request: connecting, and the longest silence while reading (also between two
# streamed tokens). A non-streamed answer must also be complete within REQUEST_DEADLINE.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
REQUEST_DEADLINE = 300.0  # a 200,000-character prompt scored with 100 logprobs a token can take minutes
MESSAGE_CHARS = 300  # the most characters of a server's own words shown to the user


class ServerOptions(TypedDict, total=False):
    """`ServerConfig`'s fields besides the address, as keywords of `ServerConfig.parse`."""

    api_key: str | None
    auth: tuple[str, str] | None
    connect_timeout: float
    read_timeout: float
    allow_insecure_key: bool


@dataclass(frozen=True)
class ServerConfig:
    """One `--server URL`: the address without credentials, and the secrets kept apart (never shown)."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    auth: tuple[str, str] | None = field(default=None, repr=False)  # user and password from the URL
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    allow_insecure_key: bool = False

    def __post_init__(self) -> None:
        if "@" in urlsplit(self.url).netloc:
            raise TokvizError("A server address must not hold credentials; use ServerConfig.parse.")
        if (self.api_key or self.auth) and not self.allow_insecure_key and not secure_transport(self.url):
            what = "the API key" if self.api_key else "the user name and password"
            raise TokvizError(f"Refusing to send {what} for {self.url} over plain HTTP to another machine; use "
                              f"https://, or pass {INSECURE_FLAG} ({INSECURE_ENV}=1) on a trusted network.")

    @staticmethod
    def parse(value: str | ServerConfig, **options: Unpack[ServerOptions]) -> ServerConfig:
        """An address like `gpu-box:8000` or `https://user:pw@host/v1`. The API key defaults to
        $TOKVIZ_SERVER_API_KEY (pass api_key=None for none)."""
        if isinstance(value, ServerConfig):
            return value
        url, auth = split_url(value)
        options.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
        if auth and "auth" not in options:
            options["auth"] = auth
        return ServerConfig(url, **options)

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    def secrets(self) -> list[str]:
        """Every secret text that must never be shown, in the forms a server could echo it."""
        found = [self.api_key] if self.api_key else []
        if self.auth:
            user, password = self.auth
            pair = f"{user}:{password}"
            found += [password, pair, base64.b64encode(pair.encode()).decode()]
        return [s for s in found if s]


def split_url(value: str) -> tuple[str, tuple[str, str] | None]:
    """Normalised address (scheme, host, port, path ending in /v1 if none) and the credentials it held."""
    text = str(value).strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
        parts = None
    shown = scrub(str(value))
    if parts is None or parts.scheme not in {"http", "https"} or not host:
        raise TokvizError(f"'{shown}' is not a server address; expected something like http://host:8000/v1.")
    if parts.query or parts.fragment:
        raise TokvizError(f"'{shown}': a server address takes no query string; give its key with --server-key.")
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}{parts.path or '/v1'}", auth


def is_loopback(host: str | None) -> bool:
    """This machine, judged from the address alone (no DNS lookup)."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure_transport(url: str) -> bool:
    """HTTPS, or plain HTTP that never leaves this machine."""
    parts = urlsplit(url)
    return parts.scheme == "https" or is_loopback(parts.hostname)


def build_configs(urls: Sequence[str], keys: Mapping[str, str] | None = None, shared_key: str | None = None,
                  allow_insecure_key: bool = False) -> list[ServerConfig]:
    """The servers of the command line, each with its own key. `keys` maps an address (any spelling that
    normalises to the server's) to its key; `shared_key` ($TOKVIZ_SERVER_API_KEY) serves a single server
    only. Raises TokvizError (with nothing secret in the message) on any inconsistency."""
    parsed = [split_url(u) for u in urls]
    wanted = {url for url, _ in parsed}
    per_server: dict[str, str] = {}
    for address, key in (keys or {}).items():
        url = split_url(address)[0]
        if url not in wanted:
            raise TokvizError(f"--server-key names {url}, which is not one of the --server addresses.")
        per_server[url] = key
    if shared_key and len(wanted) > 1:
        raise TokvizError(f"${API_KEY_ENV} would go to every server; with several servers give each its own key "
                          f"with --server-key URL=KEY (or TOKVIZ_SERVER_KEYS).")
    configs, seen = [], set()
    for url, auth in parsed:
        if url in seen:
            continue
        seen.add(url)
        configs.append(ServerConfig(url, api_key=per_server.get(url) or shared_key or None, auth=auth,
                                    allow_insecure_key=allow_insecure_key))
    return configs


_SECRET_PATTERNS = [
    (re.compile(r"(?i)\b(bearer)\s+[\w\-.~+/=:]+"), r"\1 ***"),
    (re.compile(r"(?i)\b(basic)\s+[A-Za-z0-9+/]{8,}=*"), r"\1 ***"),
    (re.compile(r"(?i)([\"']?(?:proxy-)?(?:authorization|x-api-key|api[-_]?key|cookie|set-cookie|password|"
                r"secret|access[-_]?token)[\"']?\s*[:=]\s*)([\"']?)[^\"',;}\s]+"), r"\1\2***"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://)[^/@\s\"']+@"), r"\1***@"),
    (re.compile(r"\bsk-[\w\-]{8,}"), "***"),
]


def scrub(text: object, secrets: Sequence[str] = (), limit: int = MESSAGE_CHARS) -> str:
    """`text` fit to show: known secrets and anything that looks like a credential replaced by ***,
    control characters dropped, whitespace collapsed, at most `limit` characters."""
    text = str(text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:  # shorter ones would garble the message; the patterns below still apply
            text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    text = re.sub(r"\s+", " ", "".join(c if c.isprintable() or c.isspace() else " " for c in text)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
