"""Exceptions with messages meant for people, not stack traces.

Every error simx raises on purpose derives from :class:`SimxError`, so the CLI and the dashboard can show its
message as is and keep tracebacks for real bugs.
"""


class SimxError(Exception):
    """Base class of every error simx reports to a user."""


class UsageError(SimxError):
    """The command line or call was used wrongly (an unknown method name, options that exclude each other): the
    CLI exits with status 2, as argparse does for its own usage errors; every other :class:`SimxError` is a runtime
    error (missing index, bad data) and exits with 1."""


class ImageLoadError(SimxError):
    """An image file could not be decoded safely (missing, truncated, not an image, too large)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class GalleryError(SimxError):
    """A gallery source (folder or manifest) is unusable as a whole."""


class ModelSpecError(SimxError):
    """A model spec string cannot be parsed or its model cannot be built."""


class WeightsError(SimxError):
    """A checkpoint does not fit its architecture (missing/unexpected keys, wrong shapes)."""


class SimxIndexError(SimxError):
    """An index folder is missing, incomplete or of an unknown format version."""


class ModelMismatchError(SimxError):
    """An index was opened with a model that differs from the one that built it."""


class ExplainError(SimxError):
    """An explanation request is invalid (empty neighbours, wrong sizes, unsupported model)."""
