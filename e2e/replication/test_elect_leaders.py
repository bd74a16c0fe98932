"""Kafka's ElectLeaders API (what `kafka-leader-election` and AdminClient.elect_leaders send),
driven by confluent-kafka (librdkafka): after the first replica of a partition was killed and
came back, a preferred election gives it leadership back; asking again answers
ELECTION_NOT_NEEDED, an unknown partition UNKNOWN_TOPIC_OR_PARTITION, and an unclean election
of a partition that has a leader ELECTION_NOT_NEEDED. A partition whose only replica is down
gets no leader from an unclean election (ELIGIBLE_LEADERS_NOT_AVAILABLE): Weir never elects
outside the ISR."""

from __future__ import annotations

import pytest

ck = pytest.importorskip("confluent_kafka")

from confluent_kafka import KafkaError, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from test_min_isr import consume_all, create, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402

ElectionType = pytest.importorskip("confluent_kafka").ElectionType


def elect(admin, election_type, partitions):
    # No timeout keywords: confluent-kafka 2.16's binding raises SystemError on them.
    return admin.elect_leaders(election_type, partitions).result(40)


def code(result):
    """The KafkaError code of one partition's answer (None: elected)."""
    if result is None:
        return None
    err = result.args[0] if isinstance(result, ck.KafkaException) else result
    return err.code()


def test_elect_leaders_moves_leadership_back_to_the_preferred_replica(cluster):
    topic = "elect"
    create(cluster, topic, partitions=2, config={"min.insync.replicas": "2"})
    p = cluster.partitions(topic)[0]
    preferred = p["replicas"][0]
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"one"])] == [None]

    cluster.brokers[preferred].kill()
    wait_until(lambda: cluster.partitions(topic)[0]["leader"] not in (None, preferred), 30,
               what="leadership moved off the preferred replica")  # fmt: skip
    cluster.restart(preferred)
    cluster.wait_isr(topic, 0, 3)
    before = cluster.partitions(topic)[0]
    assert before["leader"] != preferred

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    tp = TopicPartition(topic, 0)
    got = elect(admin, ElectionType.PREFERRED, [tp])
    assert list(got) == [tp] and code(got[tp]) is None, got
    # The answering broker applied the change; the one the harness asks may be a moment behind.
    after = wait_until(lambda: (lambda q: q if q["leader"] == preferred else None)(cluster.partitions(topic)[0]), 10,
                       what="the preferred replica leading")  # fmt: skip
    assert after["leader_epoch"] > before["leader_epoch"]

    # Again: nothing to do. A partition that does not exist: refused by name.
    got = elect(admin, ElectionType.PREFERRED, [tp, TopicPartition(topic, 7)])
    assert code(got[tp]) == KafkaError.ELECTION_NOT_NEEDED, got
    assert code(got[TopicPartition(topic, 7)]) == KafkaError.UNKNOWN_TOPIC_OR_PART, got
    # Unclean: every partition has a leader, so none is needed.
    got = elect(admin, ElectionType.UNCLEAN, [tp])
    assert code(got[tp]) == KafkaError.ELECTION_NOT_NEEDED, got
    # All partitions (None): partition 1 too, whose leader may also have moved with the kill.
    got = elect(admin, ElectionType.PREFERRED, None)
    mine = {k.partition: code(v) for k, v in got.items() if k.topic == topic}
    assert mine[0] == KafkaError.ELECTION_NOT_NEEDED and mine[1] in (None, KafkaError.ELECTION_NOT_NEEDED), got
    wait_until(lambda: all(q["leader"] == q["replicas"][0] for q in cluster.partitions(topic)), 10,
               what="both partitions led by their preferred replica")  # fmt: skip
    got = elect(admin, ElectionType.PREFERRED, None)
    assert {k.partition: code(v) for k, v in got.items() if k.topic == topic} == {
        0: KafkaError.ELECTION_NOT_NEEDED, 1: KafkaError.ELECTION_NOT_NEEDED}, got

    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"two"])] == [None]
    assert [v for _, v in consume_all(cluster.bootstrap, topic, 0, 2)] == [b"one", b"two"]


def test_a_leaderless_partition_gets_no_unclean_leader(cluster):
    """Replication factor 1 on a broker that is down: no leader. An unclean election would
    pick a replica outside the ISR; Weir has none to offer and never does that anyway."""
    topic = "elect-alone"
    cluster.brokers[0].http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[2]]})
    cluster.wait_isr(topic, 0, 1)
    cluster.brokers[2].kill()
    wait_until(lambda: cluster.partitions(topic)[0]["leader"] is None, 30, what="the partition without a leader")
    admin = AdminClient({"bootstrap.servers": cluster.brokers[0].bootstrap})
    tp = TopicPartition(topic, 0)
    got = elect(admin, ElectionType.UNCLEAN, [tp])
    assert code(got[tp]) == KafkaError.ELIGIBLE_LEADERS_NOT_AVAILABLE, got
    got = elect(admin, ElectionType.PREFERRED, [tp])
    assert code(got[tp]) == KafkaError.PREFERRED_LEADER_NOT_AVAILABLE, got
    assert cluster.partitions(topic)[0]["leader"] is None
