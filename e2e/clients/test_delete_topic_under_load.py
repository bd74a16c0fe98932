"""Deleting a topic while producers write to it (confluent-kafka).

A produce request may look a partition's log up just before the topic's deletion removes it,
and write after. That write must be refused (the client retries, then learns the topic is
gone), not taken for a failing disk: a broker that marked its data directory failed would
stop, and every other client with it. Tiny segments (`segment.bytes=1024`) make nearly every
append roll, i.e. make files in the partition's directory, so the race shows within a few
rounds: before the fix (ff93af5) the broker stopped in the first round.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from weir_harness import create_topic_ready, unique_name

ROUNDS = 5
WRITERS = 4
DIR_FAILED = "a write to the data directory failed"


def flood(bootstrap: str, topic: str, index: int, stop: threading.Event) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0, "message.timeout.ms": 5000,
                  "allow.auto.create.topics": False, "topic.metadata.refresh.interval.ms": 200})
    while not stop.is_set():
        try:
            p.produce(topic, b"x" * 200, partition=index % 3)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    p.flush(10)


def test_deleting_a_topic_under_produce_load_leaves_the_broker_and_other_topics_alone(fresh_broker, request):
    b = fresh_broker
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    base = unique_name(request.node.name, 40)
    bystander = base + "-kept"
    create_topic_ready(b.bootstrap, bystander)

    # A producer of another topic, acks=all, throughout: every message it sends is delivered.
    kept: list[int] = []
    failures: list[str] = []

    def delivered(err, msg):
        if err is None:
            kept.append(int(msg.value()))
        else:
            failures.append(err.name())

    steady = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5, "message.timeout.ms": 30_000})
    sent = 0

    for r in range(ROUNDS):
        topic = f"{base}-{r}"
        create_topic_ready(b.bootstrap, topic, partitions=3, config={"segment.bytes": "1024"})
        stop = threading.Event()
        writers = [threading.Thread(target=flood, args=(b.bootstrap, topic, i, stop)) for i in range(WRITERS)]
        for w in writers:
            w.start()
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                steady.produce(bystander, str(sent).encode(), on_delivery=delivered)
                sent += 1
                steady.poll(0.005)
            (deleted,) = a.delete_topics([topic], operation_timeout=10).values()
            deleted.result(30)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                steady.produce(bystander, str(sent).encode(), on_delivery=delivered)
                sent += 1
                steady.poll(0.005)
        finally:
            stop.set()
            for w in writers:
                w.join(30)
        assert b.running(), f"round {r}: the broker stopped\n{b.tail(20)}"
        assert DIR_FAILED not in b.log_text(), f"round {r}: the data directory was marked failed\n{b.tail(20)}"

    assert steady.flush(30) == 0
    assert failures == []
    assert sorted(kept) == list(range(sent))
    # Every message of the bystander topic is there, once, in order.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": base, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(bystander, 0, 0)])
        got: list[int] = []
        deadline = time.monotonic() + 60
        while len(got) < sent and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=1.0):
                assert m.error() is None, m.error()
                got.append(int(m.value()))
    finally:
        c.close()
    assert got == list(range(sent))
    # And the deleted topics are gone from the metadata.
    listed = set(a.list_topics(timeout=10).topics)
    assert not {f"{base}-{r}" for r in range(ROUNDS)} & listed
