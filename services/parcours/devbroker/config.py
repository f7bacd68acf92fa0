"""The `server.properties` of each node of the embedded broker: one node (replication 1), or a
cluster of three or more nodes on loopback (replication factor 3, min ISR 2, a controller quorum of
three voters), both from the same listeners, SASL/SCRAM and ACL settings.

The quorum is static (`controller.quorum.voters`, every node combined broker and controller):
Kafka 4.3's `StorageTool format` also offers a dynamic quorum (KIP-853, `--initial-controllers`
with a directory id per node, to add and remove controllers later), which a fixed local cluster
does not need; with static voters each node is formatted alone and the same way as the single node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from parcours.security.credentials import ADMIN

#: what a cluster of that many nodes replicates: every topic and Kafka's internal ones
REPLICAS = 3
MIN_INSYNC = 2


@dataclass(frozen=True)
class NodePorts:
    node_id: int
    port: int  # the client listener (SASL)
    controller_port: int  # the KRaft controller listener (PLAINTEXT, loopback)


@dataclass(frozen=True)
class Security:
    """The client listener's protocol and what the broker proves and trusts on it."""

    admin_secret: str
    protocol: str = "SASL_PLAINTEXT"
    broker_pem: Path | None = None
    cafile: str | None = None


def voters(nodes: list[NodePorts]) -> str:
    return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)


def server_properties(node: NodePorts, cluster: list[NodePorts], data: Path, sec: Security) -> str:
    """The properties of `node`, one of `cluster` (all its nodes, `node` included)."""
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    protocol = sec.protocol
    tls = "" if sec.broker_pem is None else f"""ssl.keystore.type=PEM
ssl.keystore.location={sec.broker_pem}
ssl.truststore.type=PEM
ssl.truststore.location={sec.cafile}
ssl.endpoint.identification.algorithm=https
"""
    return f"""# written by parcours; {_shape(cluster)} for development and tests
process.roles=broker,controller
node.id={node.node_id}
listeners={protocol}://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners={protocol}://127.0.0.1:{node.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map={protocol}:{protocol},CONTROLLER:PLAINTEXT
inter.broker.listener.name={protocol}
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.{protocol.lower()}.scram-sha-512.sasl.jaas.config={scram} required username="{ADMIN}" password="{sec.admin_secret}";
{tls}authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
# User:ANONYMOUS is the controller listener's (loopback, internal); no client listener is anonymous
super.users=User:{ADMIN};User:ANONYMOUS
allow.everyone.if.no.acl.found=false
controller.quorum.voters={voters(cluster)}
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=2
share.coordinator.state.topic.num.partitions=1
{_replication(len(cluster))}# how often the coordinator looks for transactions past their timeout (Kafka's default: 10 s);
# a dead processor's transaction is aborted at most this long after the timeout
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
log.retention.check.interval.ms=60000
"""


def _shape(cluster: list[NodePorts]) -> str:
    return "single-node KRaft broker" if len(cluster) == 1 else f"node of a {len(cluster)}-node KRaft cluster"


def _replication(nodes: int) -> str:
    """Kafka's internal topics (group offsets, transaction state, share state) and its defaults
    replicated as the catalogue's topics are: set on every node before its first start."""
    rf, isr = (1, 1) if nodes == 1 else (REPLICAS, MIN_INSYNC)
    out = "".join(f"{key}={rf}\n" for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                                               "share.coordinator.state.topic.replication.factor", "default.replication.factor"))
    out += "".join(f"{key}={isr}\n" for key in ("transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr",
                                                "min.insync.replicas"))
    if nodes > 1:
        # a node lost is fenced (and dropped from every ISR, so acks=all writes go on with the
        # others) after its session expires: 6 s here instead of Kafka's 9 s, heartbeats every
        # second; a follower that stops fetching leaves the ISR after 10 s instead of 30 s
        out += ("broker.session.timeout.ms=6000\nbroker.heartbeat.interval.ms=1000\nreplica.lag.time.max.ms=10000\n"
                # a clean stop hands each partition's leadership over before the node goes
                "controlled.shutdown.enable=true\n")
    return out
