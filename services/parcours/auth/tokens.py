"""Access tokens: issued by the embedded issuer's token endpoint for a signed client assertion
(SMART Backend Services), checked offline by the edge on every request.

The exchange (`TokenService.exchange`) follows SMART Backend Services and RFC 7523: a
`client_credentials` grant, authenticated by a JWT the structure signed with one of its
registered keys (ES384 or RS384), whose `iss` and `sub` are the structure, whose `aud` is this
token endpoint, which expires within five minutes and whose `jti` was never used before (the
ledger is shared by every adapter instance: `bus.idempotency`). The access token is a JWT signed
by the issuer's key; its scopes are what was asked within what the structure's kind may do.

`AccessTokens.check` is the edge's offline check: signature by the issuer's keys, issuer,
audience, expiry, and the scopes it carries. A token's verdict is kept until it expires, so a
partner's requests after the first cost a dictionary lookup.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from parcours.auth import scopes as sc
from parcours.auth.errors import AuthError, InvalidClient, InvalidRequest, TokenRefused, UnsupportedGrant
from parcours.auth.keys import ACCESS_TOKEN_ALGORITHM, ASSERTION_ALGORITHMS, IssuerKey, key_of
from parcours.topology.catalogue import Catalogue

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: an assertion may not live longer than this (SMART: "no more than five minutes in the future")
ASSERTION_MAX_S = 300
#: clock skew tolerated between a partner and the edge
LEEWAY_S = 30
#: what an external issuer may sign with
EXTERNAL_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384")
_JTI_MAX = 255


class JtiLedger(Protocol):
    def first_use(self, name: str, until: int) -> Awaitable[bool]:
        """True the first time `name` is claimed by any instance (kept at least until `until`, epoch s)."""


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWT, read before its signature is checked (to find the key)."""
    try:
        head, body, _ = token.split(".")
        header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (head, body))
    except (ValueError, TypeError) as exc:
        raise InvalidClient(f"client_assertion is not a signed JWT ({type(exc).__name__})") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidClient("client_assertion is not a signed JWT")
    return header, claims


@dataclass
class TokenService:
    """The embedded issuer: client assertions in, access tokens out."""

    catalogue: Catalogue
    key: IssuerKey
    issuer: str
    #: the access tokens' audience: the adapters of one kind
    audience: str
    #: this endpoint's URL: the `aud` an assertion must name
    token_url: str
    jtis: JtiLedger
    ttl_s: int = 300
    now: Callable[[], float] = time.time
    #: keys whose tokens are accepted too (a rotation in or out), never used to sign
    accepted: tuple[IssuerKey, ...] = ()

    def jwks(self) -> dict[str, Any]:
        """The public keys that check this issuer's tokens: the signing key first."""
        return {"keys": [k.key.as_dict(private=False) for k in (self.key, *self.accepted)]}

    async def exchange(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The token response (RFC 6749 section 5.1) for a token request's form."""
        if form.get("grant_type") != "client_credentials":
            raise UnsupportedGrant("grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidRequest(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion, scope = form.get("client_assertion"), form.get("scope")
        if not assertion or not scope:
            raise InvalidRequest("client_assertion and scope are required")
        slug, exp, jti = self._authenticate(assertion)
        structure = self.catalogue.registry.structures[slug]
        granted = sc.grant(sc.parse(scope), sc.grantable(self.catalogue, structure.kind))
        if not await self.jtis.first_use(f"jti:{slug}/{jti}", exp):
            raise InvalidClient("client_assertion's jti was used before; sign a new assertion for each request")
        now = int(self.now())
        text = sc.render(granted)
        claims = {"iss": self.issuer, "sub": slug, "client_id": slug, "aud": self.audience, "iat": now,
                  "exp": now + self.ttl_s, "jti": secrets.token_urlsafe(16), "scope": text}
        token = jwt.encode({"alg": ACCESS_TOKEN_ALGORITHM, "kid": self.key.kid}, claims, self.key.key)
        return {"access_token": token, "token_type": "bearer", "expires_in": self.ttl_s, "scope": text}

    def _authenticate(self, assertion: str) -> tuple[str, int, str]:
        """(structure, expiry, jti) of a valid assertion; InvalidClient otherwise."""
        header, unverified = _unverified(assertion)
        slug = unverified.get("iss")
        structure = self.catalogue.registry.structures.get(slug) if isinstance(slug, str) else None
        if structure is None:
            raise InvalidClient("client_assertion's iss is not a registered structure")
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise InvalidClient(f"client_assertion must be signed with one of {list(ASSERTION_ALGORITHMS)}")
        key = key_of(structure.jwks, header.get("kid"), alg)
        if key is None:
            raise InvalidClient(f"no registered key of {slug} matches the assertion's kid and alg")
        try:
            claims = jwt.decode(assertion, key, algorithms=[alg]).claims
        except (JoseError, ValueError) as exc:
            raise InvalidClient(f"client_assertion's signature does not verify with key {header.get('kid')} ({type(exc).__name__})") from None
        if claims.get("sub") != slug:
            raise InvalidClient("client_assertion's sub must equal its iss (the structure)")
        aud = claims.get("aud")
        if aud != self.token_url and not (isinstance(aud, list) and self.token_url in aud):
            raise InvalidClient(f"client_assertion's aud must be this token endpoint ({self.token_url})")
        exp, now = claims.get("exp"), self.now()
        if not isinstance(exp, int):
            raise InvalidClient("client_assertion needs an exp (integer seconds)")
        if exp <= now - LEEWAY_S:
            raise InvalidClient("client_assertion has expired")
        if exp > now + ASSERTION_MAX_S + LEEWAY_S:
            raise InvalidClient(f"client_assertion's exp is more than {ASSERTION_MAX_S} s ahead")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > _JTI_MAX:
            raise InvalidClient(f"client_assertion needs a jti (a string of at most {_JTI_MAX} characters)")
        return structure.slug, exp, jti


@dataclass(frozen=True)
class Verdict:
    slug: str
    scopes: sc.Scopes
    exp: int


class AccessTokens:
    """The edge's offline check of access tokens signed by `keys()` (the embedded issuer's, or an
    external issuer's JWKS found by discovery)."""

    def __init__(self, keys: Callable[[], KeySet | None], *, issuer: str, audience: str,
                 algorithms: tuple[str, ...] = (ACCESS_TOKEN_ALGORITHM,), now: Callable[[], float] = time.time,
                 cache_size: int = 10_000) -> None:
        self.keys, self.issuer, self.audience, self.algorithms, self.now = keys, issuer, audience, list(algorithms), now
        self.cache_size = cache_size
        self._cache: dict[str, Verdict] = {}
        self._keys_seen: KeySet | None = None

    def check(self, token: str) -> Verdict:
        """The structure and scopes of a valid token; TokenRefused otherwise."""
        keys = self.keys()
        if keys is not self._keys_seen:  # the issuer's keys changed: earlier verdicts are void
            self._cache.clear()
            self._keys_seen = keys
        verdict = self._cache.get(token)
        if verdict is None:
            verdict = self._verify(token, keys)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[token] = verdict
        if verdict.exp <= self.now():
            self._cache.pop(token, None)
            raise TokenRefused("the access token has expired; ask the token endpoint for a new one")
        return verdict

    def _verify(self, token: str, keys: KeySet | None) -> Verdict:
        if keys is None:
            raise TokenRefused("the token issuer's keys are not known yet")
        try:
            claims = jwt.decode(token, keys, algorithms=self.algorithms).claims
        except (JoseError, ValueError) as exc:
            raise TokenRefused(f"the access token does not verify ({type(exc).__name__})") from None
        if claims.get("iss") != self.issuer:
            raise TokenRefused("the access token comes from another issuer")
        aud = claims.get("aud")
        if aud != self.audience and not (isinstance(aud, list) and self.audience in aud):
            raise TokenRefused(f"the access token is meant for another audience than {self.audience}")
        exp = claims.get("exp")
        if not isinstance(exp, int):
            raise TokenRefused("the access token has no exp")
        slug = claims.get("client_id") or claims.get("azp") or claims.get("sub")
        if not isinstance(slug, str):
            raise TokenRefused("the access token names no client")
        raw = claims.get("scope", claims.get("scp", ""))
        try:
            granted = sc.parse(" ".join(raw) if isinstance(raw, list) else str(raw))
        except AuthError as exc:
            raise TokenRefused(exc.message) from None
        return Verdict(slug, granted, exp)
