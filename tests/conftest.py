"""Shared fixtures: a tiny GPT-2 built once per test run and loaded through the real path."""

from __future__ import annotations

import pytest

from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def engine_manager():
    from tokviz_app.engine import ModelManager

    return ModelManager(device="cpu")


@pytest.fixture(scope="session")
def tiny_model(engine_manager, tiny_model_path):
    return engine_manager.load(str(tiny_model_path))
