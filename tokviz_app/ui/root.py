"""Page composition: one TabState and one TabController per visit, views wired to it."""

from __future__ import annotations

from pathlib import Path

from nicegui import context, ui

from ..config import Settings
from ..service import ModelService
from ..state import TabState
from .controller import TabController
from .controls import GenerationControls, ModelPicker
from .details import DetailsPanel
from .legend import build_legend
from .tokens import TokenView

CSS = Path(__file__).resolve().parents[2] / "assets" / "tokviz.css"


def build_page(service: ModelService, settings: Settings) -> TabController:
    """Build the whole page for one tab. Call inside a `@ui.page` function."""
    if CSS.is_file():
        ui.add_css(CSS)
    state = TabState(prompt=settings.default_prompt, max_tokens=max(50, settings.default_max_tokens))
    catalog = service.catalog()
    keys = [info.key for info in catalog]
    state.model_key = settings.preselect if settings.preselect in keys else (keys[0] if keys else None)
    c = TabController(service, settings, state)

    with ui.header(elevated=False).classes("tv-header items-center"):
        ui.label("tokviz").classes("tv-logo")
        ui.label("see what a language model does, token by token").classes("tv-tagline")

    with ui.element("div").classes("tv-layout").mark("layout") as c.root:
        with ui.element("div").classes("tv-main"):
            c.picker = ModelPicker(catalog, state.model_key, on_select=c.select_model, on_initialize=c.initialize)
            c.controls = GenerationControls(
                prompt=state.prompt, max_tokens=state.max_tokens, max_limit=settings.max_tokens_limit,
                on_next=c.generate_next, on_end=c.generate_to_end, on_stop=c.stop, on_reset=c.reset,
            )
            _bind_sampling(c)
            with ui.card().classes("tv-card w-full tv-output").mark("output-card"):
                build_legend()
                c.tokens = TokenView(on_select=c.select, on_choose=c.choose)
        with ui.element("div").classes("tv-side"):
            c.details = DetailsPanel()

    model = service.loaded_model(state.model_key) if state.model_key else None
    if model is not None:
        c.select_model(state.model_key)  # already loaded by another tab: ready at once
    c.refresh()
    context.client.on_delete(c.dispose)
    return c


def _bind_sampling(c: TabController) -> None:
    """Sampling widgets write into the tab's state; read when each step starts."""
    controls, state = c.controls, c.state
    controls.temperature.bind_value_to(state, "temperature", forward=lambda v: 1.0 if v is None else float(v))
    controls.top_k.bind_value_to(state, "top_k", forward=lambda v: int(v or 0))
    controls.top_p.bind_value_to(state, "top_p", forward=lambda v: 1.0 if not v else float(v))
    controls.seed.bind_value_to(state, "seed", forward=lambda v: None if v is None else int(v))
    controls.greedy.bind_value_to(state, "greedy")
    controls.max_tokens.bind_value_to(state, "max_tokens", forward=lambda v: int(v or 1))
