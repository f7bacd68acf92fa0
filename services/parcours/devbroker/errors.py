"""Errors of the embedded development broker."""

from parcours.errors import ParcoursError


class BrokerError(ParcoursError):
    """The embedded broker cannot be fetched, started, reached or stopped."""


class ToolMissingError(BrokerError):
    """Java or Maven is not installed."""
