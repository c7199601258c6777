"""The tokviz engine: models, sessions and exact per-token statistics. Never imports NiceGUI.

`ModelManager` is imported lazily so that `tokviz_app.core.types` stays torch-free; so are the remote
backend's classes (`RemoteModel`, `RemoteSession`, `ServerConfig`, `ServerError`), which need no torch.
"""

from ..core.errors import (CancelledWork, ContextFullError, ImportFormatError, ModelLoadError, ModelNotFoundError,
                     OfflineError, PositionError, PromptTooLongError, TokvizError)
from ..core.types import Alternative, Branch, ModelInfo, SamplingParams, TokenStep

__all__ = ["Alternative", "Branch", "CancelledWork", "ContextFullError", "ImportFormatError", "GenerationSession", "LoadedModel", "ModelInfo", "ModelLoadError",
           "ModelManager", "ModelNotFoundError", "OfflineError", "PositionError", "PromptTooLongError",
           "SamplingParams", "TokenStep", "TokvizError",
           # remote backend (OpenAI-compatible servers)
           "RemoteBackend", "RemoteModel", "RemoteSession", "ServerConfig", "ServerError"]


def __getattr__(name: str):
    if name in {"ModelManager", "LoadedModel"}:
        from . import manager

        return getattr(manager, name)
    if name in {"RemoteBackend", "RemoteModel", "RemoteSession", "ServerConfig", "ServerError"}:
        from . import remote

        return getattr(remote, name)
    if name == "GenerationSession":
        from .session import GenerationSession

        return GenerationSession
    raise AttributeError(name)
