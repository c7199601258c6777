"""The views of one tab, composed into the page's layout; each renders from the tab's state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nicegui import ui

from ..present.scales import MODES
from ..present.text import model_line
from .branches import BranchPanel, split_positions
from .chart import TokenChart
from .chat_inputs import ChatInputs
from .compare_panel import ComparePanel
from .controls import GenerationControls, ModelPicker
from .details import DetailsPanel
from .legend import Legend
from .tokens import TokenView
from .what_if import WhatIfPanel

if TYPE_CHECKING:
    from .tab import Tab

KEYS = [("← / →", "select the previous / next token"), ("↑ / ↓", "move within the open alternatives"),
        ("Enter", "pick the highlighted alternative (or open the menu)"), ("n", "generate the next token"),
        ("g", "generate to the end"), ("Esc", "close the menu, or stop generating"), ("?", "this help")]


class TabViews:
    """Header, model picker, prompt and settings, the token text with its legend, the chart, the details
    and branch panels. Built inside the page function, wired to the tab's flows."""

    def __init__(self, tab: Tab) -> None:
        state, settings = tab.state, tab.settings
        with ui.header(elevated=False).classes("tv-header items-center"):
            ui.label("tokviz").classes("tv-logo")
            ui.label("see what a language model does, token by token").classes("tv-tagline")
            ui.space()
            ui.button(icon="keyboard", on_click=lambda: self.help.open()).props("flat round color=white") \
                .tooltip("Keyboard shortcuts (?)").mark("help-button")
            ui.button(icon="dark_mode").props("flat round color=white").classes("tv-dark-toggle") \
                .on("click", js_handler=DARK_TOGGLE).tooltip("Dark mode").mark("dark-toggle")
        self.help = _help_dialog()
        with ui.element("div").classes("tv-layout").mark("layout") as self.root:
            with ui.element("div").classes("tv-main"):
                self.picker = ModelPicker(tab.service.catalog(), state.model_key, on_select=tab.models.select,
                                          on_initialize=tab.models.initialize, allow_any=settings.allow_any_model)
                self.controls = GenerationControls(
                    max_limit=settings.max_tokens_limit, on_next=tab.generation.next, on_end=tab.generation.to_end,
                    on_stop=tab.generation.stop, on_reset=tab.generation.reset)
                self.controls.bind(state)
                self.chat = ChatInputs(state, self.controls)
                self.chat.row.move(self.controls.prompt.parent_slot.parent, target_index=0)  # above the prompt
                self.chat.fields.move(self.controls.prompt.parent_slot.parent, target_index=2)
                self.controls.prompt.props(f"maxlength={settings.max_prompt_chars}")  # a huge paste is cut, then refused
                with ui.card().classes("tv-card w-full tv-output").mark("output-card"):
                    self.mode_select = _toolbar(tab)
                    # which model made the tokens below, always in sight (models.py keeps it current)
                    self.active_model = ui.label("").classes("tv-muted text-caption tv-active-model") \
                        .mark("active-model")
                    self.legend = Legend(state.mode)
                    self.tokens = TokenView(state, on_select=tab.explore.select, on_choose=tab.branching.choose)
                    self.perplexity = ui.label("").classes("tv-muted text-caption tv-perplexity").mark("perplexity")
                    self.what_if = WhatIfPanel(state, on_change=tab.what_if.changed, on_copy=tab.what_if.copy_settings)
                self.compare = ComparePanel(tab.service.catalog(), state.model_key, on_compare=tab.compare.run,
                                            on_clear=tab.compare.clear)
                self.compare.on_open = lambda: self.compare.set_catalog(tab.service.catalog(), state.model_key)
                with ui.card().classes("tv-card w-full").mark("chart-card"):
                    self.chart = TokenChart(state, on_point=tab.explore.select_position)
            with ui.element("div").classes("tv-side"):
                self.details = DetailsPanel(on_search=tab.explore.search_tokens, on_choose=tab.branching.choose,
                                            on_layers=tab.explore.show_layers,
                                            on_compare=tab.compare.show_details)
                self.branches = BranchPanel(on_switch=tab.branching.switch)
        self.state = state
        self.show_model()
        ui.keyboard(on_key=tab.keyboard.on_key, ignore=["input", "select", "textarea"])

    def refresh(self) -> None:
        """Buttons enabled as the state allows."""
        state = self.state
        self.chat.offer(state.model is not None and state.model.capabilities.chat_template)
        self.picker.button.set_enabled(not state.loading)
        self.compare.set_enabled(not state.loading and not state.busy)
        self.controls.set_running(ready=state.model is not None and not state.loading,
                                  busy=state.busy, generating=state.generating)

    def clear(self) -> None:
        """Nothing shown: no chips, details, chart points, branches or perplexity."""
        self.tokens.clear_all()
        self.details.clear()
        self.chart.render_all()
        self.show_branches()
        self.perplexity.set_text("")
        self.show_model()

    def show_model(self) -> None:
        """Name the model behind the shown tokens: a read-only import names its own (not loaded) model."""
        model, imported = self.state.model, self.state.imported
        own = (imported.model.get("label") or imported.model.get("key") or "an unknown model") \
            if imported is not None else None
        self.active_model.set_text(model_line(model.label if model else None, model.device if model else None, own))

    def show_text(self) -> None:
        """The prompt's chips and the generated ones, from the state (a new session, a branch, an import)."""
        self.tokens.show_prompt(self.state.prompt_tokens)
        self.tokens.render_all()
        self.chart.render_all()

    def show_branches(self) -> None:
        state = self.state
        self.branches.show(state.branches, state.active_branch)
        active = state.active_branch
        self.tokens.mark_splits(split_positions(state.branches, active) if active is not None else set())


def _help_dialog() -> ui.dialog:
    with ui.dialog().mark("help") as dialog, ui.card().classes("tv-help"):
        ui.label("Keyboard shortcuts").classes("text-subtitle1")
        with ui.element("div").classes("tv-detail-grid"):
            for key, what in KEYS:
                ui.label(key).classes("tv-kbd")
                ui.label(what)
        ui.button("Close", on_click=dialog.close).props("flat no-caps")
    return dialog


def _toolbar(tab: Tab) -> ui.select:
    """Colour mode (the select is returned: a comparison switches it to Δ), palette, score text, export, import."""

    async def uploaded(e) -> None:
        await tab.files.import_file(e.file)  # checks the size before reading
        upload.reset()

    with ui.row().classes("w-full items-center gap-2 tv-toolbar"):
        mode = ui.select(MODES, value=tab.state.mode, label="Colour by",
                         on_change=lambda e: tab.explore.set_mode(e.value)) \
            .props("dense outlined").classes("tv-mode-select").mark("color-mode")
        ui.switch("Colour-blind palette", on_change=lambda e: tab.explore.set_palette(e.value)).mark("colorblind")
        ui.switch("Continue after a pick").bind_value(tab.state, "continue_after_pick") \
            .on("update:model-value", js_handler=REMEMBER_CONTINUE).classes("tv-continue") \
            .tooltip("After you pick an alternative, new text follows it (remembered in this browser)") \
            .mark("continue-after-pick")
        ui.button("Score text", icon="grading", on_click=tab.explore.score_text).props("outline no-caps dense") \
            .tooltip("Colour every token of the text in the prompt box").mark("Score text", "score-text")
        ui.button("Export JSON", icon="download", on_click=tab.files.export_json).props("flat no-caps dense") \
            .mark("export-json")
        ui.button("Export HTML", icon="html", on_click=tab.files.export_html).props("flat no-caps dense") \
            .mark("export-html")
        upload = ui.upload(label="Import JSON", auto_upload=True, on_upload=uploaded) \
            .props("accept=.json").classes("tv-upload").mark("import")
        ui.button("Import JSON", icon="upload", on_click=lambda: upload.run_method("pickFiles")) \
            .props("flat no-caps dense").mark("import-button")
    return mode


REMEMBER_CONTINUE = """(value) => { try { localStorage.setItem('tokviz-continue', value ? '1' : '0'); } catch (e) {} }"""
DARK_TOGGLE = """() => { const dark = !Quasar.Dark.isActive; Quasar.Dark.set(dark);
  try { localStorage.setItem('tokviz-dark', dark ? '1' : '0'); } catch (e) {} }"""
