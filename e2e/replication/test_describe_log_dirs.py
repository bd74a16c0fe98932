"""DescribeLogDirs across three brokers (kafka-python's `describe_log_dirs` asks each one):
the replicas of a partition report it with the same size on disk, and a broker holding no
replica of it does not list it."""

from __future__ import annotations

import pytest

kafka = pytest.importorskip("kafka")
ck = pytest.importorskip("confluent_kafka")
from kafka.admin import KafkaAdminClient  # noqa: E402

from test_min_isr import create, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def test_each_broker_describes_its_own_replicas(cluster):
    topic = "log-dirs"
    create(cluster, topic, rf=2)
    assert all(e is None for e, _ in produce(cluster.bootstrap, topic, [b"v" * 500] * 40))
    replicas = sorted(cluster.partitions(topic)[0]["replicas"])
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        def sizes():
            out = {}
            for b in admin.describe_log_dirs(topic_partitions=[topic]):
                (d,) = b["log_dirs"]
                for t in d["topics"]:
                    for p in t["partitions"]:
                        assert t["name"] == topic and p["partition_index"] == 0 and p["offset_lag"] == 0, p
                        out[b["broker"]] = p["partition_size"]
            return out

        wait_until(lambda: sorted(sizes()) == replicas and len(set(sizes().values())) == 1, 30,
                   what="both replicas listed with the same size")  # fmt: skip
        assert next(iter(sizes().values())) > 40 * 500
    finally:
        admin.close()
