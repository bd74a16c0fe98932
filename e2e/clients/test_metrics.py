"""The Kafka listener's metrics on /metrics, moved by a real client: confluent-kafka producing
and consuming a known number of records. Counters are read
before and after, so the other tests of the session do not matter; the per-topic ones belong
to topics of their own test."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient  # noqa: E402

from weir_harness import create_topic_ready  # noqa: E402

N = 2_000
SIZE = 200


def scrape(broker) -> str:
    with urllib.request.urlopen(f"http://{broker.host}:{broker.http_port}/metrics", timeout=5) as r:
        return r.read().decode()


def value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert m, f"{series} not on /metrics"
    return float(m.group(1))


def read_from_start(c, topic: str) -> int:
    """Records read from partition 0 of `topic` from offset 0 until N or 30 s."""
    c.assign([ck.TopicPartition(topic, 0, 0)])
    got = 0
    deadline = time.monotonic() + 30
    while got < N and time.monotonic() < deadline:
        got += sum(1 for m in c.consume(1000, timeout=1) if not m.error())
    return got


def test_traffic_and_request_metrics_follow_real_clients(broker, topic_name):
    create_topic_ready(broker.bootstrap, topic_name)
    produce_count = 'weir_kafka_request_duration_seconds_count{api="Produce"}'
    fetch_count = 'weir_kafka_request_duration_seconds_count{api="Fetch"}'
    before = scrape(broker)

    p = ck.Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(N):
        p.produce(topic_name, b"%0*d" % (SIZE, i), partition=0)
    assert p.flush(30) == 0
    during = scrape(broker)
    assert value(during, "weir_kafka_connections") >= 1
    messages = value(during, "weir_kafka_messages_in_total") - value(before, "weir_kafka_messages_in_total")
    bytes_in = value(during, "weir_kafka_bytes_in_total") - value(before, "weir_kafka_bytes_in_total")
    assert messages == N
    # Record batches: the values plus per-record and per-batch framing, uncompressed.
    assert N * SIZE < bytes_in < N * SIZE * 1.3
    produces = value(during, produce_count) - value(before, produce_count)
    assert produces >= 1
    # Every Produce request observed lands in some bucket; the +Inf bucket holds them all.
    assert value(during, 'weir_kafka_request_duration_seconds_bucket{api="Produce",le="+Inf"}') == value(
        during, produce_count
    )

    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic_name, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})  # fmt: skip
    try:
        assert read_from_start(c, topic_name) == N
    finally:
        c.close()
    after = scrape(broker)
    bytes_out = value(after, "weir_kafka_bytes_out_total") - value(during, "weir_kafka_bytes_out_total")
    assert bytes_out >= bytes_in, (bytes_out, bytes_in)
    assert value(after, fetch_count) > value(during, fetch_count)
    # Nothing is replicated on a single broker.
    assert value(after, "weir_replication_bytes_out_total") == value(before, "weir_replication_bytes_out_total")


def topic_value(text: str, metric: str, topic: str) -> float | None:
    m = re.search(rf'^{re.escape(metric)}{{topic="{re.escape(topic)}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_traffic_by_topic_follows_real_clients_and_ends_with_the_topic(broker, topic_name):
    """Kafka's BrokerTopicMetrics by topic: records and bytes in, bytes out to consumers, and
    partitions answered with an error, each counted for its own topic; a deleted topic's series
    leave /metrics."""
    a, b = f"{topic_name}-a", f"{topic_name}-b"
    create_topic_ready(broker.bootstrap, a)
    # b's batches (at most N // 4 * SIZE bytes and framing) fit under its max.message.bytes.
    create_topic_ready(broker.bootstrap, b, config={"max.message.bytes": "300000"})
    p = ck.Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    on_delivery = lambda err, _msg: err is None or errors.append(err)  # noqa: E731
    for i in range(N):
        p.produce(a, b"%0*d" % (SIZE, i), partition=0, on_delivery=on_delivery)
    for i in range(N // 4):
        p.produce(b, b"%0*d" % (SIZE, i), partition=0, on_delivery=on_delivery)
    assert p.flush(30) == 0
    assert errors == []
    # One record over b's max.message.bytes (under the client's own limit): refused by the
    # broker with MESSAGE_TOO_LARGE.
    p.produce(b, b"x" * 400_000, partition=0, on_delivery=on_delivery)
    assert p.flush(30) == 0
    assert [e.code() for e in errors] == [ck.KafkaError.MSG_SIZE_TOO_LARGE], errors

    produced = scrape(broker)
    assert topic_value(produced, "weir_kafka_topic_messages_in_total", a) == N
    assert topic_value(produced, "weir_kafka_topic_messages_in_total", b) == N // 4
    bytes_in_a = topic_value(produced, "weir_kafka_topic_bytes_in_total", a)
    assert N * SIZE < bytes_in_a < N * SIZE * 1.3
    assert N // 4 * SIZE < topic_value(produced, "weir_kafka_topic_bytes_in_total", b) < N // 4 * SIZE * 1.3
    assert topic_value(produced, "weir_kafka_topic_failed_produce_total", a) == 0
    assert topic_value(produced, "weir_kafka_topic_failed_produce_total", b) == 1

    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic_name, "enable.auto.commit": False,
                     "auto.offset.reset": "error"})  # fmt: skip
    try:
        assert read_from_start(c, a) == N
        # A fetch past the end of b: OFFSET_OUT_OF_RANGE, which this consumer reports.
        c.assign([ck.TopicPartition(b, 0, 1_000_000)])
        errors = []
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            errors += [m.error() for m in c.consume(10, timeout=1) if m.error()]
        assert errors, "no error for a fetch out of range"
    finally:
        c.close()
    consumed = scrape(broker)
    assert topic_value(consumed, "weir_kafka_topic_bytes_out_total", a) >= bytes_in_a
    assert topic_value(consumed, "weir_kafka_topic_bytes_out_total", b) == 0
    assert topic_value(consumed, "weir_kafka_topic_failed_fetch_total", a) == 0
    assert topic_value(consumed, "weir_kafka_topic_failed_fetch_total", b) >= 1

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([b], operation_timeout=20)[b].result(30)
    deadline = time.monotonic() + 20
    while f'topic="{b}"' in scrape(broker):
        assert time.monotonic() < deadline, "the deleted topic's series stayed on /metrics"
        time.sleep(0.2)
    assert topic_value(scrape(broker), "weir_kafka_topic_messages_in_total", a) == N
