"""The page: its assets, and one Tab (state, views, flows) per visit."""

from __future__ import annotations

from pathlib import Path

from nicegui import background_tasks, context, ui

from ..config import Settings
from ..present.scales import mode_css
from ..service import ModelService
from .memory import MEMORY
from .state import TabState
from .tab import Tab

CSS = Path(__file__).resolve().parents[2] / "assets" / "tokviz.css"


def add_page_assets() -> None:
    """The page's CSS and scripts (a <script> only runs when it is in the first HTML)."""
    if CSS.is_file():
        ui.add_css(CSS)
    ui.add_css(mode_css())
    ui.add_body_html(DARK_RESTORE)
    ui.add_body_html(CONTINUE_RESTORE)
    ui.add_body_html(WELL_FORMED)


def build_page(service: ModelService, settings: Settings, *, assets: bool = True) -> Tab:
    """Build the whole page for one tab. Call inside a `@ui.page` function (`assets=False` when
    `add_page_assets()` ran already)."""
    if assets:
        add_page_assets()
    catalog = service.catalog()
    keys = [info.key for info in catalog]
    state = TabState(prompt=settings.default_prompt,
                     max_tokens=min(settings.max_tokens_limit, max(50, settings.default_max_tokens)),
                     model_key=settings.preselect if settings.preselect in keys else (keys[0] if keys else None))
    tab = Tab(service, settings, state)
    if state.model_key and service.loaded_model(state.model_key) is not None:
        tab.models.select(state.model_key)  # already loaded by another tab: ready at once
    tab.refresh()
    tab.tab_id = context.client.tab_id  # None until the websocket connected (tests build pages without one)
    saved = MEMORY.claim(tab.tab_id, tab) if tab.tab_id else None
    if saved is not None:  # this browser tab was reloaded: bring its work back
        background_tasks.create(tab.files.restore_saved(saved), name="tokviz restore after reload")
    if any(info.extra.get("pending") for info in catalog):
        _follow_catalog(tab, service)  # a model server has not answered yet: add its models when it does
    context.client.on_delete(tab.dispose)
    context.client.on_delete(_forget_route_caches)
    return tab


def _follow_catalog(tab: Tab, service: ModelService) -> None:
    """Servers are asked in the background (the page never waits for one); swap each "connecting…"
    entry for that server's models, or "unreachable", as its answer arrives."""
    def check() -> None:
        catalog = service.catalog()
        if [(i.key, i.label) for i in catalog] != [(i.key, i.label) for i in tab.views.picker.infos.values()]:
            tab.views.picker.refresh_catalog(catalog)
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
CONTINUE_RESTORE = """<script>
(function () {  // "continue after a pick" is remembered per browser: switch it off once the page is mounted
  let stored = null;
  try { stored = localStorage.getItem('tokviz-continue'); } catch (e) {}
  if (stored !== '0') return;
  let tries = 0;
  const timer = setInterval(function () {
    tries += 1;
    const toggle = document.querySelector('.tv-continue');
    if (toggle) {
      clearInterval(timer);
      if (toggle.getAttribute('aria-checked') === 'true') toggle.click();
    } else if (tries > 200) { clearInterval(timer); }
  }, 25);
})();
</script>"""
