"""Durability across restarts: acknowledged (acks=all) messages survive a SIGKILL of the broker
exactly once and in order, and a clean SIGTERM shutdown (exit 0) keeps them too."""

from __future__ import annotations

import signal
import threading
import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicPartition  # noqa: E402

from weir_harness import create_topic_ready, kcat  # noqa: E402

PARTITIONS = 3
FIRST = 10_000


def producer(broker):
    return ck.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "linger.ms": 5,
            "batch.num.messages": 500,
            "message.timeout.ms": 30_000,
        }
    )


def read_partition(broker, topic, partition, timeout=60.0):
    """Every message of topic/partition from offset 0 to the end: [(offset, value)]."""
    c = ck.Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "weir-e2e-restart",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        assert low == 0
        c.assign([TopicPartition(topic, partition, 0)])
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < high and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=1.0):
                if m.error():
                    if m.error().code() == ck.KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consume error: {m.error()}")
                got.append((m.offset(), m.value()))
        assert len(got) == high, f"{topic}/{partition}: read {len(got)} of {high}"
        return got
    finally:
        c.close()


def produce_numbered(p, topic, prefix, count, acked, stop=None):
    """Send prefix-i to partition i % PARTITIONS; acked[partition] collects (offset, value) of
    every message whose delivery report had no error."""

    def on_delivery(err, msg):
        if err is None:
            acked[msg.partition()].append((msg.offset(), msg.value()))

    for i in range(count):
        if stop is not None and stop.is_set():
            return i
        value = b"%s-%06d" % (prefix, i)
        while True:
            try:
                p.produce(topic, value, partition=i % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    return count


def test_acked_messages_survive_sigkill_and_sigterm(fresh_broker):
    b = fresh_broker
    topic = "restart-durability"
    create_topic_ready(b.bootstrap, topic, PARTITIONS)

    # 1. 10,000 messages, all acknowledged before the kill.
    acked = {p: [] for p in range(PARTITIONS)}
    p = producer(b)
    produce_numbered(p, topic, b"first", FIRST, acked)
    assert p.flush(60) == 0
    assert sum(len(v) for v in acked.values()) == FIRST, "not every message was acknowledged"

    # 2. A second stream still being produced when the broker is SIGKILLed.
    stop = threading.Event()
    sent = {}
    t = threading.Thread(
        target=lambda: sent.setdefault("n", produce_numbered(p, topic, b"second", 1_000_000, acked, stop)),
        daemon=True,
    )
    t.start()
    deadline = time.monotonic() + 30
    while sum(len(v) for v in acked.values()) < FIRST + 5_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.stop(signal.SIGKILL) == -signal.SIGKILL
    stop.set()
    t.join(30)
    assert not t.is_alive()
    p.purge(in_queue=True, in_flight=True)  # nothing is retried into the restarted broker
    p.flush(10)
    del p
    acked_before_kill = {part: list(v) for part, v in acked.items()}
    n_acked = sum(len(v) for v in acked_before_kill.values())
    assert n_acked > FIRST, "no message of the second stream was acknowledged before the kill"

    started = time.monotonic()
    b.start()
    print(f"\nrestart after SIGKILL: ready in {time.monotonic() - started:.2f}s; "
          f"{n_acked} acknowledged, {sent.get('n')} sent")  # fmt: skip

    def check(after_kill_logs):
        for part in range(PARTITIONS):
            log = after_kill_logs[part]
            offsets = [o for o, _ in log]
            assert offsets == list(range(len(log))), f"partition {part}: offsets are not 0..n-1"
            values = [v for _, v in log]
            assert len(set(values)) == len(values), f"partition {part}: duplicated messages"
            want = acked_before_kill[part]
            # Every acknowledged message is there, at the offset it was acknowledged with.
            missing = [(o, v) for o, v in want if o >= len(log) or log[o] != (o, v)]
            assert missing == [], f"partition {part}: {len(missing)} acknowledged messages lost, first {missing[:3]}"
            # Beyond the acknowledged ones: only unacknowledged messages of the stream, in order.
            first = [v for v in values if v.startswith(b"first-")]
            assert first == [b"first-%06d" % i for i in range(part, FIRST, PARTITIONS)]
            second = [int(v.split(b"-")[1]) for v in values if v.startswith(b"second-")]
            assert second == sorted(second) and all(i % PARTITIONS == part for i in second)
            assert values == first + [b"second-%06d" % i for i in second], f"partition {part}: out of order"

    check({part: read_partition(b, topic, part) for part in range(PARTITIONS)})
    ends = {part: len(read_partition(b, topic, part)) for part in range(PARTITIONS)}

    # 3. Clean shutdown: SIGTERM exits 0; after a restart everything is still there, and new
    # writes continue at the old end offsets.
    assert b.stop(signal.SIGTERM) == 0, f"SIGTERM exit code {b.proc.returncode}\n{b.tail()}"
    started = time.monotonic()
    b.start()
    print(f"restart after SIGTERM: ready in {time.monotonic() - started:.2f}s")
    logs = {part: read_partition(b, topic, part) for part in range(PARTITIONS)}
    assert {part: len(v) for part, v in logs.items()} == ends
    check(logs)
    md = kcat("-L", "-t", topic, bootstrap=b.bootstrap, timeout=30).stdout.decode()
    assert f'topic "{topic}" with {PARTITIONS} partitions' in md

    p = producer(b)
    reports = []
    for part in range(PARTITIONS):
        p.produce(topic, b"third", partition=part, on_delivery=lambda e, m: reports.append((e, m.partition(), m.offset())))
    assert p.flush(30) == 0
    assert sorted(reports) == [(None, part, ends[part]) for part in range(PARTITIONS)]
