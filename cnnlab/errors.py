"""User-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class CnnlabError(Exception):
    """An error caused by the user's input (a bad option, file or name), explained in one line."""

    exit_code = 2


class GeometryError(CnnlabError, ValueError):
    """A layer's output size (W - F + 2P)/S + 1 falls below 1 or is otherwise impossible for the input."""


class DataError(CnnlabError):
    """A dataset file or folder is missing, corrupt or inconsistent."""


class ConfigError(CnnlabError, ValueError):
    """An option or a config-file value is invalid."""


class CnnlabWarning(UserWarning):
    """A note for the user (a conversion cnnlab made, a setting that does not apply); the CLI prints it as
    one line "cnnlab COMMAND: note: ...", the library only emits it."""


class ResourceError(ConfigError):
    """An input that would need more memory (or disk) than the machine has, refused before allocating; the
    message says how much it would need."""
