"""The cluster's principals (SCRAM users) and ACLs, read back and made to match the catalogue.

aiokafka's admin client has neither ACL nor SCRAM calls: this module uses confluent-kafka's
`AdminClient` (librdkafka), for the admin path only, off the event loop. ACLs are managed per
topic prefix: `topics apply` for prefix `p` adds and removes only rules on resources named `p.*`
or `p-*`, so several prefixes (test runs) share a cluster without touching each other's rules.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import KafkaAccess
from parcours.security.credentials import CredentialStore
from parcours.topology.catalogue import Acl, Catalogue

SCRAM_ITERATIONS = 8192
_RESOURCES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "transactional_id": ResourceType.TRANSACTIONAL_ID}
_PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_OPERATIONS = {"READ": AclOperation.READ, "WRITE": AclOperation.WRITE, "DESCRIBE": AclOperation.DESCRIBE,
               "DESCRIBE_CONFIGS": AclOperation.DESCRIBE_CONFIGS}


@dataclass(frozen=True)
class SecurityChange:
    action: str  # add-acl / remove-acl / add-user / missing-user
    subject: str
    detail: str = ""
    acl: Acl | None = None

    def __str__(self) -> str:
        return f"{self.action:<15} {self.subject:<40} {self.detail}"


def _binding(acl: Acl) -> AclBinding:
    return AclBinding(_RESOURCES[acl.resource], acl.name, _PATTERNS[acl.pattern], acl.principal, "*",
                      _OPERATIONS[acl.operation], AclPermissionType.ALLOW)


_RESOURCE_NAMES = {v: k for k, v in _RESOURCES.items()}
_PATTERN_NAMES = {v: k for k, v in _PATTERNS.items()}
_OPERATION_NAMES = {v: k for k, v in _OPERATIONS.items()}


def _from_binding(b: Any) -> Acl | None:
    resources, patterns, operations = _RESOURCE_NAMES, _PATTERN_NAMES, _OPERATION_NAMES
    if (b.restype not in resources or b.resource_pattern_type not in patterns or b.operation not in operations
            or b.permission_type != AclPermissionType.ALLOW or b.host != "*"):
        return Acl(b.principal, str(b.operation), str(b.restype), b.name, str(b.resource_pattern_type))
    return Acl(b.principal, operations[b.operation], resources[b.restype], b.name, patterns[b.resource_pattern_type])


def _any_binding() -> AclBindingFilter:
    return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                            AclPermissionType.ANY)


class SecurityAdmin:
    """Synchronous calls on a confluent-kafka admin client; use the async wrappers from coroutines."""

    def __init__(self, kafka: KafkaAccess) -> None:
        self.admin = AdminClient(kafka.librdkafka())

    def acls(self, catalogue: Catalogue) -> tuple[set[Acl], list[Any]]:
        """The live rules on this catalogue's resources, and their raw bindings (to delete them)."""
        try:
            bindings = self.admin.describe_acls(_any_binding()).result(timeout=15)
        except KafkaException as exc:
            raise ClusterError(f"describe ACLs: {exc.args[0]}") from None
        mine = [b for b in bindings if catalogue.owns(b.name)]
        out: set[Acl] = set()
        for b in mine:
            acl = _from_binding(b)
            if acl is not None:
                out.add(acl)
        return out, mine

    def users(self) -> set[str]:
        try:
            described = self.admin.describe_user_scram_credentials().result(timeout=15)
        except KafkaException as exc:
            raise ClusterError(f"describe SCRAM users: {exc.args[0]}") from None
        return {user for user, d in described.items() if d.scram_credential_infos}

    def plan(self, catalogue: Catalogue, credentials: CredentialStore | None) -> list[SecurityChange]:
        want = set(catalogue.acls())
        live, _ = self.acls(catalogue)
        users = self.users()
        changes: list[SecurityChange] = []
        for p in catalogue.principals():
            if p not in users:
                if credentials is not None:
                    changes.append(SecurityChange("add-user", f"User:{p}", "SCRAM-SHA-512, secret generated"))
                else:
                    changes.append(SecurityChange("missing-user", f"User:{p}",
                                                  "no SCRAM credential: create it from your secret store"))
        changes += [SecurityChange("add-acl", a.principal, str(a), a) for a in sorted(want - live)]
        changes += [SecurityChange("remove-acl", a.principal, str(a), a) for a in sorted(live - want)]
        return changes

    def apply(self, catalogue: Catalogue, credentials: CredentialStore | None) -> list[SecurityChange]:
        changes = self.plan(catalogue, credentials)
        users = [c.subject.removeprefix("User:") for c in changes if c.action == "add-user"]
        if users and credentials is not None:
            upserts = [UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                                                    credentials.ensure(u).get_secret_value().encode()) for u in users]
            self._wait(self.admin.alter_user_scram_credentials(upserts), "create SCRAM users")
        add = [_binding(c.acl) for c in changes if c.action == "add-acl" and c.acl]
        if add:
            self._wait(self.admin.create_acls(add), "create ACLs")
        stale = {c.acl for c in changes if c.action == "remove-acl" and c.acl}
        if stale:
            _, raw = self.acls(catalogue)
            filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                                        b.permission_type) for b in raw if _from_binding(b) in stale]
            self._wait(self.admin.delete_acls(filters), "delete ACLs")
        if users or add or stale:
            self._await_propagation(catalogue, credentials)
        return changes

    def _await_propagation(self, catalogue: Catalogue, credentials: CredentialStore | None, timeout: float = 30.0) -> None:
        """The authorizer and the SCRAM cache follow the metadata log asynchronously (a few hundred
        ms here): return once the broker answers with what was applied, so the next client of a
        new principal is not refused."""
        deadline = time.monotonic() + timeout
        while pending := [c for c in self.plan(catalogue, credentials) if c.action != "missing-user"]:
            if time.monotonic() > deadline:
                raise ClusterError(f"the cluster still lacks {len(pending)} principal/ACL changes after {timeout:.0f}s: {pending[0]}")
            time.sleep(0.1)  # polled: the broker offers no signal for its metadata cache

    def delete_users(self, users: list[str]) -> None:
        """Delete the SCRAM credentials of `users` (a structure that left): it cannot sign in again."""
        present = self.users()
        gone = [UserScramCredentialDeletion(u, ScramMechanism.SCRAM_SHA_512) for u in users if u in present]
        if gone:
            self._wait(self.admin.alter_user_scram_credentials(gone), "delete SCRAM users")
        deadline = time.monotonic() + 30
        while set(users) & self.users():
            if time.monotonic() > deadline:
                raise ClusterError(f"the cluster still knows {sorted(set(users) & self.users())} after 30s")
            time.sleep(0.1)  # polled: the broker offers no signal for its metadata cache

    @staticmethod
    def _wait(futures: dict[Any, Any], what: str) -> None:
        for f in futures.values():
            try:
                f.result(timeout=30)
            except KafkaException as exc:
                raise ClusterError(f"{what}: {exc.args[0]}") from None


async def plan(catalogue: Catalogue, kafka: KafkaAccess, credentials: CredentialStore | None) -> list[SecurityChange]:
    return await asyncio.to_thread(SecurityAdmin(kafka).plan, catalogue, credentials)


async def apply(catalogue: Catalogue, kafka: KafkaAccess, credentials: CredentialStore | None) -> list[SecurityChange]:
    return await asyncio.to_thread(SecurityAdmin(kafka).apply, catalogue, credentials)


async def delete_users(kafka: KafkaAccess, users: list[str]) -> None:
    await asyncio.to_thread(SecurityAdmin(kafka).delete_users, users)
