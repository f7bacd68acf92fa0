"""The cluster's id and the ids of topics, asked with Kafka's Metadata request (version 12) over
aiokafka's connection, encoding and sign-in.

Topic ids appeared in Metadata v10; aiokafka's own Metadata request stops at v5, and librdkafka's
admin client, which has them, aborts the whole process on some answers (librdkafka 2.12:
`rd_kafka_admin_response_parse: Assertion 'rko_result' failed` when a metadata answer lists no
broker and no topic, or carries a top-level error: the metadata parser returns that error
without marking the buffer, and the admin parser then returns neither an error nor a result). A
check made every few seconds by every service must not be able to kill it, so it is made here,
in Python, where a strange answer is an exception.
"""

from __future__ import annotations

import base64
import random
from io import BytesIO
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import AbstractType, Boolean, CompactArray, CompactString, Int16, Int32, Schema, TaggedFields

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import KafkaAccess

METADATA = 3
UNKNOWN_TOPIC_OR_PARTITION = 3
UUID_BYTES = 16
ZERO_UUID = bytes(UUID_BYTES)


class Uuid(AbstractType[bytes]):  # type: ignore[misc]  # aiokafka is untyped here
    """Kafka's UUID on the wire: 16 bytes."""

    @classmethod
    def encode(cls, value: bytes) -> bytes:
        return value

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        value = data.read(UUID_BYTES)
        if len(value) != UUID_BYTES:
            raise ValueError("Buffer underrun decoding a UUID")
        return value


def uuid_text(raw: bytes) -> str:
    """A topic id as librdkafka and the lineages recorded so far write it: base64, no padding."""
    return base64.b64encode(raw).decode().rstrip("=")


class MetadataResponse_v12(Response):  # type: ignore[misc]  # Kafka's message name and version
    API_KEY = METADATA
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", CompactArray(("node_id", Int32), ("host", CompactString("utf-8")), ("port", Int32),
                                 ("rack", CompactString("utf-8")), ("tags", TaggedFields))),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        ("topics", CompactArray(
            ("error_code", Int16), ("name", CompactString("utf-8")), ("topic_id", Uuid), ("is_internal", Boolean),
            ("partitions", CompactArray(
                ("error_code", Int16), ("partition_index", Int32), ("leader_id", Int32), ("leader_epoch", Int32),
                ("replica_nodes", CompactArray(Int32)), ("isr_nodes", CompactArray(Int32)),
                ("offline_replicas", CompactArray(Int32)), ("tags", TaggedFields))),
            ("topic_authorized_operations", Int32), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = METADATA
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        ("topics", CompactArray(("topic_id", Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdsRequest(Request[MetadataRequest_v12]):  # type: ignore[misc]
    """Metadata of `topics` (by name), never creating one."""

    API_KEY = METADATA

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics

    def build(self, request_struct_class: type[MetadataRequest_v12]) -> MetadataRequest_v12:
        return request_struct_class([(ZERO_UUID, name, {}) for name in self.topics], False, False, {})


def read_answer(answer: Any, asked: list[str]) -> tuple[str, dict[str, str]]:
    """The cluster's id and the id of each asked topic that exists, in a Metadata v12 answer; any
    other error of a topic (not authorized, its leader moving) is a ClusterError caused by
    Kafka's error."""
    found: dict[str, str] = {}
    for error_code, name, topic_id, *_ in answer.topics:
        if error_code == UNKNOWN_TOPIC_OR_PARTITION:
            continue
        if error_code:  # its cause says whether to ask again (a leader moving) or not (not authorized)
            raise ClusterError(f"describing topic {name}: {for_code(error_code).__name__}") from for_code(error_code)()
        if name in asked:
            found[name] = uuid_text(topic_id)
    if not answer.cluster_id:
        raise ClusterError("the cluster did not say its id")
    return answer.cluster_id, found


async def topic_ids(kafka: KafkaAccess, topics: list[str], timeout_s: float = 15.0) -> tuple[str, dict[str, str]]:
    """The cluster's id and the ids of those of `topics` that exist, asked of one node that
    answers (nodes are tried in random order: one of a cluster may be down)."""
    client = AIOKafkaClient(**kafka.aiokafka(), request_timeout_ms=int(timeout_s * 1000), metadata_max_age_ms=60_000)
    try:
        await client.bootstrap()
        nodes = [b.nodeId for b in client.cluster.brokers()]
        random.shuffle(nodes)
        last: Exception = ClusterError("the cluster named no node")
        for node in nodes:
            try:
                return read_answer(await client.send(node, TopicIdsRequest(list(topics))), list(topics))
            except KafkaError as exc:
                last = exc
        raise last
    except KafkaError as exc:
        raise ClusterError(f"describing the cluster and {len(topics)} topics: {exc}") from exc
    finally:
        await client.close()
