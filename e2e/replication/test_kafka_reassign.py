"""Kafka's reassignment APIs (KIP-455: AlterPartitionReassignments, ListPartitionReassignments,
what `kafka-reassign-partitions` sends), driven by kafka-python's admin client: a partition on
broker 0 moves to brokers 1 and 2 with its records; a move slowed by the reassignment
throttle is listed while it runs (replica set, adding, removing) and cancelled back to the old
replica; bad requests are answered per partition (NO_REASSIGNMENT_IN_PROGRESS,
UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT) and change nothing; a v1 request that
forbids changing the replication factor (KIP-860) is held to it."""

from __future__ import annotations

import pytest

kafka = pytest.importorskip("kafka")
ck = pytest.importorskip("confluent_kafka")

from kafka import errors as Errors  # noqa: E402
from kafka.admin import KafkaAdminClient  # noqa: E402
from kafka.structs import TopicPartition  # noqa: E402
from test_min_isr import consume_all, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402

MESSAGES = 2_000
VALUE = b"r" * 1_000


def test_kafka_reassignment_apis_move_list_and_cancel(cluster):
    topic = "kmove"
    http = cluster.brokers[0]
    http.http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0]]})
    cluster.wait_isr(topic, 0, 1)
    assert all(e is None for e, _ in produce(cluster.bootstrap, topic, [VALUE] * MESSAGES, acks="1"))
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        # Refusals, per partition; nothing changes.
        assert admin.alter_partition_reassignments({tp: None}) == {tp: Errors.NoReassignmentInProgressError}
        bad = TopicPartition(topic, 5)
        assert admin.alter_partition_reassignments({bad: [1]}) == {bad: Errors.UnknownTopicOrPartitionError}
        assert admin.alter_partition_reassignments({tp: [0, 9]}) == {tp: Errors.InvalidReplicationAssignmentError}
        assert cluster.partitions(topic)[0]["replicas"] == [0]
        assert admin.list_partition_reassignments() == {}

        # A move held back by the throttle (2 MB at 100 kB/s) is listed, then cancelled.
        http.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 100_000})
        assert admin.alter_partition_reassignments({tp: [1, 2]}) == {tp: None}
        listed = admin.list_partition_reassignments()
        assert listed == {tp: {"replicas": [1, 2, 0], "adding_replicas": [1, 2], "removing_replicas": [0]}}, listed
        assert admin.list_partition_reassignments([TopicPartition("other", 0)]) == {}
        assert admin.alter_partition_reassignments({tp: None}) == {tp: None}
        assert admin.list_partition_reassignments() == {}
        wait_until(lambda: cluster.partitions(topic)[0]["replicas"] == [0], 10, what="the cancel applied")

        # Unthrottled, the same move completes and the records are all there.
        http.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 0})
        assert admin.alter_partition_reassignments({tp: [1, 2]}) == {tp: None}
        wait_until(lambda: admin.list_partition_reassignments() == {}, 60, what="the move completed")
        p = wait_until(lambda: (lambda q: q if q["replicas"] == [1, 2] else None)(cluster.partitions(topic)[0]), 10,
                       what="replicas [1, 2]")  # fmt: skip
        assert sorted(p["isr"]) == [1, 2] and p["leader"] == 1
        got = consume_all(cluster.bootstrap, topic, 0, MESSAGES)
        assert [o for o, _ in got] == list(range(MESSAGES)) and all(v == VALUE for _, v in got)
    finally:
        admin.close()


def test_a_v1_request_can_forbid_changing_the_replication_factor(cluster):
    """AlterPartitionReassignments v1 (KIP-860) with allow_replication_factor_change=false,
    sent as kafka-python encodes it: a target of another size is refused per partition with
    INVALID_REPLICATION_FACTOR and changes nothing; a move of the same size goes ahead."""
    # kafka-python 3's client under its admin, producer and consumer (no public name).
    from kafka.net.compat import KafkaNetClient
    from kafka.protocol.admin import AlterPartitionReassignmentsRequest

    topic = "krf"
    cluster.brokers[0].http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0]]})
    cluster.wait_isr(topic, 0, 1)
    client = KafkaNetClient(bootstrap_servers=cluster.bootstrap)
    client.check_version()  # bootstraps: broker ids become known
    topic_cls = AlterPartitionReassignmentsRequest.ReassignableTopic
    partition_cls = topic_cls.ReassignablePartition

    def send(replicas):
        req = AlterPartitionReassignmentsRequest(
            timeout_ms=10_000, allow_replication_factor_change=False, min_version=1,
            topics=[topic_cls(name=topic, partitions=[partition_cls(partition_index=0, replicas=replicas)])])  # fmt: skip
        resp = client.send_and_receive(0, req, timeout_ms=10_000)
        assert resp.API_VERSION == 1 and resp.allow_replication_factor_change is False, resp
        return resp.responses[0].partitions[0]

    try:
        refused = send([1, 2])
        assert Errors.for_code(refused.error_code) is Errors.InvalidReplicationFactorError, refused
        assert "replication factor" in refused.error_message
        assert cluster.partitions(topic)[0]["replicas"] == [0]
        assert send([1]).error_code == 0
        wait_until(lambda: cluster.partitions(topic)[0]["replicas"] == [1], 60, what="the move to broker 1")
    finally:
        client.close()
