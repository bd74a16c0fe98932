"""Controlled shutdown (Kafka's `controlled.shutdown.enable`): a broker stopped with SIGTERM
has the quorum fence it before it exits, so its partitions get a new leader and its ISR
places are given up at once, not after the session timeout (30 s here, as are the lag
limits, so nothing else could explain a quick recovery). An idempotent acks=all stream to a
replication factor 3 topic with min.insync.replicas=2 goes on within seconds when a follower
and then the leader stop, and every acknowledged message is there exactly once."""

from __future__ import annotations

import signal
import time

import pytest

pytest.importorskip("confluent_kafka")

from numbered import NumberedProducer, check_exactly_once_in_order  # noqa: E402
from test_min_isr import consume_all, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402

SLOW = 30_000


def stop_gracefully(cluster, i):
    """SIGTERM broker `i`; returns how long it took to exit. A clean exit is code 0."""
    started = time.monotonic()
    code = cluster.brokers[i].stop(signal.SIGTERM, timeout=30)
    assert code == 0, f"broker {i} exited with {code}\n{cluster.brokers[i].tail()}"
    return time.monotonic() - started


def fenced(cluster, i):
    brokers = cluster.any_running().http_json("GET", "/api/v1/cluster")["brokers"]
    return next(b["fenced"] for b in brokers if b["id"] == i)


def acks_resume(prod, within):
    before = prod.total_acked()
    wait_until(lambda: prod.total_acked() > before + 500, within, what="acknowledgements after the stop")


@pytest.mark.cluster_args(session_timeout_ms=SLOW, lag_time_max_ms=SLOW)
def test_a_stopped_broker_hands_over_at_once(cluster):
    topic = "handover"
    cluster.brokers[0].http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0, 1, 2]],
                                                            "configs": {"min.insync.replicas": "2"}})  # fmt: skip
    cluster.wait_isr(topic, 0, 3)
    prod = NumberedProducer(cluster.bootstrap, topic, 1)
    prod.start()
    try:
        wait_until(lambda: prod.total_acked() > 1000, 30, what="first acknowledgements")

        # A follower: out of the ISR before it exits, so acks=all does not wait for it.
        took = stop_gracefully(cluster, 2)
        (p,) = cluster.partitions(topic)
        assert p["leader"] == 0 and sorted(p["isr"]) == [0, 1], p
        acks_resume(prod, 5)
        assert took < 10, f"the stop took {took:.1f}s"
        # It stays fenced: the quorum leader, which heard it until the stop, does not take its
        # last heartbeats as a sign of life (its controller looks every 0.5 s).
        time.sleep(1.5)
        assert fenced(cluster, 2), "broker 2 was unfenced after its controlled shutdown"
        cluster.restart(2)
        cluster.wait_isr(topic, 0, 3)

        # The leader: leadership is on another in-sync replica when it has exited.
        stop_gracefully(cluster, 0)
        (p,) = cluster.partitions(topic)
        assert p["leader"] in (1, 2) and sorted(p["isr"]) == [1, 2], p
        acks_resume(prod, 5)
        assert fenced(cluster, 0)
        cluster.restart(0)
        cluster.wait_isr(topic, 0, 3)
    finally:
        prod.finish()
    check_exactly_once_in_order(cluster.bootstrap, prod)


def test_a_draining_broker_asked_to_stop_lets_its_moves_finish(cluster):
    """A scale-down's race: the broker is told to stop right after its drain started. Its only
    replica of a partition moves to another broker before it exits, so nothing goes offline."""
    topic = "leaving"
    cluster.brokers[0].http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[2]]})
    cluster.wait_isr(topic, 0, 1)
    values = [b"v" * 1_000] * 2_000
    assert [e for e, _ in produce(cluster.bootstrap, topic, values, acks="1")] == [None] * len(values)
    admin = cluster.brokers[0]
    # About 2 s for the 2 MB at 1 MB/s: the stop below comes while the move runs.
    admin.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 1_000_000})
    out = admin.http_json("POST", "/api/v1/brokers/2/drain")
    assert [s["topic"] for s in out["started"]] == [topic], out
    # Broker 2 decides from its own metadata image: wait until that holds the drain.
    leaving = cluster.brokers[2]
    wait_until(lambda: leaving.http_json("GET", f"/api/v1/partitions?topic={topic}")["partitions"][0]["adding"], 10,
               what="broker 2 sees the move")  # fmt: skip
    took = stop_gracefully(cluster, 2)
    (p,) = cluster.partitions(topic)
    assert p["replicas"] != [2] and 2 not in p["replicas"] and not p["adding"], p
    assert p["leader"] == p["replicas"][0], p
    assert took > 0.5, f"the broker stopped after {took:.1f}s, before the move could have copied its log"
    got = consume_all(cluster.bootstrap, topic, 0, len(values), timeout=30)
    assert [o for o, _ in got] == list(range(len(values)))
