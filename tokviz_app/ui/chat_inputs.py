"""Prompt or chat: the mode switch and the chat's two messages (shown where the model has a chat template)."""

from __future__ import annotations

from nicegui import ui

from .controls import GenerationControls
from .state import TabState


class ChatInputs:
    """A "Prompt | Chat" toggle above the prompt box; in chat mode the prompt box gives way to a system
    message (optional) and a user message, which the model's chat template turns into the prompt."""

    def __init__(self, state: TabState, controls: GenerationControls) -> None:
        self.state, self.controls = state, controls
        self.available = False
        with ui.row().classes("w-full items-center gap-2 tv-chat-row") as self.row:
            self.toggle = ui.toggle({False: "Prompt", True: "Chat"}, value=False, on_change=lambda _: self.render()) \
                .props("dense no-caps").mark("chat-mode")
            self.hint = ui.label("The model's chat template makes the prompt; the answer stops at the end of "
                                 "its turn.").classes("tv-muted text-caption")
        with ui.column().classes("w-full gap-1") as self.fields:
            ui.input("System message (optional)").bind_value(state, "system_message") \
                .props("outlined dense").classes("w-full").mark("system-message")
            ui.textarea("Your message").bind_value(state, "user_message") \
                .props("outlined autogrow").classes("w-full tv-user-message").mark("user-message")
        self.toggle.bind_value(state, "chat")  # both ways: an import or a reload that brings a chat back shows it
        self.render()

    def offer(self, available: bool) -> None:
        """Chat only where the model has a template; without one the tab reads its prompt."""
        self.available = available
        self.render()

    def render(self) -> None:
        chat = self.available and bool(self.state.chat)
        self.row.set_visibility(self.available)
        self.hint.set_visibility(chat)
        self.fields.set_visibility(chat)
        self.controls.prompt.set_visibility(not chat)
