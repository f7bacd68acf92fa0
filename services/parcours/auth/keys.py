"""Keys: the public keys (JWKS) a structure registers to sign its client assertions, and the
embedded issuer's own key, which signs access tokens.

A structure's keys are public JWKs of the two SMART algorithms: ES384 (EC P-384) or RS384 (RSA
of 2048 bits or more), each with its `kid`; a private member is refused (the key must never
have left the partner). The issuer's key is an EC P-256 key derived from a secret (any long
random string: PARCOURS_TOKEN_KEY, or in development one generated into the credential store),
so every adapter instance holding the secret signs and checks with the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwk
from joserfc.errors import JoseError
from pydantic import SecretStr

from parcours.auth.errors import BadKeys

#: the signature algorithms a client assertion may use (SMART Backend Services)
ASSERTION_ALGORITHMS = ("ES384", "RS384")
#: what the embedded issuer signs access tokens with
ACCESS_TOKEN_ALGORITHM = "ES256"  # noqa: S105 - an algorithm's name
#: the credential store's entry holding the development issuer secret
DEV_ISSUER_ENTRY = "token-issuer-key"
_MIN_RSA_BITS = 2048
_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def checked_jwks(keys: Iterable[Mapping[str, Any]], owner: str) -> tuple[dict[str, Any], ...]:
    """`keys` as registered public JWKs, each checked; raises BadKeys naming the fault."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for raw in keys:
        key = dict(raw)
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BadKeys(f"{owner}: every key needs a `kid`")
        if kid in seen:
            raise BadKeys(f"{owner}: two keys with kid {kid!r}")
        seen.add(kid)
        if _PRIVATE & key.keys():
            raise BadKeys(f"{owner}: key {kid} holds private parts; register the public key only")
        alg = key.get("alg")
        if key.get("kty") == "EC" and key.get("crv") == "P-384" and alg in (None, "ES384"):
            key["alg"] = "ES384"
        elif key.get("kty") == "RSA" and alg in (None, "RS384"):
            key["alg"] = "RS384"
        else:
            raise BadKeys(f"{owner}: key {kid} must be EC P-384 (ES384) or RSA (RS384)")
        try:
            imported = jwk.import_key(key)
        except (JoseError, ValueError, TypeError) as exc:
            raise BadKeys(f"{owner}: key {kid} does not import: {exc}") from None
        if key["kty"] == "RSA" and imported.raw_value.key_size < _MIN_RSA_BITS:  # type: ignore[union-attr]
            raise BadKeys(f"{owner}: key {kid} is an RSA key under {_MIN_RSA_BITS} bits")
        out.append(key)
    return tuple(out)


def key_of(jwks: Iterable[Mapping[str, Any]], kid: str | None, alg: str | None) -> jwk.Key | None:
    """The registered key a signature names (its `kid`; without one, the only key of its algorithm)."""
    fits = [k for k in jwks if k.get("alg") == alg and (kid is None or k.get("kid") == kid)]
    return jwk.import_key(dict(fits[0])) if len(fits) == 1 else None


class IssuerKey:
    """The embedded issuer's signing key, derived from a secret."""

    def __init__(self, secret: SecretStr) -> None:
        seed = int.from_bytes(hashlib.sha256(b"parcours-issuer\n" + secret.get_secret_value().encode()).digest())
        private = ec.derive_private_key(seed % (_P256_ORDER - 1) + 1, ec.SECP256R1())
        self.key = jwk.ECKey.import_key(private)
        kid = self.key.thumbprint()
        self.key = jwk.ECKey.import_key(private, {"kid": kid, "alg": ACCESS_TOKEN_ALGORITHM, "use": "sig"})
        self.kid = kid
