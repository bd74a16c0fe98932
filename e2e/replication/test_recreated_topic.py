"""A topic deleted and created again under the same name while one of its replicas is down:
the returning broker must not take its old log for the new topic's. It restarts from the
metadata image it had stored (holding the old topic), then applies the deletion and the new
creation in turn, and the replica manager drops the deleted topic's log before the new one is
created. Afterwards its replica is byte for byte the new leader's and holds none of the old
records."""

from __future__ import annotations

import pytest

ck = pytest.importorskip("confluent_kafka")

from test_min_isr import local_offsets, produce, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def partition_dirs(broker, topic):
    return sorted(p.name for p in broker.data_dir.glob(f"{topic}-*"))


# Without a controlled shutdown the stopped broker stays unfenced for the session timeout, so
# the new topic can still be assigned to it.
@pytest.mark.cluster_args(session_timeout_ms=60_000, extra_args=("--controlled-shutdown-enable", "false"))
def test_a_returning_replica_drops_the_log_of_a_deleted_namesake(cluster):
    topic = "reborn"
    admin = cluster.brokers[0]
    admin.http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0, 1, 2]]})
    cluster.wait_isr(topic, 0, 3)
    old = [f"old-{i}".encode() * 20 for i in range(500)]
    assert [e for e, _ in produce(cluster.bootstrap, topic, old)] == [None] * len(old)
    returning = cluster.brokers[2]
    wait_until(lambda: local_offsets(returning, topic, 0) == (500, 500), 20, what="broker 2 at offset 500")
    assert returning.stop() == 0

    # Broker 2 is down (not yet fenced: a long session timeout lets the new topic name it).
    admin.http_json("DELETE", f"/api/v1/topics/{topic}")
    wait_until(lambda: all(partition_dirs(b, topic) == [] for b in cluster.brokers[:2]), 30,
               what="the old topic's logs gone from brokers 0 and 1")
    admin.http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0, 1, 2]]})
    new = [f"new-{i}".encode() for i in range(100)]
    assert [e for e, _ in produce(cluster.bootstrap, topic, new, acks="1")] == [None] * len(new)

    cluster.restart(2)
    cluster.wait_isr(topic, 0, 3)
    wait_until(lambda: local_offsets(returning, topic, 0) == (100, 100), 30, what="broker 2 at the new log end")
    held = segment_bytes(returning, topic, 0)
    assert b"old-" not in held, "the returning replica kept records of the deleted topic"
    assert held == segment_bytes(cluster.brokers[0], topic, 0)
