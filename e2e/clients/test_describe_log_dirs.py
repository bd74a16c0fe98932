"""DescribeLogDirs through kafka-python's `describe_log_dirs` (what `kafka-log-dirs`, Cruise
Control and cluster UIs read): the broker's data directory with each partition's size on disk,
as the segment files have it, offset lag 0, the file system's total and usable bytes, and only
the partitions asked for."""

from __future__ import annotations

import os

import pytest

kafka = pytest.importorskip("kafka")
ck = pytest.importorskip("confluent_kafka")
from kafka.admin import KafkaAdminClient  # noqa: E402

from weir_harness import create_topic_ready  # noqa: E402


def on_disk(broker, topic, partition):
    return sum(f.stat().st_size for f in (broker.data_dir / f"{topic}-{partition}").glob("*.log"))


def test_log_dir_sizes_and_space(broker, topic_name):
    create_topic_ready(broker.bootstrap, topic_name, partitions=2)
    p = ck.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(50):
        p.produce(topic_name, f"record-{i}".encode() * 20, partition=0)
    assert p.flush(10) == 0
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        (only,) = admin.describe_log_dirs()
        (d,) = only["log_dirs"]
        assert d["error_code"] == 0
        assert d["log_dir"] == str(broker.data_dir.resolve())
        st = os.statvfs(broker.data_dir)
        assert d["total_bytes"] == st.f_blocks * st.f_frsize
        assert 0 < d["usable_bytes"] <= d["total_bytes"]
        topics = {t["name"]: {p["partition_index"]: p for p in t["partitions"]} for t in d["topics"]}
        ours = topics[topic_name]
        assert set(ours) == {0, 1}
        assert ours[0]["partition_size"] == on_disk(broker, topic_name, 0) > 50 * 20 * 8
        assert ours[1]["partition_size"] == 0
        assert all(p["offset_lag"] == 0 and not p["is_future_key"] for p in ours.values())

        (only,) = admin.describe_log_dirs(topic_partitions={topic_name: [1], f"{topic_name}-missing": [0]})
        (d,) = only["log_dirs"]
        assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in d["topics"]] == [(topic_name, [1])]
    finally:
        admin.close()
