"""Consumer groups and idempotent producers with real clients: librdkafka (confluent-kafka)
and kafka-python. A group of three over six partitions consumes every message exactly once,
rebalances when a member leaves (eagerly, and incrementally with cooperative-sticky), and resumes
from its committed offsets after the consumers and the broker restart (SIGTERM and SIGKILL)."""

from __future__ import annotations

import signal
import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from weir_harness import group_consumer_config  # noqa: E402

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def create_topic(broker, name, partitions):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def produce(broker, topic, values, idempotent=True, codec="none"):
    p = ck.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "enable.idempotence": idempotent,
            "compression.type": codec,
            "linger.ms": 5,
        }
    )
    errors = []
    offsets = []

    def delivered(err, msg):
        if err:
            errors.append(err)
        else:
            offsets.append((msg.partition(), msg.offset()))

    for v in values:
        p.produce(topic, key=v, value=v, on_delivery=delivered)
        p.poll(0)
    assert p.flush(60) == 0, "messages left undelivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    return offsets


def group_consumer(broker, group, client_id):
    return ck.Consumer(group_consumer_config(broker.bootstrap, group, client_id))


def consume_round_robin(consumers, want, seen, timeout):
    """Poll every consumer in turn, committing each message synchronously, until `want`
    values were seen in total. `seen` maps value -> list of consumer indexes that got it."""
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in seen.values()) < want and time.monotonic() < deadline:
        for i, c in enumerate(consumers):
            m = c.poll(0.1)
            if m is None:
                continue
            assert not m.error(), f"consumer {i}: {m.error()}"
            seen.setdefault(m.value().decode(), []).append(i)
            c.commit(message=m, asynchronous=False)
    return seen


def wait_assignment(consumers, expected, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in consumers:
            c.poll(0.1)
        sizes = sorted(len(c.assignment()) for c in consumers)
        if sizes == expected:
            return
    raise AssertionError(f"assignment sizes {sorted(len(c.assignment()) for c in consumers)}, wanted {expected}")


@pytest.mark.parametrize("codec", CODECS)
def test_idempotent_producer_every_codec(broker, topic_name, codec):
    values = [str(i).encode() for i in range(2000)]
    offsets = produce(broker, topic_name, values, idempotent=True, codec=codec)
    assert sorted(o for _, o in offsets) == list(range(2000))
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 2000 and time.monotonic() < deadline:
            for m in c.consume(500, 1.0):
                assert not m.error(), m.error()
                got.append(m.value())
        assert got == values, "every message once, in order"
    finally:
        c.close()


def test_group_of_three_exactly_once_and_rebalance_when_one_leaves(broker, topic_name):
    create_topic(broker, topic_name, 6)
    first = [f"a{i}".encode() for i in range(3000)]
    produce(broker, topic_name, first)
    group = f"g-{topic_name}"
    consumers = [group_consumer(broker, group, f"c{i}") for i in range(3)]
    try:
        for c in consumers:
            c.subscribe([topic_name])
        seen = consume_round_robin(consumers, 3000, {}, timeout=60)
        assert len(seen) == 3000, f"consumed {len(seen)} distinct of 3000"
        dups = {v: who for v, who in seen.items() if len(who) > 1}
        assert not dups, f"{len(dups)} messages consumed more than once"
        wait_assignment(consumers, [2, 2, 2])

        # One member leaves: the other two take over its partitions.
        consumers.pop().close()
        wait_assignment(consumers, [3, 3])
        second = [f"b{i}".encode() for i in range(600)]
        produce(broker, topic_name, second)
        seen2 = consume_round_robin(consumers, 600, {}, timeout=60)
        assert set(seen2) == {v.decode() for v in second}, "every new message after the rebalance"
        assert all(len(w) == 1 for w in seen2.values()), "no message twice after the rebalance"
    finally:
        for c in consumers:
            c.close()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_group_resumes_from_committed_offsets_after_broker_restart(fresh_broker, topic_name, how):
    create_topic(fresh_broker, topic_name, 6)
    values = [f"m{i}".encode() for i in range(3000)]
    produce(fresh_broker, topic_name, values)
    group = f"g-{topic_name}"
    consumers = [group_consumer(fresh_broker, group, f"c{i}") for i in range(3)]
    for c in consumers:
        c.subscribe([topic_name])
    seen = consume_round_robin(consumers, 1500, {}, timeout=60)
    for c in consumers:
        c.close()
    consumed_before = set(seen)
    assert len(consumed_before) >= 1500

    fresh_broker.stop(how)
    fresh_broker.start()

    consumers = [group_consumer(fresh_broker, group, f"d{i}") for i in range(3)]
    try:
        for c in consumers:
            c.subscribe([topic_name])
        rest = consume_round_robin(consumers, 3000 - len(consumed_before), {}, timeout=90)
        again = consumed_before & set(rest)
        assert not again, f"{len(again)} committed messages delivered again, e.g. {sorted(again)[:5]}"
        assert consumed_before | set(rest) == {v.decode() for v in values}, "no message lost"
        assert all(len(w) == 1 for w in rest.values())
    finally:
        for c in consumers:
            c.close()


def test_kafka_python_group(broker, topic_name):
    kafka = pytest.importorskip("kafka")
    create_topic(broker, topic_name, 3)
    p = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for i in range(300):
        p.send(topic_name, f"k{i}".encode())
    p.flush(30)
    p.close()
    group = f"kp-{topic_name}"

    def consumer():
        return kafka.KafkaConsumer(
            topic_name,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=8000,
        )

    c = consumer()
    got = [m.value for m in c]
    c.commit()
    c.close()
    assert sorted(got) == sorted(f"k{i}".encode() for i in range(300))
    # The same group starts after its commit: nothing left.
    c = consumer()
    assert [m.value for m in c] == []
    c.close()


def test_cooperative_sticky_members_keep_their_partitions_through_rebalances(broker, topic_name):
    """librdkafka's incremental cooperative rebalancing (KIP-429, `cooperative-sticky`; Kafka
    Streams rebalances the same way): members keep consuming the partitions they keep while
    others join and leave, each rebalance revoking only what moves, and nothing is read twice
    or lost across them. The broker relays the members' own protocol; the rounds of JoinGroup
    and SyncGroup it takes are what this checks."""
    create_topic(broker, topic_name, 6)
    group = f"g-{topic_name}"
    events: list[list[tuple[str, list[int]]]] = [[], [], []]

    def member(i):
        c = ck.Consumer(group_consumer_config(broker.bootstrap, group, f"coop{i}",
                                              **{"partition.assignment.strategy": "cooperative-sticky"}))  # fmt: skip
        c.subscribe(
            [topic_name],
            on_assign=lambda _c, parts: events[i].append(("assign", sorted(p.partition for p in parts))),
            on_revoke=lambda _c, parts: events[i].append(("revoke", sorted(p.partition for p in parts))),
        )
        return c

    def owned(c):
        return {p.partition for p in c.assignment()}

    consumers = [member(0)]
    try:
        produce(broker, topic_name, [f"a{i}".encode() for i in range(600)])
        seen = consume_round_robin(consumers, 600, {}, timeout=60)
        assert owned(consumers[0]) == set(range(6))

        consumers.append(member(1))
        wait_assignment(consumers, [3, 3])
        kept = owned(consumers[0])
        assert events[0][0] == ("assign", list(range(6)))
        # Incremental: member 0 gave up only the three partitions member 1 now has.
        assert ("revoke", sorted(owned(consumers[1]))) in events[0], events[0]
        assert ("revoke", list(range(6))) not in events[0], f"an eager revocation of everything: {events[0]}"

        consumers.append(member(2))
        wait_assignment(consumers, [2, 2, 2])
        assert owned(consumers[0]) <= kept, "member 0 only gave partitions away"
        produce(broker, topic_name, [f"b{i}".encode() for i in range(600)])
        seen = consume_round_robin(consumers, 1200, seen, timeout=60)

        consumers.pop(1).close()
        wait_assignment(consumers, [3, 3])
        produce(broker, topic_name, [f"c{i}".encode() for i in range(600)])
        seen = consume_round_robin(consumers, 1800, seen, timeout=60)
        assert len(seen) == 1800, f"consumed {len(seen)} distinct of 1800"
        dups = {v: who for v, who in seen.items() if len(who) > 1}
        assert not dups, f"{len(dups)} messages consumed more than once, e.g. {list(dups.items())[:3]}"
        for i in (0, 2):
            assert all(kind != "revoke" or len(parts) < 6 for kind, parts in events[i]), events[i]
    finally:
        for c in consumers:
            c.close()
