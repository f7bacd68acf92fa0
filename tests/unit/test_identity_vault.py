"""Envelope encryption of identities (security/identity.py): sealed per person, bound to its
person and field, opened only with the person's live data key, erased by destroying it; the
person key of a qualified INS; the processor's activity per data key; erasure's choice of keys;
the retention sweep's choice of idle persons."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from parcours.casefile import followups
from parcours.casefile.policy import to_ms
from parcours.contract.models import ReferralSubmitted
from parcours.devtools.persons import synthetic_identity
from parcours.ops.persons import keys_to_destroy
from parcours.readmodel.db import Reader, Record, Writer
from parcours.security.errors import SealError
from parcours.security.identity import ERASED, DataKey, IdentitySecrets, IdentityVault
from tests.factories import ev


class MemoryRing:
    """The `identity-keys` topic in a dict (None: destroyed)."""

    def __init__(self) -> None:
        self.keys: dict[str, DataKey | None] = {}
        self.published: list[DataKey] = []

    def data_key(self, key_id: str) -> DataKey | None:
        return self.keys.get(key_id)

    def destroyed(self, key_id: str) -> bool:
        return key_id in self.keys and self.keys[key_id] is None

    def person_keys(self, person: str) -> list[DataKey]:
        return [k for k in self.keys.values() if k is not None and k.person == person]

    async def await_key(self, key_id: str) -> DataKey | None:
        return self.keys.get(key_id)

    async def publish(self, key: DataKey) -> None:
        self.published.append(key)
        self.keys[key.key_id] = key


SECRETS = IdentitySecrets.of(SecretStr("kek-" + "x" * 40), SecretStr("index-" + "y" * 40))


def _vault(ring: MemoryRing, secrets: IdentitySecrets = SECRETS) -> IdentityVault:
    return IdentityVault(secrets.kek, secrets.persons, ring, lambda: 1_000)


def _referral(n: int = 1, source: str = "cpts-31-nord", pseudonym: str = "P-7f3a9c", to: str = "dac-31",
              **ident: Any) -> ReferralSubmitted:
    identity = synthetic_identity(n) | ident
    person = {"pseudonym": pseudonym, "birth_year": int(identity["birth_date"][:4]), "postcode": "31200", "identity": identity}
    e = ev("ReferralSubmitted", source=source, to_structure=to, person=person)
    assert isinstance(e, ReferralSubmitted)
    return e


def _seal(vault: IdentityVault, e: ReferralSubmitted) -> ReferralSubmitted:
    sealed = asyncio.run(vault.seal(e))
    assert isinstance(sealed, ReferralSubmitted)
    return sealed


def _entry(e: ReferralSubmitted) -> dict[str, Any]:
    return e.person.model_dump(mode="json", exclude_none=True)


def test_a_sealed_identity_holds_no_trait_and_opens_for_its_reader() -> None:
    ring = MemoryRing()
    vault = _vault(ring)
    e = _referral()
    sealed = _seal(vault, e)
    assert sealed.person.identity is None
    blob = json.dumps(_entry(sealed))
    ident = e.person.identity
    assert ident is not None
    assert ident.ins is not None
    assert ident.contact is not None
    assert ident.contact.phone is not None
    for trait in (ident.birth_family_name, ident.birth_given_names, ident.ins.matricule, ident.contact.phone, "31555"):
        assert trait not in blob
    shown = asyncio.run(vault.open(_entry(sealed)))
    assert shown["identity"]["ins"]["matricule"] == ident.ins.matricule
    assert shown["identity"]["birth_family_name"] == ident.birth_family_name
    assert "identity_sealed" not in shown
    assert "person_key" not in shown  # the shared person key is the index's, never shown


def test_the_same_person_gets_one_data_key_and_a_retry_the_same_blob() -> None:
    ring = MemoryRing()
    vault = _vault(ring)
    first, again = _seal(vault, _referral()), _seal(vault, _referral())
    assert len(ring.published) == 1
    assert first.person.identity_sealed == again.person.identity_sealed  # a retried request publishes the very same event
    other = _seal(vault, _referral(5))
    assert len(ring.published) == 2
    assert other.person.data_key_id != first.person.data_key_id


def test_the_person_key_is_the_same_for_every_structure_and_only_for_a_qualified_ins() -> None:
    ring = MemoryRing()
    vault = _vault(ring)
    by_cpts = _seal(vault, _referral(source="cpts-31-nord", pseudonym="P-nord-1"))
    by_dac = _seal(vault, _referral(source="dac-31", pseudonym="D-4242", to="crt-31-muret"))
    assert by_cpts.person.person_key is not None
    assert by_cpts.person.person_key == by_dac.person.person_key
    assert by_cpts.person.data_key_id == by_dac.person.data_key_id  # one person, one data key
    unqualified = _seal(vault, _referral(status="provisional", ins=None))
    assert unqualified.person.person_key is None
    assert followups.person_of(unqualified.person) == followups.person_digest("P-7f3a9c")
    # without the index key, no one can make it: another key gives another digest
    elsewhere = _seal(_vault(MemoryRing(), IdentitySecrets.of(SecretStr("k" * 40), SecretStr("z" * 40))), _referral())
    assert elsewhere.person.person_key != by_cpts.person.person_key


def test_a_blob_moved_to_another_person_or_field_does_not_open() -> None:
    ring = MemoryRing()
    vault = _vault(ring)
    sealed = _entry(_seal(vault, _referral()))
    with pytest.raises(SealError, match="does not open"):
        asyncio.run(vault.open(sealed | {"person_key": "0" * 64}))
    provisional = _entry(_seal(vault, _referral(status="provisional", ins=None, pseudonym="P-other")))
    with pytest.raises(SealError, match="does not open"):
        asyncio.run(vault.open(provisional | {"pseudonym": "P-thief"}))


def test_destroying_the_data_key_erases_the_identity_everywhere() -> None:
    ring = MemoryRing()
    vault = _vault(ring)
    sealed = _seal(vault, _referral())
    key_id = sealed.person.data_key_id
    assert key_id is not None
    asyncio.run(vault.open(_entry(sealed)))  # its key unwrapped and cached
    ring.keys[key_id] = None  # the tombstone
    assert asyncio.run(vault.open(_entry(sealed)))["identity"] == ERASED
    # another vault (another service, a rebuild) with the same KEK cannot open it either
    assert asyncio.run(_vault(ring).open(_entry(sealed)))["identity"] == ERASED
    # the next identity of that person gets a new key
    assert _seal(vault, _referral()).person.data_key_id != key_id


def test_a_wrapped_key_opens_only_under_its_kek() -> None:
    ring = MemoryRing()
    sealed = _seal(_vault(ring), _referral())
    stranger = _vault(ring, IdentitySecrets.of(SecretStr("another-kek-" + "q" * 40), SecretStr("index-" + "y" * 40)))
    with pytest.raises(SealError, match="does not open with this key-encryption key"):
        asyncio.run(stranger.open(_entry(sealed)))


def test_the_processor_tells_each_cases_activity_per_data_key_once_a_day() -> None:
    vault = _vault(MemoryRing())
    sealed = _seal(vault, _referral())
    fu = followups.new_state()
    told = followups.activity(fu, sealed)
    assert told == ((sealed.person.data_key_id,), to_ms(sealed.occurred_at))
    assert followups.activity(fu, ev("MessagePosted", at=60)) is None  # same day
    later = followups.activity(fu, ev("MessagePosted", at=60 * 24))
    assert later is not None
    assert later[1] == to_ms(ev("MessagePosted", at=60 * 24).occurred_at)
    assert followups.activity(followups.new_state(), ev("MessagePosted")) is None  # no identity, nothing told


def test_erasure_destroys_every_key_of_the_cases_persons_and_no_other() -> None:
    keys = {k: DataKey(k, p, "local-x", b"w", 1) for k, p in (("a" * 32, "ins:p1"), ("b" * 32, "ins:p1"), ("c" * 32, "ins:p2"))}
    activity = [f"{'a' * 32}/case-1".encode(), f"{'c' * 32}/case-2".encode(), f"{'b' * 32}/case-3".encode()]
    assert keys_to_destroy("case-1", activity, keys) == (1, ("a" * 32, "b" * 32))
    assert keys_to_destroy("case-9", activity, keys) == (0, ())


def test_the_retention_sweep_picks_the_persons_idle_in_every_case(tmp_path: Path) -> None:
    w = Writer(tmp_path / "s.sqlite3")
    day = 86_400_000

    def key(key_id: str, person: str, created: int) -> Record:
        return Record("datakeys", "", "t", 0, 0, key_id, DataKey(key_id, person, "k", b"w", created).encode())

    records = [key("a" * 32, "ins:p1", 0), key("b" * 32, "ins:p1", 0), key("c" * 32, "ins:p2", 0), key("d" * 32, "ins:p3", 50 * day),
               Record("activity", "", "t", 0, 1, f"{'a' * 32}/case-1", str(10 * day).encode()),
               Record("activity", "", "t", 0, 2, f"{'b' * 32}/case-2", str(90 * day).encode()),
               Record("activity", "", "t", 0, 3, f"{'c' * 32}/case-3", str(20 * day).encode())]
    w.apply(records, {}, frozenset())
    r = Reader(tmp_path / "s.sqlite3")
    # p1 was active on day 90 in one of its cases: kept whole; p2 idle since day 20; p3's key made on day 50
    assert r.idle_keys(60 * day) == ["c" * 32, "d" * 32]
    assert r.idle_keys(30 * day) == ["c" * 32]
    w.apply([Record("datakeys", "", "t", 0, 4, "c" * 32, None)], {}, frozenset())
    assert r.idle_keys(30 * day) == []  # destroyed: swept once
    assert r.data_key("c" * 32) == (None,)


def test_the_retention_clock_destroys_the_idle_persons_keys_and_only_theirs(tmp_path: Path) -> None:
    from types import SimpleNamespace
    from typing import cast

    from parcours.adapters.retention import sweep
    from parcours.readmodel.store import EdgeStore

    w = Writer(tmp_path / "s.sqlite3")
    day = 86_400
    w.apply([Record("datakeys", "", "t", 0, 0, "a" * 32, DataKey("a" * 32, "ins:old", "k", b"w", 0).encode()),
             Record("datakeys", "", "t", 0, 1, "b" * 32, DataKey("b" * 32, "ins:new", "k", b"w", 0).encode()),
             Record("activity", "", "t", 0, 2, f"{'b' * 32}/case-2", str(400 * day * 1000).encode())], {}, frozenset())
    store = cast("EdgeStore", SimpleNamespace(db=Reader(tmp_path / "s.sqlite3")))
    destroyed: list[list[str]] = []

    async def destroy(keys: list[str]) -> None:
        destroyed.append(keys)

    assert asyncio.run(sweep(store, destroy, idle_s=365 * day, now_s=500 * day)) == ["a" * 32]
    assert destroyed == [["a" * 32]]
    assert asyncio.run(sweep(store, destroy, idle_s=365 * day, now_s=300 * day)) == []
