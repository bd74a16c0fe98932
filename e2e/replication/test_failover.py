"""The classic replication test: 3 brokers, a topic with 3 partitions, replication factor 3,
min.insync.replicas=2. An idempotent confluent-kafka producer with acks=all sends a numbered
stream while the current leader of partition 0 is SIGKILLed five times in a row (and
restarted each time, waiting for the ISR to be whole again). Afterwards every acknowledged
message is present exactly once, in order per partition, and the replicas' logs are byte for
byte equal."""

from __future__ import annotations

import pytest

pytest.importorskip("confluent_kafka")
from numbered import NumberedProducer, check_exactly_once_in_order  # noqa: E402
from test_min_isr import create, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402

PARTITIONS = 3
KILLS = 5


def leader_of(cluster, topic, partition):
    try:
        return cluster.partitions(topic)[partition]["leader"]
    except OSError:
        return None


def test_acknowledged_messages_survive_five_leader_kills(cluster):
    topic = "failover"
    create(cluster, topic, partitions=PARTITIONS, config={"min.insync.replicas": "2"})
    prod = NumberedProducer(cluster.bootstrap, topic, PARTITIONS, metadata_refresh_ms=None)
    prod.start()
    wait_until(lambda: prod.total_acked() > 300, 30, what="first acknowledgements")
    for kill in range(KILLS):
        # (a tuple: broker 0 is a valid, falsy, leader id)
        (leader,) = wait_until(lambda: (lambda l: l is not None and (l,))(leader_of(cluster, topic, 0)), 30,
                               what="a leader for partition 0")
        victim = cluster.brokers[leader]
        before = prod.total_acked()
        victim.kill()
        wait_until(lambda: leader_of(cluster, topic, 0) not in (None, leader), 30,
                   what=f"a new leader after killing {leader} (kill {kill + 1})")
        # Production goes on with the survivors (min.insync.replicas=2 holds).
        wait_until(lambda: prod.total_acked() > before + 200, 60,
                   what=f"acknowledgements after kill {kill + 1}")
        cluster.restart(leader)
        for p in range(PARTITIONS):
            cluster.wait_isr(topic, p, 3, timeout=60)
    prod.finish()
    check_exactly_once_in_order(cluster.bootstrap, prod)
    # The replicas agree byte for byte once the followers caught up.
    for p in range(PARTITIONS):
        wait_until(lambda: len({segment_bytes(b, topic, p) for b in cluster.brokers}) == 1, 30,
                   what=f"identical replicas of partition {p}")
