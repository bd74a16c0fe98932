"""Produce pipelining, seen through librdkafka (which keeps several produce requests in flight on
one connection and checks that responses come back in request order): while an acks=all
request waits for a stopped follower, the leader goes on reading the connection, so a later
request is written at once; its response still comes after the waiting one's."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")

from test_min_isr import local_offsets  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def create_assigned(cluster, name, replicas):
    cluster.brokers[0].http_json("POST", "/api/v1/topics", {"name": name, "assignment": [replicas]})
    cluster.wait_isr(name, 0, len(replicas))


@pytest.mark.cluster_args(session_timeout_ms=60_000, lag_time_max_ms=6000)
def test_a_request_behind_a_waiting_acks_all_is_written_at_once_and_answered_in_order(cluster):
    leader, follower = cluster.brokers[0], cluster.brokers[1]
    create_assigned(cluster, "waits", [0, 1])  # acks=all waits for broker 1
    create_assigned(cluster, "quick", [0])  # acks=all is the leader's append
    p = ck.Producer({"bootstrap.servers": leader.bootstrap, "acks": "all", "linger.ms": 0,
                     "message.timeout.ms": 60_000, "max.in.flight.requests.per.connection": 5})
    reports = []

    def report(name):
        return lambda err, msg: reports.append((name, err, msg.offset(), time.monotonic()))

    # Connection and metadata first, so both requests below go out on the same connection.
    p.produce("waits", b"warm", partition=0, on_delivery=report("warm-waits"))
    p.produce("quick", b"warm", partition=0, on_delivery=report("warm-quick"))
    assert p.flush(30) == 0
    # Two topics: librdkafka may send these in either order (one may wait for its metadata).
    assert sorted((n, e) for n, e, _, _ in reports) == [("warm-quick", None), ("warm-waits", None)]
    reports.clear()

    cluster.sigstop(follower.node_id)
    try:
        stopped = time.monotonic()
        p.produce("waits", b"x", partition=0, on_delivery=report("waits"))
        p.poll(0)
        time.sleep(0.5)  # x's request is on the wire; y goes in a request of its own
        p.produce("quick", b"y", partition=0, on_delivery=report("quick"))
        p.poll(0)
        # y is in the leader's log (and committed: its ISR is the leader) while x still waits
        # for the stopped follower, which leaves the ISR only after replica.lag.time.max.ms.
        wait_until(lambda: local_offsets(leader, "quick", 0) == (2, 2), 3, what="y written behind the waiting x")
        y_written = time.monotonic() - stopped
        # Both acknowledged once the ISR shrinks, x first: responses keep request order.
        assert p.flush(60) == 0
        assert [(n, e, o) for n, e, o, _ in reports] == [("waits", None, 1), ("quick", None, 1)]
        x_acked = reports[0][3] - stopped
        assert x_acked >= 5.5, f"x was acknowledged {x_acked:.1f}s after the stop, before broker 1 left the ISR"
        assert y_written < x_acked, f"y was written {y_written:.1f}s after the stop, x acknowledged at {x_acked:.1f}s"
    finally:
        cluster.sigcont(follower.node_id)
