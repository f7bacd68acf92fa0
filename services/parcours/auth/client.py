"""The partner's side of SMART Backend Services, for the demo, the bench and the tests: a key
pair to register, a client assertion signed with it, the token request's form."""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from parcours.auth.tokens import ASSERTION_TYPE

_RSA_BITS = 2048


def new_key(alg: str = "ES384", kid: str | None = None) -> ECKey | RSAKey:
    """A private key for client assertions (ES384: EC P-384; RS384: RSA 2048)."""
    params: Any = {"kid": kid or secrets.token_hex(8), "alg": alg, "use": "sig"}
    return ECKey.generate_key("P-384", params) if alg == "ES384" else RSAKey.generate_key(_RSA_BITS, params)


def public_jwk(key: ECKey | RSAKey) -> dict[str, Any]:
    """What the structure registers: the public half, with its kid and alg."""
    return key.as_dict(private=False)


def assertion(slug: str, key: ECKey | RSAKey, token_url: str, *, lifetime_s: int = 240, jti: str | None = None,
              now: float | None = None, **overrides: Any) -> str:
    """A client assertion of `slug` for `token_url`, signed with `key` (claims may be overridden)."""
    issued = int(time.time() if now is None else now)
    claims = {"iss": slug, "sub": slug, "aud": token_url, "exp": issued + lifetime_s, "iat": issued,
              "jti": secrets.token_urlsafe(16) if jti is None else jti, **overrides}
    alg = str(key.get("alg") or ("ES384" if isinstance(key, ECKey) else "RS384"))
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def token_form(client_assertion: str, scope: str) -> dict[str, str]:
    """The token request (form-encoded): a client_credentials grant authenticated by the assertion."""
    return {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion}
