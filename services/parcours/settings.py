"""Runtime settings, read once from PARCOURS_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of every command; the one reader of the environment (`PARCOURS_*`)."""

    model_config = SettingsConfigDict(env_prefix="PARCOURS_", extra="ignore")

    #: the folder holding `schemas/` and `topics/` (default: found above the package, else the
    #: current folder; the image sets it)
    root: Path | None = None
    #: the structure registry (default: topics/structures.yaml)
    registry: Path | None = None
    #: the kind policy (default: topics/policy.yaml; tests shorten the deadlines with another)
    policy: Path | None = None

    #: an external cluster; when empty the embedded broker's state file is used
    kafka_bootstrap: str = ""
    #: PLAINTEXT, SASL_PLAINTEXT or SASL_SSL for an external cluster (the embedded broker says its own)
    kafka_security_protocol: str = ""
    #: this process's Kafka principal and secret, from the platform's secret store (production);
    #: when unset, the principal of the service is used with its secret from `credentials_file`
    kafka_username: str = ""
    kafka_password: SecretStr | None = None
    #: the CA certificate that signed the brokers' (SASL_SSL)
    kafka_ca_file: str = ""
    #: the development credential store (JSON, 0600); default: the embedded broker's
    credentials_file: Path | None = None
    profile: Literal["dev", "production"] = "dev"
    #: the catalogue profile whose replication factor and min.insync.replicas the topics get
    #: (default: the profile's own); the embedded broker started with 3 nodes sets `production`
    #: for every command and service it serves
    topic_replication: Literal["", "dev", "production"] = ""
    #: folder of the embedded broker (data, logs, state file)
    broker_dir: Path = Path(".parcours/broker")
    #: how many nodes the embedded broker is started with: 1, or 3 (and more) for a replicated
    #: cluster (default: as many as its folder was formatted for, else 1)
    broker_nodes: int | None = None
    #: the embedded broker's client listener speaks SASL_SSL (a CA is made on first start)
    broker_tls: bool = False
    #: local state of the processors (RocksDB); a cache: Kafka's changelog topics are the truth
    state_dir: Path = Path(".parcours/state")
    #: the read models of the adapters and the validator (SQLite, one file per instance); a cache
    #: of Kafka, resumed at its stored positions, deleted at will
    edge_dir: Path = Path(".parcours/edge")
    #: the processor's checkpoint: outputs become visible to readers (read_committed) when the
    #: transaction that carries them commits, so this bounds the event -> view latency from below
    processor_commit_interval_s: float = 1.0
    #: a processor instance's stable name (its transactional id and static group membership): the
    #: same across restarts of one instance, different between instances; default: the host name
    #: and the state folder (in a container platform, the replica's stable name, e.g. its ordinal)
    processor_instance: str | None = None
    #: cache of the broker jars, outside the repository
    cache_dir: Path = Path.home() / ".cache" / "parcours"
    #: prefix of every topic name, so tests can run side by side on one cluster
    topic_prefix: str = "parcours"
    #: where the processor and validator expose /metrics (0.0.0.0 in containers)
    metrics_host: str = "127.0.0.1"
    #: webhook delivery: attempts per notification and the first backoff delay (doubling)
    #: the key that seals webhook secrets on Kafka (any long random string); in the development
    #: profile one is generated into the credential store when unset
    webhook_key: SecretStr | None = None
    #: the key-encryption key that wraps the persons' data keys (any long random string; a KMS
    #: plugs in behind `security.identity.KeyEncryptionKey`); generated into the credential store
    #: in the development profile when unset
    identity_kek: SecretStr | None = None
    #: the key of the person keys (HMAC of a qualified INS, shared by every structure); generated
    #: like the KEK in the development profile
    identity_index_key: SecretStr | None = None
    #: a person's data keys are destroyed after this many days without activity in any of their cases
    identity_retention_days: float = 1095.0
    #: how often each adapter sweeps for persons idle longer than that
    identity_sweep_s: float = 3600.0
    #: requests per second per partner token at the HTTP edge (bursts of twice as many); 429 beyond
    rate_limit_per_s: float = 100.0
    #: may a webhook point into loopback, link-local or private networks? (default: dev profile only)
    webhook_private_networks: bool | None = None
    #: an adapter's public base URL (`{kind}`, `{port}` are filled in): its token endpoint is
    #: `<public_url>/auth/token`, the `aud` a partner's client assertion names
    public_url: str = "http://127.0.0.1:{port}"
    #: the embedded token issuer's signing secret (any long random string, shared by every adapter
    #: instance); in the development profile one is generated into the credential store when unset
    token_key: SecretStr | None = None
    #: other issuer secrets whose tokens are still (or already) accepted, never used to sign: a
    #: rotation of `token_key` without a refused token (a JSON list; see docs/security.md)
    token_keys_accepted: list[SecretStr] = []
    #: an external OpenID issuer whose access tokens the edge accepts instead of the embedded
    #: issuer's (its keys found by discovery); its tokens name the structure in client_id/azp/sub
    oidc_issuer: str = ""
    #: the audience an access token must name (`{prefix}`, `{kind}` are filled in)
    token_audience: str = "urn:parcours:{prefix}:adapter-{kind}"  # noqa: S105 - a name, not a secret
    #: lifetime of the access tokens the embedded issuer signs
    access_token_ttl_s: int = 300
    #: the SHA-256 of the operators' token for the adapters' operator API (`/v1/admin/...`); in the
    #: development profile the token `dev-admin` is accepted when unset
    admin_token_sha256: str = ""
    webhook_attempts: int = 5
    webhook_first_delay_s: float = 0.5

    def masked(self) -> dict[str, str]:
        """What is safe to log at start-up."""
        return {k: str(v) for k, v in self.model_dump().items()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def inherited_environment() -> dict[str, str]:
    """This process's whole environment, for a child process it starts (a service, a tool)."""
    return dict(os.environ)
