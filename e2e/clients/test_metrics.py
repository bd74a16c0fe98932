"""The Kafka listener's metrics on /metrics, moved by real clients: confluent-kafka producing
and consuming a known number of records, kafka-python opening connections. Counters are read
before and after, so the other tests of the session do not matter."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

ck = pytest.importorskip("confluent_kafka")

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
        c.assign([ck.TopicPartition(topic_name, 0, 0)])
        got = 0
        deadline = time.monotonic() + 30
        while got < N and time.monotonic() < deadline:
            got += sum(1 for m in c.consume(1000, timeout=1) if not m.error())
        assert got == N
    finally:
        c.close()
    after = scrape(broker)
    bytes_out = value(after, "weir_kafka_bytes_out_total") - value(during, "weir_kafka_bytes_out_total")
    assert bytes_out >= bytes_in, (bytes_out, bytes_in)
    assert value(after, fetch_count) > value(during, fetch_count)
    # Nothing is replicated on a single broker.
    assert value(after, "weir_replication_bytes_out_total") == value(before, "weir_replication_bytes_out_total")
