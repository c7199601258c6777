"""Settings for one tokviz process (issue 5 adds environment variables and more flags)."""

from __future__ import annotations

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
    max_tokens_limit: int = 4096

    @property
    def address(self) -> str:
        host = "localhost" if self.host in {"127.0.0.1", "0.0.0.0", "::"} else self.host
        return f"http://{host}:{self.port}"
