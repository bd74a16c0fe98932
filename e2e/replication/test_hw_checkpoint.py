"""The high watermark survives a restart (Kafka's replication-offset-checkpoint): a follower
stopped cleanly writes it, and after a restart it serves that high watermark before it has
fetched anything from its leader (the leader is SIGSTOPped meanwhile)."""

from __future__ import annotations

import pytest

ck = pytest.importorskip("confluent_kafka")

from test_min_isr import create, local_offsets, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402


@pytest.mark.cluster_args(session_timeout_ms=60_000)
def test_follower_high_watermark_survives_a_restart(cluster):
    topic = "hw-checkpoint"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    reports = produce(cluster.bootstrap, topic, [b"x" * 100] * 100)
    assert [e for e, _ in reports] == [None] * 100
    leader = cluster.partitions(topic)[0]["leader"]
    follower = next(b for b in cluster.brokers if b.node_id != leader)
    wait_until(lambda: local_offsets(follower, topic, 0) == (100, 100), 20, what="follower at HW 100")
    assert follower.stop() == 0
    lines = (follower.data_dir / "replication-offset-checkpoint").read_text().splitlines()
    assert lines[0] == "0" and f"{topic} 0 100" in lines[2:], lines

    cluster.sigstop(leader)
    try:
        cluster.restart(follower.node_id)
        # Nothing can be fetched from the frozen leader: the HW comes from the checkpoint
        # (without it the replica would start at its log start, 0).
        wait_until(lambda: local_offsets(follower, topic, 0) == (100, 100), 10, what="HW 100 after the restart")
    finally:
        cluster.sigcont(leader)
    cluster.wait_isr(topic, 0, 3)
