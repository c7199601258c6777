"""The tokviz engine: models, sessions and exact per-token statistics. Never imports NiceGUI.

`ModelManager` is imported lazily so that `tokviz_app.engine.types` stays torch-free.
"""

from .errors import (ContextFullError, ModelLoadError, ModelNotFoundError, OfflineError, PositionError,
                     PromptTooLongError, TokvizError)
from .types import Alternative, Branch, ModelInfo, SamplingParams, TokenStep

__all__ = ["Alternative", "Branch", "ContextFullError", "GenerationSession", "LoadedModel", "ModelInfo", "ModelLoadError",
           "ModelManager", "ModelNotFoundError", "OfflineError", "PositionError", "PromptTooLongError",
           "SamplingParams", "TokenStep", "TokvizError"]


def __getattr__(name: str):
    if name in {"ModelManager", "LoadedModel"}:
        from . import manager

        return getattr(manager, name)
    if name == "GenerationSession":
        from .session import GenerationSession

        return GenerationSession
    raise AttributeError(name)
