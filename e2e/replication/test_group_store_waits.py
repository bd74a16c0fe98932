"""A consumer group's assignment is given out only once every in-sync replica of the group's
`__consumer_offsets` partition has the group metadata record (Kafka answers SyncGroup after
storing the group with acks=-1). Otherwise a coordinator failover could find the group one
generation behind the assignment its members already work with. Here a follower of that
partition is SIGSTOPped while still in the ISR (lag and session timeouts are long): a new
member joins but gets no assignment; once the follower resumes and fetches the record, the
member is assigned. Then the coordinator is SIGKILLed: the new coordinator knows the group in
the member's generation, so the member keeps its assignment without a second rebalance."""

from __future__ import annotations

import select
import subprocess
import sys
import textwrap
import time

import pytest

ck = pytest.importorskip("confluent_kafka")

from test_coordinator_moves import OFFSETS_TOPIC, commit, offsets_partition, offsets_view  # noqa: E402
from test_min_isr import create  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def start_member(bootstrap: str, group: str, topic: str) -> subprocess.Popen:
    """A consumer process that joins `group`, polls until killed, and prints a line for every
    assignment and revocation it gets."""
    script = textwrap.dedent(
        f"""
        import confluent_kafka as ck
        c = ck.Consumer({{"bootstrap.servers": "{bootstrap}", "group.id": "{group}",
                          "session.timeout.ms": 45000, "heartbeat.interval.ms": 500,
                          "partition.assignment.strategy": "range"}})
        def assigned(consumer, parts):
            print("assigned", len(parts), flush=True)
        def revoked(consumer, parts):
            print("revoked", len(parts), flush=True)
        c.subscribe(["{topic}"], on_assign=assigned, on_revoke=revoked)
        while True:
            c.poll(0.1)
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def line_within(proc: subprocess.Popen, seconds: float) -> str | None:
    """The member's next output line, or None if it prints nothing for `seconds`."""
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return proc.stdout.readline().strip() if ready else None


# The stopped follower must stay in the ISR (lag) and registered (broker session) while stopped;
# the member's session must outlast the coordinator's failover (the broker session).
@pytest.mark.cluster_args(session_timeout_ms=15000, lag_time_max_ms=30000)
def test_an_assignment_is_given_only_once_the_isr_has_it(cluster):
    topic, group = "store-waits", "store-waits-group"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    part = offsets_partition(group)
    # Any commit creates __consumer_offsets; then all three replicas of the group's partition.
    commit(cluster.bootstrap, "creates-offsets-topic", topic, 1)
    view = cluster.wait_isr(OFFSETS_TOPIC, part, 3)
    coordinator = view["leader"]
    follower = next(r for r in view["replicas"] if r != coordinator)
    others = ",".join(b.bootstrap for b in cluster.brokers if b.node_id != follower)

    cluster.sigstop(follower)
    member = start_member(others, group, topic)
    try:
        try:
            # Joining takes the initial rebalance delay (3 s); the record's write then waits.
            early = line_within(member, 10)
            assert early is None, f"assigned while a member of the ISR lacked the group record: {early!r}"
            assert len(offsets_view(cluster, part)["isr"]) == 3, "the stopped follower left the ISR"
        finally:
            cluster.sigcont(follower)
        assert line_within(member, 30) == "assigned 1"

        # The group record is on every replica: a new coordinator continues the generation.
        cluster.brokers[coordinator].kill()
        wait_until(lambda: offsets_view(cluster, part)["leader"] not in (None, coordinator), 45,
                   what="another broker leading the offsets partition")
        later = line_within(member, 15)
        assert later is None, f"the member was rebalanced after the coordinator moved: {later!r}"
    finally:
        member.kill()
        member.wait(10)
