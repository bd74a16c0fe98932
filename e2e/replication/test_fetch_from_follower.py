"""Fetching from the closest replica (KIP-392) with librdkafka's `client.rack`: three brokers
in racks a, b and c, `--replica-selector rack`, a partition led by broker 0 (rack a) with
followers 1 and 2. A consumer in rack c is sent by the leader to broker 2 and reads every
record there, in order, including records produced while it waits at the end; a consumer in
rack a reads from the leader. With the default selector the leader serves everyone. With two
in-sync followers in the consumer's rack, the leader names the one that has fetched the most."""

from __future__ import annotations

import threading
import time

import pytest

ck = pytest.importorskip("confluent_kafka")

from test_metrics import metric  # noqa: E402
from test_min_isr import consume_all, local_offsets, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402

RACKS = ("a", "b", "c")
FIRST = 2_000
LATER = 500
SERVED = "weir_follower_consumer_fetch_bytes_total"
REDIRECTS = "weir_fetch_preferred_read_replica_total"


def values(start, count):
    return [f"near-{i}".encode() * 20 for i in range(start, start + count)]


def consume(cluster, topic, rack, count, **conf):
    return consume_all(cluster.bootstrap, topic, 0, count, **{"client.rack": rack, **conf})


def create_rf3(cluster, topic):
    cluster.brokers[0].http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0, 1, 2]]})
    cluster.wait_isr(topic, 0, 3)
    assert all(e is None for e, _ in produce(cluster.bootstrap, topic, values(0, FIRST)))


@pytest.mark.cluster_args(racks=RACKS, extra_args=("--replica-selector", "rack"))
def test_a_consumer_reads_from_the_in_sync_replica_in_its_rack(cluster):
    create_rf3(cluster, "near")
    leader, b1, b2 = cluster.brokers

    # Rack c: sent to broker 2, which serves every record, and the ones produced meanwhile:
    # its long poll (5 s here) ends when its high watermark moves, not at the timeout.
    produced = []

    def produce_later():
        assert all(e is None for e, _ in produce(cluster.bootstrap, "near", values(FIRST, LATER)))
        produced.append(time.monotonic())

    later = threading.Timer(3.0, produce_later)
    later.start()
    try:
        got = consume(cluster, "near", "c", FIRST + LATER, **{"fetch.wait.max.ms": 5000})
        done = time.monotonic()
    finally:
        later.join()
    assert produced and done - produced[0] < 2.5, f"the tail arrived {done - produced[0]:.1f}s after it was acked"
    assert [o for o, _ in got] == list(range(FIRST + LATER))
    assert [v for _, v in got] == values(0, FIRST + LATER)
    size = sum(len(v) for v in values(0, FIRST + LATER))
    assert metric(b2, SERVED) >= size, (metric(b2, SERVED), size)
    assert metric(leader, REDIRECTS) >= 1
    assert metric(b1, SERVED) == 0

    # Rack a, the leader's: read from the leader; the followers serve nothing more.
    served = (metric(b1, SERVED), metric(b2, SERVED))
    got = consume(cluster, "near", "a", FIRST)
    assert [v for _, v in got] == values(0, FIRST)
    assert (metric(b1, SERVED), metric(b2, SERVED)) == served


@pytest.mark.cluster_args(racks=("a", "b", "b"), extra_args=("--replica-selector", "rack"),
                          session_timeout_ms=60_000, lag_time_max_ms=60_000)
def test_the_most_caught_up_replica_in_the_rack_is_preferred(cluster):
    create_rf3(cluster, "caught-up")
    # Broker 1 (the lower id in rack b) stops fetching but stays live and in the ISR (the
    # timeouts are long); broker 2 takes what follows.
    cluster.sigstop(1)
    try:
        assert all(e is None for e, _ in produce(cluster.bootstrap, "caught-up", values(FIRST, LATER), acks="1"))
        leader, _, b2 = cluster.brokers
        wait_until(lambda: local_offsets(b2, "caught-up", 0)[0] == FIRST + LATER, 20, what="broker 2 caught up")
        # The high watermark waits for broker 1, so a consumer sees the first records only. A
        # consumer sent to the stalled broker 1 would get none of them.
        got = consume(cluster, "caught-up", "b", FIRST, timeout=20)
        assert [v for _, v in got] == values(0, FIRST)
        assert metric(b2, SERVED) >= sum(len(v) for v in values(0, FIRST))
        assert metric(leader, REDIRECTS) >= 1
    finally:
        cluster.sigcont(1)


@pytest.mark.cluster_args(racks=RACKS)
def test_with_the_default_selector_the_leader_serves_every_rack(cluster):
    create_rf3(cluster, "far")
    got = consume(cluster, "far", "c", FIRST)
    assert [v for _, v in got] == values(0, FIRST)
    assert [metric(b, SERVED) for b in cluster.brokers] == [0, 0, 0]
    assert metric(cluster.brokers[0], REDIRECTS) == 0
