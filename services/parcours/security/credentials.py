"""Secrets of the Kafka principals, for the development profile: one JSON file, mode 0600, kept
beside the embedded broker's data (outside the repository, never logged). In production the
secrets come from the platform's secret store as `PARCOURS_KAFKA_USERNAME`/`_PASSWORD`.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from parcours.security.errors import CredentialError

#: the broker's super user: creates topics, principals and ACLs; nothing else runs as it
ADMIN = "admin"


class CredentialStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CredentialError(f"cannot read the credential store {self.path}: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise CredentialError(f"the credential store {self.path} is not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def _write(self, data: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def has(self, principal: str) -> bool:
        return principal in self._read()

    def principals(self) -> list[str]:
        return sorted(self._read())

    def secret(self, principal: str) -> SecretStr:
        value = self._read().get(principal)
        if value is None:
            raise CredentialError(f"no secret for principal {principal!r} in {self.path}: run `parcours topics apply`")
        return SecretStr(value)

    def ensure(self, principal: str) -> SecretStr:
        """The principal's secret, generated (256 bits) on first use. Services starting together
        generate under a lock: every process gets the one secret written first (a development
        key-encryption key must be the same in every adapter)."""
        data = self._read()
        if principal in data:
            return SecretStr(data[principal])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read()
            if principal not in data:
                data[principal] = secrets.token_urlsafe(32)
                self._write(data)
        finally:
            os.close(fd)  # closing releases the lock
        return SecretStr(data[principal])
