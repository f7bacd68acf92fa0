"""The ids every cache's lineage is made of, read from the broker with Kafka's Metadata v12: the
same text librdkafka gives (lineages recorded before stay valid), a missing topic left out, a new
id for a topic created again, and the broker's answer to a principal not allowed to see a topic."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import KafkaAccess
from parcours.bus.lineage import describe, live_lineage
from parcours.bus.topicids import topic_ids
from parcours.security.cluster import SCRAM_ITERATIONS
from tests.stack import delete_topics, eventually


async def _create(kafka: KafkaAccess, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 1, 1) for n in names])
    finally:
        await admin.close()


def _librdkafka_ids(kafka: KafkaAccess, names: list[str]) -> tuple[str, dict[str, str]]:
    admin = AdminClient(kafka.librdkafka())
    cluster = admin.describe_cluster(request_timeout=15).result(timeout=20)
    described = admin.describe_topics(TopicCollection(names), request_timeout=15)
    return str(cluster.cluster_id), {n: str(f.result(timeout=20).topic_id) for n, f in described.items()}


async def test_topic_ids_are_those_librdkafka_reads_and_change_when_a_topic_is_created_again(kafka: KafkaAccess, prefix: str) -> None:
    names = [f"{prefix}.ids-a", f"{prefix}.ids-b"]
    await _create(kafka, names)
    cluster_id, ids = await topic_ids(kafka, [*names, f"{prefix}.never-created"])
    assert (cluster_id, ids) == await asyncio.to_thread(_librdkafka_ids, kafka, names)
    assert await asyncio.to_thread(describe, kafka, names) == await live_lineage(kafka, names)

    await delete_topics(kafka, names[:1])
    assert set((await topic_ids(kafka, names))[1]) == {names[1]}

    async def created_again() -> bool:
        try:
            await _create(kafka, names[:1])
        except Exception:  # the deletion still finishing on the broker  # noqa: BLE001
            return False
        return True
    await eventually(created_again, 30, "topic created again")
    _, again = await topic_ids(kafka, names)
    assert again[names[1]] == ids[names[1]]
    assert again[names[0]] not in ("", ids[names[0]])


def _user_without_acls(kafka: KafkaAccess, name: str, secret: str) -> KafkaAccess:
    """A principal of the cluster granted nothing."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    admin = AdminClient(kafka.librdkafka())
    upsert = UserScramCredentialUpsertion(name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), secret.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=20)
    return kafka.as_user(name, secret)


async def test_a_principal_not_allowed_to_see_a_topic_gets_a_cluster_error_naming_the_refusal(kafka: KafkaAccess, prefix: str) -> None:
    name = f"{prefix}.ids-hidden"
    await _create(kafka, [name])
    stranger = await asyncio.to_thread(_user_without_acls, kafka, f"{prefix}-stranger", "a-secret-of-the-test")
    refusals: list[str] = []

    async def refused() -> bool:  # the new credential reaches the listener a moment after it is stored
        try:
            await topic_ids(stranger, [name])
        except ClusterError as exc:
            refusals.append(str(exc))
            return "TopicAuthorizationFailed" in str(exc)
        raise AssertionError("a topic's id was given to a principal with no ACL")
    await eventually(refused, 30, "the stranger refused the topic")
