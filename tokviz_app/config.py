"""Settings for one tokviz process: command-line flags, each also settable by a TOKVIZ_* variable.

Flags override the environment. Bad values (flag or variable) end the program with one line on
stderr, `tokviz: error: ...`, and exit code 2 -- never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    native: bool = False
    device: str | None = None  # None/"auto": cuda > mps > cpu
    models: list[str] = field(default_factory=list)  # extra --model entries, the first is preselected
    preselect: str | None = None  # catalog key chosen in the dropdown when a tab opens
    default_prompt: str = "The quick brown fox"
    default_max_tokens: int = 50
    max_tokens_limit: int = 1024  # --max-new-tokens: the most tokens one "Generate to End" may ask for
    # The prompt box takes at most this many characters (NiceGUI's page drops websocket messages over
    # 1 MB, so a bigger paste would never reach the server); the context window is the real token limit.
    max_prompt_chars: int = 200_000
    dtype: str | None = None  # None/"auto": bf16/fp16 on GPUs, fp32 on CPU
    allow_any_model: bool = False  # let the page load any hub id or server-side folder
    servers: list[str] = field(default_factory=list)  # OpenAI-compatible model servers (--server URL)
    server_keys: dict[str, str] = field(default_factory=dict, repr=False)  # --server-key URL=KEY
    server_api_key: str | None = field(default=None, repr=False)  # $TOKVIZ_SERVER_API_KEY: a single server only
    allow_insecure_server_key: bool = False  # send keys over plain HTTP to other machines

    def server_configs(self) -> list:
        """The servers as engine ServerConfigs, each with its own key. Raises TokvizError when a key
        would go over plain HTTP to another machine, or names no --server (messages hold no secret)."""
        from .engine.remote.servers import build_configs

        return build_configs(self.servers, self.server_keys, self.server_api_key, self.allow_insecure_server_key)

    @property
    def address(self) -> str:
        host = "localhost" if self.host in {"127.0.0.1", "0.0.0.0", "::"} else self.host
        return f"http://{host}:{self.port}"


# ----------------------------------------------------------------------------- parsing
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = {"auto": None, "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse prints the whole usage first)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _host(text: str) -> str:
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a host name or address")
    return text


def _whole_number(text: str, low: int, high: int, not_a_number: str, out_of_range: str) -> int:
    """`text` as an int in [low, high]; the messages name the value ({} is replaced by it)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_a_number.format(f"'{text}'")) from None
    if not low <= n <= high:
        raise argparse.ArgumentTypeError(out_of_range.format(n))
    return n


def _port(text: str) -> int:
    return _whole_number(text, 1, 65535, "{} is not a port number (1-65535)", "{} is not a port number (1-65535)")


def _device(text: str) -> str | None:
    device = text.strip().lower()
    if not DEVICE.match(device):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device: use auto, cpu, cuda, cuda:N or mps")
    return None if device == "auto" else device


def _dtype(text: str) -> str | None:
    key = text.strip().lower()
    if key not in DTYPES:
        raise argparse.ArgumentTypeError(f"'{text}' is not a dtype: use auto, float32, bfloat16 or float16")
    return DTYPES[key]


def _max_new_tokens(text: str) -> int:
    return _whole_number(text, 1, 1_000_000, "{} is not a whole number", "{} is out of range (1-1000000)")


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a yes/no value: use 1/0, true/false, yes/no or on/off")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _server_key(text: str) -> tuple[str, str]:
    """URL=KEY (split at the first "=": keys may end in "="). Errors never repeat the text: it is a secret."""
    url, sep, key = text.strip().partition("=")
    if not sep or not url.strip() or not key.strip():
        raise argparse.ArgumentTypeError("expected URL=KEY, e.g. https://gpu-box:8000/v1=sk-...")
    return url.strip(), key.strip()


def _server_keys(text: str) -> list[tuple[str, str]]:
    return [_server_key(part) for part in text.split(",") if part.strip()]


# option -> (environment variable, converter for the variable's text)
ENVIRONMENT = {
    "host": ("TOKVIZ_HOST", _host),
    "port": ("TOKVIZ_PORT", _port),
    "native": ("TOKVIZ_NATIVE", _flag),
    "device": ("TOKVIZ_DEVICE", _device),
    "model": ("TOKVIZ_MODEL", _names),
    "allow_any_model": ("TOKVIZ_ALLOW_ANY_MODEL", _flag),
    "max_new_tokens": ("TOKVIZ_MAX_NEW_TOKENS", _max_new_tokens),
    "dtype": ("TOKVIZ_DTYPE", _dtype),
    "server": ("TOKVIZ_SERVER", _names),
    "server_key": ("TOKVIZ_SERVER_KEYS", _server_keys),
    "allow_insecure_server_key": ("TOKVIZ_ALLOW_INSECURE_SERVER_KEY", _flag),
}
SERVER_API_KEY = "TOKVIZ_SERVER_API_KEY"  # one key for a single --server (older setups)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tokviz", description="See what a language model does, token by token.",
                epilog="Every option can also be set by an environment variable (flags win): "
                       + ", ".join(env for env, _ in ENVIRONMENT.values())
                       + " (TOKVIZ_MODEL, TOKVIZ_SERVER and TOKVIZ_SERVER_KEYS take comma-separated lists). "
                       "A single --server may take its API key from TOKVIZ_SERVER_API_KEY.")
    p.add_argument("--host", type=_host, help="address to bind (default: 127.0.0.1, this machine only; "
                                              "0.0.0.0 lets other machines connect)")
    p.add_argument("--port", type=_port, help="port (default: 8080)")
    p.add_argument("--native", action="store_const", const=True,
                   help="open the app in a desktop window (needs the 'native' extra: uv run --extra native tokviz)")
    p.add_argument("--device", type=_device, metavar="{auto,cpu,cuda,cuda:N,mps}",
                   help="where models run (default: auto = CUDA, then MPS, then CPU)")
    p.add_argument("--dtype", type=_dtype, metavar="{auto,float32,bfloat16,float16}",
                   help="weights precision (default: auto = bfloat16/float16 on GPUs, float32 on CPU)")
    p.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                   help="a model to offer (catalog key, hub id or local folder); repeatable, the first is preselected")
    p.add_argument("--allow-any-model", action="store_const", const=True,
                   help="let users type any hub id or server-side folder in the page (default: off, only the "
                        "offered models can be loaded)")
    p.add_argument("--max-new-tokens", type=_max_new_tokens, metavar="N",
                   help="the most tokens one generation may produce (default: 1024)")
    p.add_argument("--server", action="append", metavar="URL",
                   help="an OpenAI-compatible model server whose models are offered too; repeatable")
    p.add_argument("--server-key", action="append", type=_server_key, metavar="URL=KEY",
                   help="the API key of one --server (prefer TOKVIZ_SERVER_KEYS: other users can read the command "
                        "line); sent to that server only, and never over plain HTTP to another machine")
    p.add_argument("--allow-insecure-server-key", action="store_const", const=True,
                   help="allow sending a server's key (or the URL's password) over plain HTTP to another machine")
    return p


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then TOKVIZ_* variables, then defaults. Bad values exit with code 2."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    environ = os.environ if environ is None else environ
    for option, (variable, convert) in ENVIRONMENT.items():
        if getattr(args, option) is not None or variable not in environ:
            continue
        try:
            setattr(args, option, convert(environ[variable]))
        except argparse.ArgumentTypeError as error:
            parser.error(f"environment variable {variable}: {error}")
    settings = Settings()
    settings.host = args.host if args.host is not None else settings.host
    settings.port = args.port if args.port is not None else settings.port
    settings.native = bool(args.native)
    settings.device = args.device
    settings.dtype = args.dtype
    settings.models = list(args.model or [])
    settings.allow_any_model = bool(args.allow_any_model)
    if args.max_new_tokens is not None:
        settings.max_tokens_limit = args.max_new_tokens
    settings.default_max_tokens = min(settings.default_max_tokens, settings.max_tokens_limit)
    settings.servers = list(args.server or [])
    settings.server_keys = dict(args.server_key or [])
    settings.server_api_key = environ.get(SERVER_API_KEY) or None
    settings.allow_insecure_server_key = bool(args.allow_insecure_server_key)
    if settings.servers or settings.server_keys:
        from .core.errors import TokvizError

        try:
            settings.server_configs()  # a key that would leak is refused now, before anything is sent
        except TokvizError as error:
            parser.error(str(error))
    return settings


def fail(message: str) -> None:
    """Exit like a bad flag: one line on stderr, exit code 2."""
    build_parser().error(message)
