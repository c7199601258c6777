"""A tab's work kept across a reload of the same browser tab.

NiceGUI gives every browser tab an id that survives a reload (`client.tab_id`, held in sessionStorage).
`app.storage.tab` would hold the work, but in NiceGUI 3.18 its in-memory dicts are never dropped, so every
tab ever opened would stay in memory. This store is bounded instead: one entry per live tab, and a closed
tab's entry goes KEEP_CLOSED_S after it closed (a reload reconnects within seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..core.types import SamplingParams, SessionSnapshot

KEEP_CLOSED_S = 600.0
MAX_CLOSED = 200  # a flood of closed tabs must not hold their texts for ten minutes


@dataclass
class SavedTab:
    """What a reload brings back: the model, the prompt and settings, and the text with its branches."""

    model_key: str | None
    prompt: str
    settings: SamplingParams
    max_tokens: float | str | None
    snapshot: SessionSnapshot | None  # None: nothing generated yet
    mode: str = "prob"
    chat: tuple[bool, str, str] = (False, "", "")  # chat mode, system message, user message


class TabMemory:
    def __init__(self) -> None:
        self._saved: dict[str, SavedTab] = {}
        self._owner: dict[str, object] = {}  # the Tab that may write an entry: a reloaded page takes it over
        self._closed_at: dict[str, float] = {}

    def claim(self, tab_id: str, owner: object) -> SavedTab | None:
        """The entry of a reloaded tab (if any); from now on only `owner` writes it."""
        self._owner[tab_id] = owner
        self._closed_at.pop(tab_id, None)
        return self._saved.get(tab_id)

    def save(self, tab_id: str, owner: object, saved: SavedTab) -> None:
        if self._owner.get(tab_id) is owner:
            self._saved[tab_id] = saved

    def closed(self, tab_id: str, owner: object) -> None:
        """The owner's page is gone: its entry waits KEEP_CLOSED_S for a reload."""
        if self._owner.get(tab_id) is owner:
            self._owner.pop(tab_id)
            self._closed_at[tab_id] = time.monotonic()
        self._forget_old()

    def _forget_old(self) -> None:
        now = time.monotonic()
        closed = sorted(self._closed_at.items(), key=lambda item: item[1])
        for i, (tab_id, at) in enumerate(closed):
            if now - at > KEEP_CLOSED_S or i < len(closed) - MAX_CLOSED:
                self._closed_at.pop(tab_id)
                self._saved.pop(tab_id, None)

    def __len__(self) -> int:
        return len(self._saved)


MEMORY = TabMemory()  # one per process, like the model manager
