"""A broker whose metadata quorum has lost its majority keeps answering the requests it can
answer: a request that needs a topic created (Metadata auto-creating one, the first
FindCoordinator creating `__consumer_offsets`) gets a retriable error within about a second, as
from Kafka, instead of holding its connection until the proposal's 15 s deadline, and with it
the requests a client sent behind it on that connection. Seen with confluent-kafka: a consumer's
ListOffsets to the partition's leader waited behind its FindCoordinator while the two other
brokers were SIGSTOPped (the rare failure of test_list_offsets.py). Here they are SIGKILLed."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError, TopicPartition  # noqa: E402

from test_min_isr import create, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402


@pytest.mark.cluster_args(session_timeout_ms=60_000, lag_time_max_ms=60_000)
def test_a_broker_without_its_quorum_answers_creations_at_once_and_serves_what_it_leads(cluster):
    topic = "no-quorum"
    create(cluster, topic)
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"a", b"b"])] == [None, None]
    leader = cluster.partitions(topic)[0]["leader"]
    others = [i for i in range(3) if i != leader]
    bootstrap = cluster.brokers[leader].bootstrap
    producer = ck.Producer({"bootstrap.servers": bootstrap})
    producer.list_topics(topic, timeout=10)
    # Killed, not SIGSTOPped: librdkafka sends a metadata request to any broker it is connected
    # to, and one that is stopped would never answer it (a refused connection sends the client
    # elsewhere). The long session keeps them registered, so nothing else changes.
    for i in others:
        cluster.brokers[i].kill()
    consumer = None
    try:
        # The quorum (three voters) has one member left: nothing can be created.
        started = time.monotonic()
        md = producer.list_topics("made-by-metadata", timeout=10)
        took = time.monotonic() - started
        assert took < 5, f"the auto-creating Metadata request took {took:.1f} s"
        err = md.topics["made-by-metadata"].error
        assert err is not None and err.code() == KafkaError.LEADER_NOT_AVAILABLE, err

        # The consumer's FindCoordinator (no `__consumer_offsets` yet) and its ListOffsets go to
        # the one broker that answers, on one connection.
        consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "no-quorum", "enable.auto.commit": False})
        tp = TopicPartition(topic, 0)
        for _ in range(4):
            started = time.monotonic()
            assert consumer.get_watermark_offsets(tp, timeout=8, cached=False) == (0, 2)
            took = time.monotonic() - started
            assert took < 3, f"a ListOffsets to the leader took {took:.1f} s"
            time.sleep(0.7)
    finally:
        for i in others:
            cluster.restart(i)

    # With the quorum back, the creations go through and the group gets its coordinator.
    wait_until(
        lambda: producer.list_topics("made-by-metadata", timeout=10).topics["made-by-metadata"].error is None,
        30,
        what="the auto-created topic",
    )

    def committed():
        try:
            consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
        except ck.KafkaException as e:
            assert e.args[0].retriable(), e
            return False
        return True

    wait_until(committed, 30, what="a commit through the group's coordinator")
    (got,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    assert got.offset == 1
    consumer.close()
