"""Errors with messages meant for the person using the page."""


class TokvizError(Exception):
    """Base class: `str(error)` is a complete sentence for the user."""


class ModelNotFoundError(TokvizError):
    pass


class OfflineError(TokvizError):
    pass


class ModelLoadError(TokvizError):
    pass


class PromptTooLongError(TokvizError):
    pass


class ContextFullError(TokvizError):
    """The session reached the model's context window; nothing more can be generated."""


class PositionError(TokvizError):
    pass


class CancelledWork(TokvizError):
    """The caller stopped waiting (its tab closed): work was abandoned between chunks."""


class ImportFormatError(TokvizError):
    """An imported session file is not a valid tokviz export (or does not fit the model)."""
