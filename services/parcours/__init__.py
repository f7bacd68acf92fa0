"""Parcours: an event backbone for French care-coordination structures (DAC, CPTS, CRT)."""

import importlib
import warnings

try:
    # Quix Streams imports confluent-kafka's schema registry, which imports authlib's httpx client,
    # deprecated upstream: a warning on stderr at every processor start, outside the JSON logs.
    # authlib's module forces its own warnings on when it is imported ("always", put first), so
    # it is imported first and this one message silenced after it. Nothing of ours uses authlib.
    _authlib = importlib.import_module("authlib.deprecate")
except ImportError:  # pragma: no cover - a future quixstreams without authlib
    pass
else:
    warnings.filterwarnings("ignore", message="The httpx module is deprecated", category=_authlib.AuthlibDeprecationWarning)

__version__ = "0.1.0"
