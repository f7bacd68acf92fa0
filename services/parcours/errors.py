"""The project's root exception. Every area has its own `errors.py` deriving from it."""


class ParcoursError(Exception):
    """Root of every error Parcours raises on purpose."""
