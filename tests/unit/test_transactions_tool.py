"""`parcours broker repair`'s reading of Kafka's TransactionsCommand output and its client settings."""

from __future__ import annotations

from pydantic import SecretStr

from parcours.bus.kafkaio import KafkaAccess
from parcours.ops.transactions import Hanging, java_properties, parse_hanging, preparing

FIND_HANGING = (
    "Topic                 \tPartition\tProducerId\tProducerEpoch\tCoordinatorEpoch\tStartOffset\tLastTimestamp\tDuration(min)\t\n"
    "k1.views.dac-31       \t0        \t4         \t0            \t0               \t8          \t1796013657688\t9            \t\n"
    "__consumer_offsets    \t3        \t4         \t0            \t0               \t16         \t1796013657740\t9            \t\n"
)


def test_the_hanging_partitions_are_read_from_the_tools_table() -> None:
    assert parse_hanging(FIND_HANGING) == [Hanging("k1.views.dac-31", 0, 4, 8), Hanging("__consumer_offsets", 3, 4, 16)]
    assert parse_hanging(FIND_HANGING.splitlines()[0]) == []  # the header alone: nothing hangs
    assert str(Hanging("t", 1, 4, 8)) == "t-1 (producer 4, from offset 8)"


def test_a_coordinator_still_writing_markers_is_waited_for() -> None:
    listed = ("TransactionalId   \tCoordinator\tProducerId\tTransactionState\t\n"
              "p-processor-a     \t1          \t4         \tPrepareCommit   \t\n"
              "p-processor-b     \t1          \t5         \tCompleteCommit  \t\n")
    assert preparing(listed) == ["p-processor-a"]
    assert preparing(listed.replace("PrepareCommit", "Empty")) == []


def test_the_java_client_connects_as_the_principal_with_scram_and_the_ca() -> None:
    kafka = KafkaAccess("127.0.0.1:9092", "SASL_SSL", "admin", SecretStr("s3cret"), cafile="/etc/parcours/ca.pem")
    props = java_properties(kafka)
    assert "security.protocol=SASL_SSL\n" in props
    assert "sasl.mechanism=SCRAM-SHA-512\n" in props
    assert 'ScramLoginModule required username="admin" password="s3cret";' in props
    assert "ssl.truststore.type=PEM\nssl.truststore.location=/etc/parcours/ca.pem\n" in props
    assert java_properties(KafkaAccess("127.0.0.1:9092")) == "security.protocol=PLAINTEXT\n"
