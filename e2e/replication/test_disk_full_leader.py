"""A partition leader whose disk fills up: its append fails, it stops without a clean
shutdown (as Kafka halts when its last log directory fails), leadership moves to an in-sync
follower, and the producer goes on there. It moves at once: before stopping, the broker has
the quorum fence it, as in a controlled shutdown (Kafka waits for the session timeout here,
which the test sets to a minute, so only the fence can move it in time). Nothing acknowledged is lost, and with room again
the broker recovers, catches up and rejoins the ISR with the same bytes as the others.

Broker 0's data directory is on a tmpfs mounted for the test (root and mount(8) needed;
skipped otherwise); the disk is filled by a file beside the data, as anything else on the
volume would fill it.
"""

from __future__ import annotations

import subprocess

import pytest

pytest.importorskip("confluent_kafka")
from cluster import Cluster  # noqa: E402
from numbered import NumberedProducer, check_exactly_once_in_order  # noqa: E402
from test_min_isr import segment_bytes  # noqa: E402
from weir_harness import fill_file_system, remove_test_dir, small_file_system, wait_until  # noqa: E402

TOPIC = "full-leader"


def test_a_leader_with_a_full_disk_stops_and_leadership_moves():
    # Smaller than RocksDB's WAL preallocation, which then does not happen (see
    # e2e/clients/test_disk_full.py).
    root, fs = small_file_system("weir-e2e-repl-full-", 48)
    cluster = Cluster(root, session_timeout_ms=60_000)
    leader = cluster.brokers[0]
    leader.data_dir = fs / "data"
    prod = None
    try:
        cluster.start()
        # Broker 0 must not lead the metadata quorum: its metadata store is on the disk that
        # fills, so it could not commit its own fence. A restart hands the quorum on.
        # (Asked of broker 1: a restarted old quorum leader names itself until it hears of the
        # new term.)
        def quorum_leader():
            return cluster.brokers[1].http_json("GET", "/api/v1/cluster")["quorum"]["leader"]

        if quorum_leader() == 0:
            leader.stop()
            wait_until(lambda: quorum_leader() in (1, 2), 30, what="a quorum leader other than broker 0")
            cluster.restart(0)
        leader.http_json("POST", "/api/v1/topics", {"name": TOPIC, "assignment": [[0, 1, 2]],
                                                    "configs": {"min.insync.replicas": "2"}})  # fmt: skip
        cluster.wait_isr(TOPIC, 0, 3)
        prod = NumberedProducer(cluster.bootstrap, TOPIC, 1)
        prod.start()
        wait_until(lambda: prod.total_acked() > 1000, 30, what="first acknowledgements")

        fill_file_system(fs / "filler")
        wait_until(lambda: not leader.running(), 30, what="broker 0's exit after its disk filled")
        assert leader.proc.returncode not in (0, None), f"exit {leader.proc.returncode}"
        log = leader.log_since_last_start()
        assert "the data directory failed" in log, leader.tail()
        assert "clean shutdown complete" not in log, leader.tail()
        assert "controlled shutdown: fenced" in log, leader.tail()

        # Leadership is on an in-sync follower, and the producer goes on there.
        def moved():
            (p,) = cluster.partitions(TOPIC)
            return p["leader"] in (1, 2) and sorted(p["isr"]) == [1, 2]

        wait_until(moved, 15, what="leadership on broker 1 or 2, with broker 0 out of the ISR")
        before = prod.total_acked()
        wait_until(lambda: prod.total_acked() > before + 1000, 60, what="acknowledgements from the new leader")

        # Room again: broker 0 recovers its log, truncates what the others never got, catches
        # up and rejoins the ISR.
        (fs / "filler").unlink()
        cluster.restart(0)
        this_start = leader.log_since_last_start()
        assert "clean_shutdown=false" in this_start, "the restart did not recover the logs"
        # Its image from before the exit named it leader at epoch 0; it must not act on that.
        assert f"became leader partition={TOPIC}-0 leader_epoch=0" not in this_start, leader.tail()
        cluster.wait_isr(TOPIC, 0, 3)
        prod.finish()
        check_exactly_once_in_order(cluster.bootstrap, prod)
        wait_until(lambda: len({segment_bytes(b, TOPIC, 0) for b in cluster.brokers}) == 1, 30,
                   what="identical replicas")
    finally:
        if prod is not None and prod.is_alive():
            prod.stop.set()
        cluster.stop_all()
        subprocess.run(["umount", str(fs)], capture_output=True)
        remove_test_dir(root)

