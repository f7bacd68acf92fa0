"""Errors of the processors: what costs one record (a dead letter) or stops the service."""

from __future__ import annotations

from parcours.errors import ParcoursError


class ProcessorError(ParcoursError):
    """Base of every processor error."""


class OutputTooLarge(ProcessorError):
    """An output record or a state value would exceed its topic's max.message.bytes."""


class EngineError(ProcessorError):
    """The stream engine (Quix Streams) lacks something the processor relies on."""
