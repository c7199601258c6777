"""Page composition: one TabState and one TabController per visit, views wired to it."""

from __future__ import annotations

import math
from pathlib import Path

from nicegui import context, ui

from ..config import Settings
from ..inputs import parse_max_tokens, parse_seed
from ..service import ModelService
from ..state import TabState
from .controller import TabController
from .controls import GenerationControls, ModelPicker
from .details import DetailsPanel
from .branches import BranchPanel
from .chart import TokenChart
from ..present.scales import MODES, mode_css
from .legend import Legend
from .tokens import TokenView

CSS = Path(__file__).resolve().parents[2] / "assets" / "tokviz.css"


def add_page_assets() -> None:
    """The page's CSS and dark-mode script (a <script> only runs when it is in the first HTML)."""
    if CSS.is_file():
        ui.add_css(CSS)
    ui.add_css(mode_css())
    ui.add_body_html(DARK_RESTORE)
    ui.add_body_html(WELL_FORMED)


def build_page(service: ModelService, settings: Settings, *, assets: bool = True) -> TabController:
    """Build the whole page for one tab. Call inside a `@ui.page` function (`assets=False` when
    `add_page_assets()` ran already)."""
    if assets:
        add_page_assets()
    state = TabState(prompt=settings.default_prompt, max_tokens=min(settings.max_tokens_limit, max(50, settings.default_max_tokens)))
    catalog = service.catalog()
    keys = [info.key for info in catalog]
    state.model_key = settings.preselect if settings.preselect in keys else (keys[0] if keys else None)
    c = TabController(service, settings, state)

    with ui.header(elevated=False).classes("tv-header items-center"):
        ui.label("tokviz").classes("tv-logo")
        ui.label("see what a language model does, token by token").classes("tv-tagline")
        ui.space()
        ui.button(icon="keyboard", on_click=lambda: c.help.open()).props("flat round color=white") \
            .tooltip("Keyboard shortcuts (?)").mark("help-button")
        ui.button(icon="dark_mode").props("flat round color=white").classes("tv-dark-toggle") \
            .on("click", js_handler=DARK_TOGGLE).tooltip("Dark mode").mark("dark-toggle")
    c.help = _help_dialog()

    with ui.element("div").classes("tv-layout").mark("layout") as c.root:
        with ui.element("div").classes("tv-main"):
            c.picker = ModelPicker(catalog, state.model_key, on_select=c.select_model, on_initialize=c.initialize,
                                   allow_any=settings.allow_any_model)
            c.controls = GenerationControls(
                prompt=state.prompt, max_tokens=state.max_tokens, max_limit=settings.max_tokens_limit,
                on_next=c.generate_next, on_end=c.generate_to_end, on_stop=c.stop, on_reset=c.reset,
            )
            c.controls.prompt.props(f"maxlength={settings.max_prompt_chars}")  # a huge paste is cut, then refused
            _bind_sampling(c)
            with ui.card().classes("tv-card w-full tv-output").mark("output-card"):
                _toolbar(c)
                c.legend = Legend(c.mode)
                c.tokens = TokenView(on_select=c.select, on_choose=c.choose)
                c.perplexity = ui.label("").classes("tv-muted text-caption tv-perplexity").mark("perplexity")
            with ui.card().classes("tv-card w-full").mark("chart-card"):
                c.chart = TokenChart(on_point=lambda i: c.select_position(i))
        with ui.element("div").classes("tv-side"):
            c.details = DetailsPanel(on_search=c.search_tokens, on_choose=c.choose)
            c.branch_panel = BranchPanel(on_switch=c.switch_branch)
    ui.keyboard(on_key=c.on_key, ignore=["input", "select", "textarea"])

    model = service.loaded_model(state.model_key) if state.model_key else None
    if model is not None:
        c.select_model(state.model_key)  # already loaded by another tab: ready at once
    c.refresh()
    if any(info.extra.get("pending") for info in catalog):
        _follow_catalog(c, service)  # a model server has not answered yet: add its models when it does
    context.client.on_delete(c.dispose)
    context.client.on_delete(_forget_route_caches)
    return c


def _follow_catalog(c: TabController, service: ModelService) -> None:
    """Servers are asked in the background (the page never waits for one); swap each "connecting…"
    entry for that server's models, or "unreachable", as its answer arrives."""
    def check() -> None:
        catalog = service.catalog()
        if [(i.key, i.label) for i in catalog] != [(i.key, i.label) for i in c.picker.infos.values()]:
            c.picker.refresh_catalog(catalog)
        if not any(info.extra.get("pending") for info in catalog):
            timer.cancel()

    timer = ui.timer(0.5, check)


def _forget_route_caches() -> None:
    """Let a closed tab be freed. NiceGUI's ui.upload adds a FastAPI route per element, and FastAPI caches
    facts about every endpoint (lru_cache, 4096 entries) keyed by the endpoint function, whose closure holds
    the upload element, its handlers and so the whole tab: without this, each closed tab stayed in memory
    until 4096 newer endpoints pushed it out (found by tests/test_load.py). The caches are pure memoisation."""
    try:
        from fastapi.dependencies import models
    except ImportError:
        return
    for name in dir(models):
        cached = getattr(models, name)
        if callable(getattr(cached, "cache_clear", None)) and getattr(cached, "__module__", "") == models.__name__:
            cached.cache_clear()


def _bind_sampling(c: TabController) -> None:
    """Sampling widgets write into the tab's state; read when each step starts."""
    controls, state = c.controls, c.state
    controls.temperature.bind_value_to(state, "temperature", forward=lambda v: 1.0 if v is None else float(v))
    controls.top_k.bind_value_to(state, "top_k", forward=lambda v: int(v) if v and math.isfinite(v) else 0)
    controls.top_p.bind_value_to(state, "top_p", forward=lambda v: 1.0 if not v else float(v))
    # inf, nan and 20-digit seeds must not raise here: the flows check them and say what is wrong
    controls.seed.bind_value_to(state, "seed", forward=lambda v: _or_none(parse_seed, v))
    controls.greedy.bind_value_to(state, "greedy")
    controls.max_tokens.bind_value_to(state, "max_tokens",
                                      forward=lambda v: _or_none(parse_max_tokens, v, 1, c.settings.max_tokens_limit))


def _or_none(parse, *args):
    try:
        return parse(*args)[0]
    except ValueError:
        return None


KEYS = [("← / →", "select the previous / next token"), ("↑ / ↓", "move within the open alternatives"),
        ("Enter", "pick the highlighted alternative (or open the menu)"), ("n", "generate the next token"),
        ("g", "generate to the end"), ("Esc", "close the menu, or stop generating"), ("?", "this help")]

DARK_TOGGLE = """() => { const dark = !Quasar.Dark.isActive; Quasar.Dark.set(dark);
  try { localStorage.setItem('tokviz-dark', dark ? '1' : '0'); } catch (e) {} }"""
# Half an emoji (an unpaired UTF-16 surrogate) in a text box: the page's JSON is refused by the server's
# decoder, the message is lost and the tab would generate from the text it had before. Mend it in the
# browser, before Quasar reads the value (capture phase), and say so; the server checks again (inputs.py).
WELL_FORMED = r"""<script>
document.addEventListener('input', function (e) {
  const t = e.target;
  if (!t || typeof t.value !== 'string' || !(t.tagName === 'TEXTAREA' || t.tagName === 'INPUT')) return;
  const text = t.value;
  const fixed = text.toWellFormed ? text.toWellFormed()
    : text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
  if (fixed === text) return;
  const at = t.selectionStart;
  t.value = fixed;
  try { t.setSelectionRange(at, at); } catch (err) {}
  if (window.Quasar && Quasar.Notify) Quasar.Notify.create({type: 'warning', multiLine: true,
    message: 'The text held half a character (e.g. half an emoji); it was replaced by \uFFFD.'});
}, true);
</script>"""
DARK_RESTORE = """<script>
(function () {  // dark mode is remembered per browser (localStorage), applied once the page is mounted
  let tries = 0;
  const timer = setInterval(function () {
    tries += 1;
    if (window.Quasar && Quasar.Dark && document.querySelector('.tv-layout')) {
      clearInterval(timer);
      let dark = null;
      try { dark = localStorage.getItem('tokviz-dark'); } catch (e) {}
      if (dark === '1') Quasar.Dark.set(true);
    } else if (tries > 200) { clearInterval(timer); }
  }, 25);
})();
</script>"""


def _help_dialog() -> ui.dialog:
    with ui.dialog().mark("help") as dialog, ui.card().classes("tv-help"):
        ui.label("Keyboard shortcuts").classes("text-subtitle1")
        with ui.element("div").classes("tv-detail-grid"):
            for key, what in KEYS:
                ui.label(key).classes("tv-kbd")
                ui.label(what)
        ui.button("Close", on_click=dialog.close).props("flat no-caps")
    return dialog


def _toolbar(c: TabController) -> None:
    """Colour mode, palette, score text, export and import."""

    async def uploaded(e) -> None:
        await c.import_file(e.file)  # checks the size before reading
        upload.reset()

    with ui.row().classes("w-full items-center gap-2 tv-toolbar"):
        ui.select(MODES, value=c.mode, label="Colour by", on_change=lambda e: c.set_mode(e.value)) \
            .props("dense outlined").classes("tv-mode-select").mark("color-mode")
        ui.switch("Colour-blind palette", on_change=lambda e: c.set_palette(e.value)).mark("colorblind")
        ui.button("Score text", icon="grading", on_click=c.score_text).props("outline no-caps dense") \
            .tooltip("Colour every token of the text in the prompt box").mark("Score text", "score-text")
        ui.button("Export JSON", icon="download", on_click=c.export_json).props("flat no-caps dense") \
            .mark("export-json")
        ui.button("Export HTML", icon="html", on_click=c.export_html).props("flat no-caps dense") \
            .mark("export-html")
        upload = ui.upload(label="Import JSON", auto_upload=True, on_upload=uploaded) \
            .props("accept=.json").classes("tv-upload").mark("import")
        ui.button("Import JSON", icon="upload", on_click=lambda: upload.run_method("pickFiles")) \
            .props("flat no-caps dense").mark("import-button")
