"""A group coordinator that loses its `__consumer_offsets` partition and gets it back must not
answer from what it held before: while it was away another broker coordinated the group and
took newer commits, which reached it only as replicated records. Nor may it write into that
partition while it only follows it (its session sweeper would expire members that now
heartbeat elsewhere and record the change). Here the coordinator is SIGSTOPped until
leadership moves, a commit goes to the new coordinator, then the old one resumes (a live
member of a second group on the same partition outlasts its session meanwhile), catches up
and is made leader again (preferred-leader election): the group's committed offset is the
newer one, and the partition's three replicas end byte for byte equal. Nor may it, leading
again, act on what it held before it reloaded the partition: its offsets retention would
delete a commit made while it was away by the time of the commit before. And a coordinator
that loses a group's partition answers the JoinGroup waiting there, so that the member moves
on to the new coordinator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicPartition  # noqa: E402

from test_min_isr import create, produce, segment_bytes  # noqa: E402
from weir_harness import all_threads_stopped, wait_until  # noqa: E402

OFFSETS_TOPIC = "__consumer_offsets"


def offsets_partition(group: str) -> int:
    """Kafka's choice: Java's String.hashCode of the group id, made positive, modulo 50."""
    units = group.encode("utf-16-be")
    h = 0
    for i in range(0, len(units), 2):
        h = (h * 31 + int.from_bytes(units[i:i + 2], "big")) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % 50


RETRIABLE = {ck.KafkaError.COORDINATOR_LOAD_IN_PROGRESS, ck.KafkaError.NOT_COORDINATOR,
             ck.KafkaError.COORDINATOR_NOT_AVAILABLE}


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """A synchronous commit, again while the coordinator is loading or moving (librdkafka hands
    those retriable errors of a synchronous commit to the application)."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
                return
            except ck.KafkaException as e:
                if e.args[0].code() not in RETRIABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=30)
        return tp.offset
    finally:
        c.close()


def start_member(bootstrap: str, group: str, topic: str, session_ms: int = 6000) -> subprocess.Popen:
    """A consumer process that joins `group` and polls until killed; prints once assigned."""
    script = textwrap.dedent(
        f"""
        import confluent_kafka as ck
        c = ck.Consumer({{"bootstrap.servers": "{bootstrap}", "group.id": "{group}",
                          "session.timeout.ms": {session_ms}, "heartbeat.interval.ms": 500}})
        c.subscribe(["{topic}"])
        told = False
        while True:
            c.poll(0.1)
            if c.assignment() and not told:
                print("assigned", flush=True)
                told = True
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def offsets_view(cluster, partition):
    return next(p for p in cluster.partitions(OFFSETS_TOPIC) if p["partition"] == partition)


def preferred_coordinator(cluster, group):
    """The group's `__consumer_offsets` partition and its coordinator, made the partition's
    preferred replica (so that a preferred-leader election brings it back after it moved)."""
    part = offsets_partition(group)
    cluster.wait_isr(OFFSETS_TOPIC, part, 3)
    coordinator = offsets_view(cluster, part)["replicas"][0]
    if offsets_view(cluster, part)["leader"] != coordinator:
        cluster.any_running().http_json("POST", "/api/v1/partitions/elect-preferred", {"topic": OFFSETS_TOPIC})
        wait_until(lambda: offsets_view(cluster, part)["leader"] == coordinator, 30,
                   what="the preferred replica leading the offsets partition")
    return part, coordinator


@pytest.mark.cluster_args(session_timeout_ms=3000)
def test_a_returning_coordinator_serves_the_commits_made_while_it_was_away(cluster):
    topic, group = "coordinated", "moving-group"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"m"] * 30)] == [None] * 30
    commit(cluster.bootstrap, group, topic, 10)
    assert committed(cluster.bootstrap, group, topic) == 10

    part, coordinator = preferred_coordinator(cluster, group)

    # A member of another group on the same partition, alive throughout.
    member_group = next(g for g in (f"members-{i}" for i in range(100_000)) if offsets_partition(g) == part)
    member = start_member(cluster.bootstrap, member_group, topic)
    try:
        assert member.stdout.readline().strip() == "assigned"
        check_moves(cluster, topic, group, part, coordinator)
    finally:
        member.kill()
        member.wait(10)
    wait_until(lambda: len({segment_bytes(b, OFFSETS_TOPIC, part) for b in cluster.brokers}) == 1, 30,
               what=f"identical replicas of {OFFSETS_TOPIC}-{part}")


def check_moves(cluster, topic, group, part, coordinator):
    cluster.sigstop(coordinator)
    try:
        wait_until(lambda: offsets_view(cluster, part)["leader"] not in (None, coordinator), 30,
                   what="the offsets partition led by another broker")
        others = ",".join(b.bootstrap for b in cluster.brokers if b.node_id != coordinator)
        commit(others, group, topic, 20)
        assert committed(others, group, topic) == 20
    finally:
        cluster.sigcont(coordinator)
    cluster.wait_isr(OFFSETS_TOPIC, part, 3)
    # Longer than the member's session: a sweeper that still acted on the old state would
    # expire it now (its heartbeats go to the new coordinator) and write that down.
    time.sleep(7)
    admin = cluster.any_running()
    resp = admin.http_json("POST", "/api/v1/partitions/elect-preferred", {"topic": OFFSETS_TOPIC})
    outcome = {r["partition"]: r["outcome"] for r in resp["results"]}.get(part)
    assert outcome == "elected", (outcome, offsets_view(cluster, part))
    wait_until(lambda: offsets_view(cluster, part)["leader"] == coordinator, 30,
               what="leadership back on the first coordinator")
    assert committed(cluster.bootstrap, group, topic) == 20


RETENTION_S = 20


@pytest.mark.cluster_args(
    session_timeout_ms=3000,
    extra_args=("--offsets-retention-ms", str(RETENTION_S * 1000), "--offsets-retention-check-interval-ms", "500"),
)
def test_a_returning_coordinator_expires_offsets_by_the_commits_made_while_it_was_away(cluster):
    """Offsets committed without group membership expire RETENTION_S after their commit.
    Offset 10 is committed at the coordinator, which is then SIGSTOPped until leadership of the
    group's partition moves; offset 20 is committed at the new coordinator seconds later; the
    old one resumes and is elected again. Until a request for the partition reloads it, it holds
    offset 10 and its commit time: a retention check acting on that would write a tombstone
    RETENTION_S after the first commit and delete offset 20, which has seconds more to live.
    Read after that moment (and before offset 20's own expiry), the offset is 20."""
    topic, group = "retained", "retained-group"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"m"] * 30)] == [None] * 30
    assert committed(cluster.bootstrap, group, topic) < 0  # (and __consumer_offsets exists)
    part, coordinator = preferred_coordinator(cluster, group)

    commit(cluster.bootstrap, group, topic, 10)
    first_commit = time.monotonic()
    cluster.sigstop(coordinator)
    try:
        wait_until(lambda: offsets_view(cluster, part)["leader"] not in (None, coordinator), 30,
                   what="the offsets partition led by another broker")
        others = ",".join(b.bootstrap for b in cluster.brokers if b.node_id != coordinator)
        # Late enough that the two commits' expiries lie well apart.
        time.sleep(max(0.0, first_commit + 8 - time.monotonic()))
        commit(others, group, topic, 20)
        second_commit = time.monotonic()
    finally:
        cluster.sigcont(coordinator)
    cluster.wait_isr(OFFSETS_TOPIC, part, 3)
    resp = cluster.any_running().http_json("POST", "/api/v1/partitions/elect-preferred", {"topic": OFFSETS_TOPIC})
    assert {r["partition"]: r["outcome"] for r in resp["results"]}.get(part) == "elected"
    wait_until(lambda: offsets_view(cluster, part)["leader"] == coordinator, 30,
               what="leadership back on the first coordinator")
    # Past the first commit's expiry (plus two retention checks), with no request for the
    # partition meanwhile.
    time.sleep(max(0.0, first_commit + RETENTION_S + 1.5 - time.monotonic()))
    assert time.monotonic() < second_commit + RETENTION_S - 2, "too slow to tell the two commits' expiries apart"
    assert committed(cluster.bootstrap, group, topic) == 20


@pytest.mark.cluster_args(session_timeout_ms=3000)
def test_a_join_waiting_at_a_coordinator_that_loses_the_group_is_answered(cluster):
    """A member waits in a JoinGroup at the coordinator for another member that froze
    (SIGSTOP; a 20 s session). Leadership of the group's partition then moves to
    another broker (preferred replica changed, preferred election). The old coordinator gives
    the group up, as Kafka's does, and answers the waiting JoinGroup (COORDINATOR_NOT_AVAILABLE),
    so the member finds the new coordinator, where the join completes once the frozen member's
    session runs out. Without that the member waits for its JoinGroup's own timeout, librdkafka's
    five-minute rebalance timeout."""
    topic, group = "handover", "handover-group"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    assert committed(cluster.bootstrap, group, topic) < 0  # (and __consumer_offsets exists)
    part, coordinator = preferred_coordinator(cluster, group)
    frozen = start_member(cluster.bootstrap, group, topic, session_ms=20000)
    waiting = None
    try:
        assert frozen.stdout.readline().strip() == "assigned"
        os.kill(frozen.pid, signal.SIGSTOP)
        wait_until(lambda: all_threads_stopped(frozen.pid), 5, interval=0.001, what="the frozen member stopped")
        waiting = ck.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "session.timeout.ms": 6000})
        waiting.subscribe([topic])
        until = time.monotonic() + 3  # its JoinGroup now waits at the coordinator for the frozen one
        while time.monotonic() < until:
            waiting.poll(0.1)
        assert waiting.assignment() == []
        replicas = offsets_view(cluster, part)["replicas"]
        successor = next(r for r in replicas if r != coordinator)
        admin = cluster.any_running()
        order = [successor] + [r for r in replicas if r != successor]
        admin.http_json("POST", "/api/v1/partitions/reassign",
                        {"partitions": [{"topic": OFFSETS_TOPIC, "partition": part, "replicas": order}]})  # fmt: skip
        admin.http_json("POST", "/api/v1/partitions/elect-preferred", {"topic": OFFSETS_TOPIC})
        wait_until(lambda: offsets_view(cluster, part)["leader"] == successor, 30,
                   what="leadership of the group's partition on another broker")  # fmt: skip
        moved_at = time.monotonic()
        while not waiting.assignment() and time.monotonic() < moved_at + 60:
            waiting.poll(0.1)
        took = time.monotonic() - moved_at
        assert waiting.assignment(), "the waiting member got no assignment within 60 s of the move"
        assert took < 45, f"assigned {took:.1f}s after the move, for a 20 s session of the frozen member"
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        frozen.kill()
        frozen.wait(10)
        if waiting is not None:
            waiting.close()
