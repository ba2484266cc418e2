"""Errors that carry a one-line, user-facing message naming the file and the key or column."""


class LayershiftError(Exception):
    """Base class: the message is complete and meant to be shown as-is, without a traceback."""


class ConfigError(LayershiftError):
    """A config file is malformed or names something that cannot be used."""


class DataError(LayershiftError):
    """A dataset source cannot be read or holds no usable labelled rows."""


class ModelSourceError(LayershiftError):
    """A model source cannot be resolved (missing package, unreachable hub id offline, ...)."""


class ArtifactError(LayershiftError):
    """A workflow artifact on disk cannot be parsed (truncated or corrupted outside the workflow)."""
