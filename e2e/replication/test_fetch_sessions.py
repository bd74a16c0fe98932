"""Replica fetchers keep an incremental fetch session (KIP-227) with each leader, as Kafka's do:
after one full fetch per follower and leader, every round names only the partitions that moved,
and the leader answers only those with something new. Replication stays exact through it, and
through a leader restart that forgets every session."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("confluent_kafka")
from numbered import NumberedProducer, check_exactly_once_in_order  # noqa: E402
from test_min_isr import create, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402

PARTITIONS = 30


def metric(broker, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", broker.metrics(), re.M)
    assert m, f"{name} not on /metrics of broker {broker.node_id}"
    return float(m.group(1))


def sessions(cluster) -> list[tuple[float, float, float]]:
    """(sessions, partitions in them, sessions created) on each broker."""
    return [
        (metric(b, "weir_fetch_sessions"), metric(b, "weir_fetch_session_partitions"),
         metric(b, "weir_fetch_sessions_created_total"))
        for b in cluster.brokers
    ]  # fmt: skip


def test_followers_fetch_incrementally_and_replicate_exactly(cluster):
    topic = "sessions"
    # Leadership spread: each broker leads 10 partitions and follows 20, 10 from each other one.
    create(cluster, topic, partitions=PARTITIONS, config={"min.insync.replicas": "2"})
    # Each leader holds one session per follower, with that follower's partitions of it.
    wait_until(lambda: all(s == 2 and parts >= 20 for s, parts, _ in sessions(cluster)), 30,
               what="two follower sessions on every broker")
    prod = NumberedProducer(cluster.bootstrap, topic, PARTITIONS)
    prod.start()
    try:
        wait_until(lambda: prod.total_acked() > 3000, 60, what="acknowledgements")
        created = [c for _, _, c in sessions(cluster)]
        # Hundreds of fetch rounds later, still the same sessions: the rounds were incremental
        # (a full fetch makes a new session every time).
        before = prod.total_acked()
        wait_until(lambda: prod.total_acked() > before + 3000, 60, what="more acknowledgements")
        assert [c for _, _, c in sessions(cluster)] == created, sessions(cluster)
        assert all(s == 2 for s, _, _ in sessions(cluster)), sessions(cluster)

        # A restarted leader has forgotten its sessions; its followers open new ones (the
        # restarted broker opens its own on the other leaders), and acks=all goes on.
        cluster.brokers[1].kill()
        cluster.restart(1)
        for p in range(PARTITIONS):
            cluster.wait_isr(topic, p, 3, timeout=60)
        wait_until(lambda: sessions(cluster)[1][0] >= 2, 30, what="follower sessions on the restarted broker")
        after_restart = prod.total_acked()
        wait_until(lambda: prod.total_acked() > after_restart + 2000, 60, what="acknowledgements after the restart")
    finally:
        prod.finish()
    check_exactly_once_in_order(cluster.bootstrap, prod)
    # Every replica of every partition ends byte for byte equal to its leader.
    for p in range(PARTITIONS):
        wait_until(lambda: len({segment_bytes(b, topic, p) for b in cluster.brokers}) == 1, 30,
                   what=f"identical replicas of partition {p}")
