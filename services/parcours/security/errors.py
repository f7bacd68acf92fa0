"""Errors of the security area: credentials and principals."""

from parcours.errors import ParcoursError


class SecurityError(ParcoursError):
    """Base of security errors."""


class CredentialError(SecurityError):
    """A principal's secret is missing or the credential store cannot be read or written."""


class SealError(SecurityError):
    """A sealed value cannot be opened (another key, or written in clear)."""
