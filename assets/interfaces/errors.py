"""Errors the interfaces raise, each saying what to do about it."""


class ArtifactStoreError(OSError):
    """The store could not be read or written (e.g. the bucket is unreachable)."""


class MissingArtifactError(LookupError):
    """An asset reads an upstream artifact that was never materialized."""


class LineageError(ValueError):
    """Inputs of an asset come from versions that do not belong together (e.g. a model scored
    on splits it was not trained on)."""
