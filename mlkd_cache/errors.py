"""Error classes a user can cause.

The library raises these and never prints or exits; the CLI turns any :class:`MlkdError` into
one line on stderr and exit code 2. Each class also inherits the matching builtin, so callers
may catch either (``except ValueError`` still works for a bad config value).
"""


class MlkdError(Exception):
    """Base class of every error whose cause is the user's input, files or environment."""


class ConfigError(MlkdError, ValueError):
    """A config file or option is unknown, of the wrong type, or impossible."""


class DataError(MlkdError, ValueError):
    """A dataset folder, annotation file or image is missing or malformed."""


class ModelError(MlkdError, ValueError):
    """A model name is unknown or a checkpoint does not fit the model."""


class MissingWeightsError(MlkdError, FileNotFoundError):
    """Pretrained weights were asked for but no readable local file was given."""


class CheckpointError(MlkdError, ValueError):
    """A checkpoint file is missing, unreadable or was written for something else."""


class CacheMismatchError(MlkdError, ValueError):
    """A target cache was built for other classes, labels, image size or transform."""


class CacheCorruptError(MlkdError, OSError):
    """A target cache file is truncated, missing or fails its checksum."""


class RunFolderError(MlkdError, ValueError):
    """A folder given as a training run has no readable metrics.jsonl or no finished epoch in it."""


class MissingDependencyError(MlkdError, ImportError):
    """An optional dependency (a package extra) that the asked-for work needs is not installed."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line.

    An error raised inside a DataLoader worker reaches the main process re-wrapped, with the
    worker's traceback in its message; the last line of that text is the original message.
    """
    text = str(exc).strip()
    if "\n" not in text:
        return text
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    head, sep, rest = last.partition(": ")
    if sep and "." in head and " " not in head:  # "mlkd_cache.errors.DataError: msg"
        return rest
    return last
