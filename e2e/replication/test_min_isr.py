"""Replication factor 3 with confluent-kafka: acks=all is acknowledged only once the ISR has
the records, every replica's log is byte for byte the leader's, and min.insync.replicas is
enforced as the ISR shrinks and grows back without any manual step."""

from __future__ import annotations

import time
import urllib.error

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from weir_harness import wait_until  # noqa: E402


def create(cluster, name, partitions=1, rf=3, config=None):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    (f,) = admin.create_topics([NewTopic(name, partitions, rf, config=config or {})], operation_timeout=10).values()
    f.result(30)
    for p in range(partitions):
        cluster.wait_isr(name, p, rf)


def produce(bootstrap, topic, values, acks="all", partition=0, timeout_ms=10_000):
    """Produce and return the delivery reports [(error or None, offset)]."""
    p = ck.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "linger.ms": 2,
            "message.timeout.ms": timeout_ms,
            "retries": 0 if acks == "all" else 2,
        }
    )
    reports = []
    for v in values:
        p.produce(topic, v, partition=partition, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert p.flush(timeout_ms / 1000 + 30) == 0
    return reports


def consume_all(bootstrap, topic, partition, count, timeout=60, **conf):
    """Read `count` records of one partition from offset 0: [(offset, value)]. `conf` adds
    librdkafka settings (`client.rack`, ...)."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "repl-check", "enable.auto.commit": False, **conf})
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for m in c.consume(1000, 1.0):
                assert m.error() is None, m.error()
                got.append((m.offset(), m.value()))
        return got
    finally:
        c.close()


def segment_bytes(broker, topic, partition):
    d = broker.data_dir / f"{topic}-{partition}"
    return b"".join(p.read_bytes() for p in sorted(d.glob("*.log")))


def local_offsets(broker, topic, partition):
    view = broker.http_json("GET", f"/api/v1/partitions?topic={topic}")["partitions"]
    p = next(p for p in view if p["partition"] == partition)
    return p["log_end_offset"], p["high_watermark"]


def test_acks_all_replicates_byte_for_byte(cluster):
    topic = "rf3-bytes"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    values = [f"value-{i}".encode() * 10 for i in range(2000)]
    reports = produce(cluster.bootstrap, topic, values)
    assert [e for e, _ in reports if e is not None] == []
    assert sorted(o for _, o in reports) == list(range(2000))
    # Every replica reaches the same log end and high watermark, and holds the same bytes.
    wait_until(lambda: all(local_offsets(b, topic, 0) == (2000, 2000) for b in cluster.brokers), 20,
               what="all replicas at log end 2000 and HW 2000")
    logs = [segment_bytes(b, topic, 0) for b in cluster.brokers]
    assert logs[0] == logs[1] == logs[2] and len(logs[0]) > 0
    got = consume_all(cluster.bootstrap, topic, 0, 2000)
    assert got == list(enumerate(values))


def test_min_insync_replicas_3_refuses_acks_all_at_isr_2_and_recovers(cluster):
    topic = "rf3-minisr3"
    create(cluster, topic, config={"min.insync.replicas": "3"})
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"before"])] == [None]
    leader = cluster.partitions(topic)[0]["leader"]
    victim = next(b for b in cluster.brokers if b.node_id != leader)
    victim.kill()
    p = cluster.wait_isr(topic, 0, 2)
    assert victim.node_id not in p["isr"]
    # Metadata tells clients the same ISR.
    md = ck.admin.AdminClient({"bootstrap.servers": cluster.brokers[leader].bootstrap}).list_topics(topic, timeout=10)
    assert sorted(md.topics[topic].partitions[0].isrs) == sorted(p["isr"])

    (err, _), = produce(cluster.brokers[leader].bootstrap, topic, [b"refused"], timeout_ms=5000)
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err
    (err1, off1), = produce(cluster.brokers[leader].bootstrap, topic, [b"acks-1"], acks="1")
    assert err1 is None and off1 == 1

    cluster.restart(victim.node_id)
    p = cluster.wait_isr(topic, 0, 3)
    assert victim.node_id in p["isr"]
    md = ck.admin.AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions[0].isrs) == 3
    (err, off), = produce(cluster.bootstrap, topic, [b"after"])
    assert err is None and off == 2
    got = consume_all(cluster.bootstrap, topic, 0, 3)
    assert [v for _, v in got] == [b"before", b"acks-1", b"after"]


def test_min_insync_replicas_altered_through_the_admin_api(cluster):
    """The operator's way to change min.insync.replicas: PATCH the topic config. The leader
    enforces the new value at the next acks=all produce; DescribeConfigs shows it."""
    topic = "rf3-minisr-patch"
    create(cluster, topic)
    leader = cluster.partitions(topic)[0]["leader"]
    victim = next(b for b in cluster.brokers if b.node_id != leader)
    victim.kill()
    cluster.wait_isr(topic, 0, 2)
    admin = cluster.brokers[leader]
    assert [e for e, _ in produce(admin.bootstrap, topic, [b"isr-2-min-1"])] == [None]

    t = admin.http_json("PATCH", f"/api/v1/topics/{topic}", {"configs": {"min.insync.replicas": "3"}})
    assert t["configs"]["min.insync.replicas"] == "3"
    (err, _), = produce(admin.bootstrap, topic, [b"refused"], timeout_ms=5000)
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err
    client = ck.admin.AdminClient({"bootstrap.servers": admin.bootstrap})  # kept alive until the result
    (cfg,) = client.describe_configs([ck.admin.ConfigResource(ck.admin.ResourceType.TOPIC, topic)]).values()
    assert cfg.result(10)["min.insync.replicas"].value == "3"
    with pytest.raises(urllib.error.HTTPError) as e:
        admin.http_json("PATCH", f"/api/v1/topics/{topic}", {"configs": {"min.insync.replicas": "0"}})
    assert e.value.code == 400

    admin.http_json("PATCH", f"/api/v1/topics/{topic}", {"configs": {"min.insync.replicas": "2"}})
    assert [e for e, _ in produce(admin.bootstrap, topic, [b"isr-2-min-2"])] == [None]
    got = consume_all(admin.bootstrap, topic, 0, 2)
    assert [v for _, v in got] == [b"isr-2-min-1", b"isr-2-min-2"]
