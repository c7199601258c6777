"""Model picker, prompt, generation buttons and sampling settings (views only, no logic)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..core.types import MAX_TOP_N, ModelInfo
from .state import TabState

STATUS_TEXT = {
    "cached": "cached",
    "bundled": "bundled, works offline",
    "download": "needs a download",
    "local folder": "local folder",
    "loaded": "loaded",
}


def option_label(info: ModelInfo) -> str:
    """"GPT-2 — cached", "SmolLM2-135M (bundled) — works offline"."""
    if not info.status:
        return info.label
    status = STATUS_TEXT.get(info.status, info.status)
    if info.status == "bundled" and "bundled" in info.label.lower():
        status = "works offline"
    return f"{info.label} — {status}"


class ModelPicker:
    def __init__(self, catalog: list[ModelInfo], selected: str | None, *,
                 on_select: Callable[[str], Any], on_initialize: Callable[[], Any], allow_any: bool = False) -> None:
        self.infos = {info.key: info for info in catalog}
        if selected is not None and selected not in self.infos:
            selected = None
        if selected is None and self.infos:
            selected = next(iter(self.infos))
        with ui.card().classes("tv-card w-full").mark("model-card"):
            with ui.row().classes("w-full items-end gap-2 tv-model-row"):
                self.select = ui.select(
                    {key: option_label(info) for key, info in self.infos.items()}, value=selected, label="Model",
                    on_change=lambda e: on_select(e.value),
                    # --allow-any-model: type a hub id or a folder on the server, then Enter
                    new_value_mode="add-unique" if allow_any else None,
                ).classes("tv-model-select").mark("model-select")
                if allow_any:
                    self.select.props('hint="or type a hub id or a folder on the server, then Enter"')
                self.button = ui.button("Initialize Model", on_click=on_initialize) \
                    .props("no-caps").mark("Initialize Model", "init-button")
            self.description = ui.label("").classes("tv-muted text-caption").mark("model-description")
            self.progress = ui.linear_progress(value=0, show_value=False).classes("tv-progress") \
                .mark("load-progress")
            self.progress.set_visibility(False)
            self.status = ui.label("No model loaded yet.").classes("tv-status").mark("model-status")
            self.notes = ui.column().classes("gap-0").mark("model-notes")  # what a server's numbers lack
        self.describe(selected)

    def describe(self, key: str | None) -> None:
        info = self.infos.get(key) if key else None
        if info is None:
            self.description.set_text("")
            return
        where = STATUS_TEXT.get(info.status, info.status)
        self.description.set_text(f"{info.description} · {where}" if info.description else where)

    def refresh_catalog(self, catalog: list[ModelInfo]) -> None:
        self.infos = {info.key: info for info in catalog}
        self.select.set_options({key: option_label(info) for key, info in self.infos.items()},
                                value=self.select.value if self.select.value in self.infos else None)
        self.describe(self.select.value)

    def show_progress(self, fraction: float | None, message: str) -> None:
        self.progress.set_visibility(True)
        self.progress.props(remove="indeterminate") if fraction is not None else self.progress.props("indeterminate")
        if fraction is not None:
            fraction = max(0.0, min(1.0, fraction))
            self.progress.set_value(fraction)
            if message.startswith("Downloading:"):  # the hub client's byte counts: show the percentage too
                message = f"{message} ({fraction:.0%})"
        self.set_status(message)

    def hide_progress(self) -> None:
        self.progress.set_visibility(False)

    def set_notes(self, notes: list[str]) -> None:
        self.notes.clear()
        with self.notes:
            for note in notes:
                ui.label(note).classes("tv-muted text-caption").mark("model-note")

    def set_status(self, text: str, *, error: bool = False) -> None:
        self.status.set_text(text)
        self.status.classes(replace="tv-status tv-error" if error else "tv-status")


class NumberBox(ui.number):
    """ui.number that survives inf and nan (typed as 1e999, or sent by a crafted event): NiceGUI's own
    conversion raises on them, a traceback and no message. They are kept as text ("nan", "inf": equal to
    themselves, so a two-way binding settles, where nan != nan would bounce forever), and the flows that
    read the value say what is wrong."""

    def _event_args_to_value(self, e: Any) -> float | str | None:
        try:
            value = super()._event_args_to_value(e)
        except ValueError:  # text that is no number
            return "nan"
        return str(value) if isinstance(value, float) and not math.isfinite(value) else value

    def _value_to_model_value(self, value: Any) -> Any:
        if isinstance(value, str) or (isinstance(value, float) and not math.isfinite(value)):
            return str(value)
        if value is not None and self.format is None:  # NiceGUI compares with the old value via int(): no
            return str(int(value)) if float(value) == int(value) else str(value)
        return super()._value_to_model_value(value)


class GenerationControls:
    """The prompt box, the buttons and the settings; their values live in the tab's state (`bind`)."""

    def __init__(self, *, max_limit: int, on_next: Callable[[], Any],
                 on_end: Callable[[], Any], on_stop: Callable[[], Any], on_reset: Callable[[], Any]) -> None:
        with ui.card().classes("tv-card w-full").mark("prompt-card"):
            self.prompt = ui.textarea("Prompt").props("autogrow outlined").classes("w-full tv-prompt-box") \
                .mark("prompt")
            with ui.row().classes("w-full items-center gap-2 tv-buttons"):
                self.next = ui.button("Generate Next Token", on_click=on_next) \
                    .props("no-caps").mark("Generate Next Token", "generate-next")
                self.end = ui.button("Generate to End", on_click=on_end) \
                    .props("no-caps").mark("Generate to End", "generate-end")
                self.stop = ui.button("Stop", on_click=on_stop, color="negative") \
                    .props("no-caps").mark("Stop", "stop")
                self.reset = ui.button("Reset", on_click=on_reset).props("outline no-caps") \
                    .mark("Reset", "reset")
                self.max_tokens = NumberBox("Max new tokens", min=1, max=max_limit, step=1,
                                            precision=0).classes("tv-max-tokens").mark("max-tokens")
            with ui.expansion("Sampling", icon="tune").classes("w-full tv-sampling").mark("sampling"):
                with ui.row().classes("items-center gap-3"):
                    self.temperature = NumberBox("Temperature", value=1.0, min=0, max=5, step=0.1,
                                                 format="%.2f").classes("tv-num").mark("temperature")
                    self.top_k = NumberBox("Top-k (0 = off)", value=0, min=0, step=1, precision=0) \
                        .classes("tv-num tv-top-k").mark("top-k")
                    self.top_p = NumberBox("Top-p", value=1.0, min=0.01, max=1.0, step=0.05, format="%.2f") \
                        .classes("tv-num tv-top-p").mark("top-p")
                    self.seed = NumberBox("Seed", value=None, min=0, step=1, precision=0) \
                        .props('placeholder="random"').classes("tv-num tv-seed").mark("seed")
                    self.seed.tooltip("Leave blank for a random seed")
                    self.greedy = ui.switch("Greedy").mark("greedy")
                with ui.row().classes("items-center gap-3"):  # issue 14: applied in this order after the penalty
                    self.min_p = NumberBox("Min-p (0 = off)", value=0.0, min=0, max=1, step=0.01, format="%.2f") \
                        .classes("tv-num").mark("min-p")
                    self.typical_p = NumberBox("Typical-p", value=1.0, min=0.01, max=1.0, step=0.05, format="%.2f") \
                        .classes("tv-num").mark("typical-p")
                    self.repetition_penalty = NumberBox("Repetition penalty", value=1.0, min=0.05, step=0.05,
                                                        format="%.2f").classes("tv-num").mark("repetition-penalty")
                    self.top_n = ui.select({10: "10", MAX_TOP_N: str(MAX_TOP_N)}, value=10, label="Alternatives") \
                        .classes("tv-num").mark("top-n")
                ui.label("Applied in this order: repetition penalty, temperature, top-k, top-p, min-p, typical-p "
                         "(as transformers does). The default colours show the model's own probability "
                         "(temperature 1); colour by “Probability after sampling” for these settings' numbers, which "
                         "the alternatives and the details show beside the raw ones. A new seed applies after Reset."
                         ).classes("tv-muted text-caption")
            self.status = ui.label("").classes("tv-muted text-caption tv-gen-status").mark("gen-status")

    def set_running(self, *, ready: bool, busy: bool, generating: bool) -> None:
        self.next.set_enabled(ready and not busy)
        self.end.set_enabled(ready and not busy)
        self.stop.set_enabled(generating)
        self.reset.set_enabled(ready or busy)

    def bind(self, state: TabState) -> None:
        """The prompt and every setting, bound both ways to the tab's state (the flows read the state)."""
        self.prompt.bind_value(state, "prompt")
        for name in ("max_tokens", "temperature", "top_k", "top_p", "seed", "greedy", "min_p", "typical_p",
                     "repetition_penalty", "top_n"):
            getattr(self, name).bind_value(state, name)
