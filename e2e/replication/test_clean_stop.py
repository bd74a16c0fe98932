"""A follower stopped with SIGTERM while its leader takes an acks=all stream (and a bulk
acks=1 stream on a second topic, to keep the replica fetcher busy) shuts down cleanly: the
fetcher stops before the logs are flushed and closed, so nothing reaches the follower's logs
after the clean-shutdown marker is written, what it holds is a byte prefix of the leader's
log, and the restart needs no recovery. Several stops in a row, then every acknowledged
message is there exactly once and the replicas are byte for byte equal."""

from __future__ import annotations

import threading

import pytest

ck = pytest.importorskip("confluent_kafka")
from numbered import NumberedProducer, check_exactly_once_in_order  # noqa: E402
from test_min_isr import create, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402

CLEAN_SHUTDOWN_MARKER = ".weir-clean-shutdown"
STOPS = 6


def bulk_load(bootstrap: str, topic: str, stop: threading.Event) -> None:
    p = ck.Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 2})
    value = b"b" * 4096
    while not stop.is_set():
        try:
            p.produce(topic, value, partition=0)
        except BufferError:
            p.poll(0.05)
        p.poll(0)
    p.flush(30)


def test_follower_stopped_under_load_shuts_down_cleanly(cluster):
    topic, bulk = "clean-stop", "clean-stop-bulk"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    leader = cluster.partitions(topic)[0]["leader"]
    follower = next(b for b in cluster.brokers if b.node_id != leader)
    # The bulk topic has the same leader, so the same fetcher serves both.
    cluster.any_running().http_json("POST", "/api/v1/topics", {"name": bulk, "assignment": [
        [leader] + [b.node_id for b in cluster.brokers if b.node_id != leader]]})
    cluster.wait_isr(bulk, 0, 3)
    part_dirs = [follower.data_dir / f"{t}-0" for t in (topic, bulk)]
    prod = NumberedProducer(cluster.bootstrap, topic, 1)
    prod.start()
    stop_bulk = threading.Event()
    bulk_thread = threading.Thread(target=bulk_load, args=(cluster.bootstrap, bulk, stop_bulk), daemon=True)
    bulk_thread.start()
    try:
        for stop in range(STOPS):
            before = prod.total_acked()
            wait_until(lambda: prod.total_acked() > before + 2000, 60, what=f"acknowledgements before stop {stop + 1}")
            assert follower.stop() == 0
            marker = follower.data_dir / CLEAN_SHUTDOWN_MARKER
            assert marker.exists(), "a clean stop leaves the clean-shutdown marker"
            # The fetcher stopped before the shutdown flush: no segment file changed after it.
            written_after = [
                f"{d.name}/{p.name}" for d in part_dirs for p in d.iterdir()
                if p.stat().st_mtime_ns > marker.stat().st_mtime_ns
            ]
            assert written_after == [], f"written after the clean-shutdown marker (stop {stop + 1})"
            held = segment_bytes(follower, topic, 0)
            assert len(held) > 0
            assert segment_bytes(cluster.brokers[leader], topic, 0)[: len(held)] == held, (
                f"the stopped follower's log is not a prefix of the leader's (stop {stop + 1})"
            )
            cluster.restart(follower.node_id)
            since = follower.log_since_last_start()
            assert "recovered log" not in since and "recovery:" not in since, since[-2000:]
            cluster.wait_isr(topic, 0, 3)
    finally:
        stop_bulk.set()
        bulk_thread.join(60)
        prod.finish()
    check_exactly_once_in_order(cluster.bootstrap, prod)
    wait_until(lambda: len({segment_bytes(b, topic, 0) for b in cluster.brokers}) == 1, 30,
               what="identical replicas")
