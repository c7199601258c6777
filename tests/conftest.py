"""Shared fixtures: a tiny GPT-2 built once per test run and loaded through the real path."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def long_context_model_path(tmp_path_factory):
    """The tiny GPT-2 with room for prompts longer than two of the engine's 1,024-token prefill chunks."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2-long"), n_positions=2200, train_steps=10)


@pytest.fixture(scope="session")
def engine_manager():
    """One real ModelManager for the engine tests (CPU)."""
    from tokviz_app.engine import ModelManager

    return ModelManager(device="cpu")


@pytest.fixture(scope="session")
def tiny_model(engine_manager, tiny_model_path):
    """The tiny GPT-2 loaded through ModelManager.load(folder), the path users hit."""
    return engine_manager.load(str(tiny_model_path))


@pytest.fixture
def tokviz_page(user):  # `user` first: it resets NiceGUI's globals before we add the page
    """Register the tokviz page ('/') for this test: `app = tokviz_page(manager=..., settings=...)`.

    Returns a namespace with manager, service, settings and `controllers` (one Tab per opened tab).
    """
    from nicegui import ui

    from tests.fake_backend import FakeModelManager
    from tokviz_app.config import Settings
    from tokviz_app.service import ModelService
    from tokviz_app.ui.page import build_page

    def register(manager=None, settings=None, **fake_options):
        manager = manager if manager is not None else FakeModelManager(**fake_options)
        settings = settings or Settings()
        service = ModelService(manager)
        for name in settings.models:
            info = manager.add(name)
            settings.preselect = settings.preselect or info.key
        settings.preselect = settings.preselect or manager.default_key()
        ns = SimpleNamespace(manager=manager, service=service, settings=settings, controllers=[])

        @ui.page("/")
        def index() -> None:
            ns.controllers.append(build_page(service, settings))

        return ns

    return register


@pytest.fixture
def downloads(monkeypatch):
    """Capture the page's downloads (export buttons): a list of (bytes, filename)."""
    got: list[tuple[bytes, str]] = []
    from tokviz_app.ui.flows.files import Files

    monkeypatch.setattr(Files, "download", staticmethod(lambda content, filename, media_type: got.append(
        (content, filename))))
    return got
