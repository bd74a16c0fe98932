"""ListOffsets answers clients below the high watermark, as Kafka does, seen through
confluent-kafka: with both followers SIGSTOPped (and kept in the ISR by a long
replica.lag.time.max.ms), records the leader alone has (acks=1) are neither the latest offset
nor found by a lookup by time; once the followers have them, they are."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicPartition  # noqa: E402

from test_min_isr import create, local_offsets, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402


@pytest.mark.cluster_args(session_timeout_ms=60_000, lag_time_max_ms=60_000)
def test_latest_offset_and_lookups_by_time_stop_at_the_high_watermark(cluster):
    topic = "list-offsets-hw"
    create(cluster, topic)
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"replicated"] * 2)] == [None, None]
    leader = cluster.partitions(topic)[0]["leader"]
    followers = [i for i in range(3) if i != leader]
    leader_bootstrap = cluster.brokers[leader].bootstrap
    c = ck.Consumer({"bootstrap.servers": leader_bootstrap, "group.id": "list-offsets", "enable.auto.commit": False})
    tp = TopicPartition(topic, 0)
    try:
        # Both clients learn the partition's leader now: a metadata request sent later could go
        # to a SIGSTOPped follower and never be answered.
        assert c.get_watermark_offsets(tp, timeout=10, cached=False) == (0, 2)
        c.offsets_for_times([TopicPartition(topic, 0, 0)], timeout=10)
        p = ck.Producer({"bootstrap.servers": leader_bootstrap, "acks": "1", "linger.ms": 2,
                         "message.timeout.ms": 10_000})  # fmt: skip
        p.list_topics(topic, timeout=10)
        time.sleep(0.01)
        since = int(time.time() * 1000)
        for f in followers:
            cluster.sigstop(f)
        try:
            reports = []
            for _ in range(3):
                p.produce(topic, b"leader-only", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
            assert p.flush(20) == 0
            assert reports == [(None, 2), (None, 3), (None, 4)]
            assert local_offsets(cluster.brokers[leader], topic, 0) == (5, 2)  # log end, HW
            assert c.get_watermark_offsets(tp, timeout=10, cached=False) == (0, 2)
            (found,) = c.offsets_for_times([TopicPartition(topic, 0, since)], timeout=10)
            assert found.offset == -1, "a lookup by time found a record past the high watermark"
        finally:
            for f in followers:
                cluster.sigcont(f)
        wait_until(lambda: c.get_watermark_offsets(tp, timeout=10, cached=False) == (0, 5), 30,
                   what="the latest offset at the replicated end")
        (found,) = c.offsets_for_times([TopicPartition(topic, 0, since)], timeout=10)
        assert found.offset == 2
    finally:
        c.close()
