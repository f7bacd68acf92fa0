"""Errors of the read model: its file on disk."""

from parcours.errors import ParcoursError


class ReadModelError(ParcoursError):
    """Base of read-model errors."""


class StoreError(ReadModelError):
    """The read model's file cannot be opened, or another process holds it."""
