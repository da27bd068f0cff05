"""One exception family for everything a user can get wrong.

The UI shows ``str(err)`` as is and the CLI prints it on stderr with a non-zero exit, so every
message must be a complete, human sentence that says what was expected and what was found.
"""


class CoreError(Exception):
    """Base class of every user-facing error raised by ``core``."""


class VideoError(CoreError):
    """A video could not be read, is empty/corrupt/too large, or has an invalid shape."""


class ModelError(CoreError):
    """A model file or spec is wrong: bad weights, sha256 mismatch, bad output shape, NaNs."""


class ParameterError(CoreError, ValueError):
    """A parameter is outside its documented range."""
