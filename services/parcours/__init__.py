"""Parcours: an event backbone for French care-coordination structures (DAC, CPTS, CRT)."""

__version__ = "0.1.0"
