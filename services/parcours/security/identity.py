"""The person's identity under envelope encryption: never in clear on Kafka.

- Each person has a **data key** (AES-256), made by the edge the first time it seals that
  person's identity; the key travels on the compacted `identity-keys` topic only **wrapped** by
  the key-encryption key (`KeyEncryptionKey`: PARCOURS_IDENTITY_KEK, or a KMS behind the same
  interface), which is never on Kafka. Destroying a data key (a tombstone) makes every copy of
  the identities it sealed unreadable: erasure by crypto-shredding.
- An identity is sealed as one blob, `v1.<key id>.<nonce + ciphertext>` (AES-256-GCM), whose
  associated data binds it to its person (the person key, else the pseudonym) and to its field
  (`person.identity`): moved to another person or another field, it does not open. The nonce is
  derived from the key, the associated data and the plaintext (a synthetic IV): the same identity
  sealed twice (a retried request) gives the same blob, and two different identities never share
  a nonce under one key.
- The **person key** of a qualified identity is an HMAC-SHA256 of its INS (OID and matricule)
  under PARCOURS_IDENTITY_INDEX_KEY, outside Kafka: the same person in every structure, which the
  follow-up index matches on; without the key it names nobody.

The data keys of a person are found by a **handle**: `ins:<person key>` for a qualified identity,
else `pseudo:<HMAC of the referring structure and the pseudonym>` (one person per pseudonym of a
structure, as the structure assigned it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from parcours.contract.identity import Identity, Ins
from parcours.contract.models import Event, ReferralSubmitted
from parcours.security.errors import SealError

#: the credential store's entries holding the development keys (production: the settings)
DEV_KEK_ENTRY = "identity-kek"
DEV_INDEX_KEY_ENTRY = "identity-index-key"
#: the only field sealed: the whole identity, as one blob
FIELD = "person.identity"
#: what a view says in place of an identity whose data key was destroyed
ERASED = "erased"
_NONCE = 12


def _derive(secret: SecretStr, purpose: bytes) -> bytes:
    """32 bytes for one purpose from any high-entropy secret."""
    return hmac.new(secret.get_secret_value().encode(), b"parcours " + purpose, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyEncryptionKey(Protocol):
    """What wraps the data keys: a local key from the settings, or a KMS behind this interface."""

    kek_id: str

    def wrap(self, key_id: str, data_key: bytes) -> bytes: ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes: ...


class LocalKek:
    """A key-encryption key held by the process (PARCOURS_IDENTITY_KEK): AES-256-GCM, the data key's
    id as associated data (a wrapped key does not open under another id)."""

    def __init__(self, secret: SecretStr) -> None:
        key = _derive(secret, b"identity kek v1")
        self._aead = AESGCM(key)
        self.kek_id = "local-" + hashlib.sha256(key).hexdigest()[:12]

    def wrap(self, key_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], key_id.encode())
        except InvalidTag:
            raise SealError(f"the data key {key_id} does not open with this key-encryption key") from None


@dataclass(frozen=True)
class DataKey:
    """A person's data key as the `identity-keys` topic holds it: wrapped."""

    key_id: str
    person: str  # the handle
    kek: str
    wrapped: bytes
    created_ms: int

    def encode(self) -> bytes:
        return json.dumps({"person": self.person, "kek": self.kek, "wrapped": _b64(self.wrapped),
                           "created_ms": self.created_ms}, sort_keys=True).encode()

    @classmethod
    def decode(cls, key_id: str, raw: bytes | str) -> DataKey:
        try:
            d = json.loads(raw)
            return cls(key_id, str(d["person"]), str(d["kek"]), _unb64(d["wrapped"]), int(d["created_ms"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SealError(f"the data key record {key_id} is not one ({type(exc).__name__})") from None


class KeyRing(Protocol):
    """Where the data keys are: the `identity-keys` topic, through the service's read model."""

    def data_key(self, key_id: str) -> DataKey | None:
        """The key, None when destroyed or never seen."""

    def person_keys(self, person: str) -> list[DataKey]:
        """The live keys of a handle, oldest first."""

    def destroyed(self, key_id: str) -> bool:
        """Was this key destroyed (its tombstone read)?"""

    async def await_key(self, key_id: str) -> DataKey | None:
        """The key once the read model has it; None when it was destroyed (or never came)."""

    async def publish(self, key: DataKey) -> None:
        """Write the key on its topic (acknowledged by every in-sync replica)."""


class PersonKeys:
    """The keyed digests: a qualified INS's person key, a person's handle."""

    def __init__(self, secret: SecretStr) -> None:
        self._key = _derive(secret, b"person key v1")

    def person_key(self, ins: Ins) -> str:
        return hmac.new(self._key, f"ins|{ins.oid}|{ins.matricule}".encode(), hashlib.sha256).hexdigest()

    def handle(self, source: str, pseudonym: str, person_key: str | None) -> str:
        if person_key:
            return f"ins:{person_key}"
        return "pseudo:" + hmac.new(self._key, f"pseudonym|{source}|{pseudonym}".encode(), hashlib.sha256).hexdigest()[:32]


def _aad(key_id: str, person_key: str | None, pseudonym: str) -> bytes:
    who = f"key:{person_key}" if person_key else f"pseudonym:{pseudonym}"
    return f"parcours identity v1|{key_id}|{who}|{FIELD}".encode()


def sealed_key_id(sealed: str) -> str:
    return sealed.split(".", 2)[1]


@dataclass(frozen=True)
class IdentitySecrets:
    """The two keys outside Kafka: the key-encryption key and the person keys' key."""

    kek: KeyEncryptionKey
    persons: PersonKeys

    @classmethod
    def of(cls, kek: SecretStr, index_key: SecretStr) -> IdentitySecrets:
        return cls(LocalKek(kek), PersonKeys(index_key))

    @classmethod
    def ephemeral(cls) -> IdentitySecrets:
        """Keys of this process only (a test's adapter that never meets another)."""
        return cls.of(SecretStr(os.urandom(32).hex()), SecretStr(os.urandom(32).hex()))


class IdentityVault:
    """Seals identities before they are published, opens them for entitled readers."""

    def __init__(self, kek: KeyEncryptionKey, persons: PersonKeys, ring: KeyRing, clock_ms: Callable[[], int]) -> None:
        self.kek, self.persons, self.ring, self.clock_ms = kek, persons, ring, clock_ms
        #: unwrapped data keys, by (key id, wrapped form); always looked up in the ring first, so a
        #: destroyed key is never used again even while it is here
        self._clear: dict[tuple[str, bytes], bytes] = {}
        #: keys this process made and published, until its read model has them: the next identity
        #: of the same person uses the same key
        self._fresh: dict[str, DataKey] = {}
        #: keys awaited in vain: not awaited again (a read of an erased identity answers at once)
        self._missing: set[str] = set()

    async def seal(self, event: Event) -> Event:
        """`event` with its person's identity sealed (the person key set for a qualified one);
        any other event as it is."""
        if not isinstance(event, ReferralSubmitted) or event.person.identity is None:
            return event
        person = event.person
        identity = person.identity
        assert identity is not None  # noqa: S101 - checked just above (for mypy)
        person_key = self.persons.person_key(identity.ins) if identity.ins is not None else None
        key = await self._key_for(self.persons.handle(event.source, person.pseudonym, person_key))
        plain = identity.model_dump_json().encode()
        aad = _aad(key.key_id, person_key, person.pseudonym)
        dk = self._unwrapped(key)
        nonce = hmac.new(dk, aad + b"\0" + plain, hashlib.sha256).digest()[:_NONCE]
        sealed = f"v1.{key.key_id}.{_b64(nonce + AESGCM(dk).encrypt(nonce, plain, aad))}"
        sealed_person = person.model_copy(update={"identity": None, "identity_sealed": sealed, "person_key": person_key})
        return event.model_copy(update={"person": sealed_person})

    async def open(self, person: dict[str, Any]) -> dict[str, Any]:
        """A view's person entry for its reader: the identity in clear (or `erased`), without the
        sealed blob and the person key."""
        out = {k: v for k, v in person.items() if k not in ("identity_sealed", "person_key")}
        sealed = person.get("identity_sealed")
        if not sealed:
            return out
        key_id = sealed_key_id(sealed)
        key = None
        if not self.ring.destroyed(key_id):
            key = self.ring.data_key(key_id) or next((k for k in self._fresh.values() if k.key_id == key_id), None)
            if key is None and key_id not in self._missing:  # made a moment ago elsewhere: give it time to arrive, once
                key = await self.ring.await_key(key_id)
                if key is None:  # a key destroyed so long ago that its tombstone left the topic
                    if len(self._missing) > 100_000:  # noqa: PLR2004 - a bound: forgetting costs one wait again
                        self._missing.clear()
                    self._missing.add(key_id)
        if key is None:
            return out | {"identity": ERASED}
        raw = _unb64(sealed.split(".", 2)[2])
        try:
            plain = AESGCM(self._unwrapped(key)).decrypt(raw[:_NONCE], raw[_NONCE:],
                                                         _aad(key_id, person.get("person_key"), person["pseudonym"]))
        except InvalidTag:
            raise SealError(f"an identity sealed under {key_id} does not open for its person and field") from None
        return out | {"identity": Identity.model_validate_json(plain).model_dump(mode="json", exclude_none=True)}

    async def _key_for(self, handle: str) -> DataKey:
        keys = self.ring.person_keys(handle)
        if keys:
            self._fresh.pop(handle, None)
            return keys[-1]
        fresh = self._fresh.get(handle)
        if fresh is not None and not self.ring.destroyed(fresh.key_id):
            return fresh
        key_id = os.urandom(16).hex()
        key = DataKey(key_id, handle, self.kek.kek_id, self.kek.wrap(key_id, AESGCM.generate_key(256)), self.clock_ms())
        await self.ring.publish(key)
        self._fresh[handle] = key
        return key

    def _unwrapped(self, key: DataKey) -> bytes:
        cached = self._clear.get((key.key_id, key.wrapped))
        if cached is None:
            if len(self._clear) > 10_000:  # noqa: PLR2004 - a bound, not a tuning: keys are cheap to unwrap again
                self._clear.clear()
            cached = self._clear[(key.key_id, key.wrapped)] = self.kek.unwrap(key.key_id, key.wrapped)
        return cached

    def forget(self, key_id: str) -> None:
        """Drop a destroyed key from the caches (the ring's tombstone said so)."""
        for k in [k for k in self._clear if k[0] == key_id]:
            del self._clear[k]
        for handle in [h for h, k in self._fresh.items() if k.key_id == key_id]:
            del self._fresh[handle]

