"""Classic-group membership details with librdkafka (confluent-kafka): a member that dies
without leaving is expired after its session timeout; a static member (group.instance.id)
restarts into its old assignment without a rebalance (KIP-345); and the coordinator writes
the group's metadata to __consumer_offsets, so after a broker restart the running members
go on in their generation with the same member ids and no rebalance."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import ConsumerGroupState  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from weir_harness import all_threads_stopped, create_topic_ready, group_consumer_config, wait_until  # noqa: E402


class Member:
    """A subscribed consumer that counts its rebalance callbacks."""

    def __init__(self, broker, group, topic, client_id, **extra):
        # The classic protocol's eager assignor: every rebalance revokes and assigns.
        extra.setdefault("partition.assignment.strategy", "range")
        self.consumer = ck.Consumer(group_consumer_config(broker.bootstrap, group, client_id, **extra))
        self.assigns = 0
        self.revokes = 0
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.assigns += 1

    def _on_revoke(self, consumer, partitions):
        self.revokes += 1

    def partitions(self):
        return sorted(tp.partition for tp in self.consumer.assignment())

    def poll(self, seconds=0.1):
        m = self.consumer.poll(seconds)
        assert m is None or not m.error(), m.error()
        return m


def poll_all(members, until, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            m.poll(0.05)
        if until():
            return
    raise AssertionError(f"{what} not reached in {timeout}s: {[m.partitions() for m in members]}")


def describe(broker, group):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    return admin.describe_consumer_groups([group])[group].result(30)


def wait_stable_pair(broker, group, a, timeout, what):
    """Until the group is Stable with two members, `a` (polled meanwhile) holding 2 of its 4
    partitions."""

    def settled():
        a.poll(0.05)
        desc = describe(broker, group)
        return desc.state == ConsumerGroupState.STABLE and len(desc.members) == 2 and len(a.partitions()) == 2

    wait_until(settled, timeout, what=what)


def victim_process(broker, group, topic):
    """A member in a process of its own, to be SIGKILLed: a 6 s session and librdkafka's
    default rebalance timeout (max.poll.interval.ms, five minutes)."""
    script = textwrap.dedent(
        f"""
        import sys, confluent_kafka as ck
        c = ck.Consumer({{"bootstrap.servers": "{broker.bootstrap}", "group.id": "{group}",
                          "client.id": "victim", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                          "partition.assignment.strategy": "range"}})
        c.subscribe(["{topic}"])
        while True:
            c.poll(0.1)
            if c.assignment():
                print("assigned", len(c.assignment()), flush=True)
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def test_killed_member_is_expired_after_its_session_timeout(broker, topic_name):
    """A consumer process SIGKILLed sends no LeaveGroup: only session expiry can hand its
    partitions to the survivor, and that takes about session.timeout.ms (6 s here)."""
    create_topic_ready(broker.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    victim = victim_process(broker, group, topic_name)
    survivor = Member(broker, group, topic_name, "survivor")
    try:
        poll_all([survivor], lambda: len(survivor.partitions()) == 2, 45, "a 2/2 split with the victim")
        assert victim.poll() is None, "the victim consumer process exited early"
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        poll_all([survivor], lambda: len(survivor.partitions()) == 4, 30, "the survivor taking all 4 partitions")
        took = time.monotonic() - killed_at
        # Not before the session could have run out (minus the victim's heartbeat interval and
        # the coordinator's sweep), and not long after it.
        assert took >= 4.5, f"partitions moved {took:.1f}s after the kill: before the 6s session timeout"
        assert took <= 20, f"expiry took {took:.1f}s for a 6s session timeout"
        desc = describe(broker, group)
        assert [m.client_id for m in desc.members] == ["survivor"]
        # Kafka's form of the address the member joined from.
        assert [m.host for m in desc.members] == ["/127.0.0.1"]
        assert desc.state == ConsumerGroupState.STABLE
    finally:
        if victim.poll() is None:
            victim.kill()
        survivor.consumer.close()


def test_killed_member_holds_a_join_phase_only_for_its_session_timeout(broker, topic_name):
    """A member SIGKILLed just before a new member joins can neither rejoin nor heartbeat. As
    in Kafka, the coordinator drops it once its session (6 s) runs out and the join phase
    completes then, not at its rebalance timeout (librdkafka's default five minutes). The same
    holds for a member restored from __consumer_offsets after a coordinator failover whose
    client has since lost its member id (seen in a failure soak: the group stalled for
    minutes)."""
    create_topic_ready(broker.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    victim = victim_process(broker, group, topic_name)
    a = Member(broker, group, topic_name, "a")
    c = None
    try:
        wait_stable_pair(broker, group, a, 45, "a stable group of a and the victim")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        c = Member(broker, group, topic_name, "c")
        poll_all([a, c], lambda: len(a.partitions()) == 2 and len(c.partitions()) == 2, 40, "a and c sharing all 4")
        took = time.monotonic() - killed_at
        assert took <= 20, f"the join phase took {took:.1f}s after the kill, for a 6s session timeout"
        desc = describe(broker, group)
        assert sorted(m.client_id for m in desc.members) == ["a", "c"]
        assert desc.state == ConsumerGroupState.STABLE
    finally:
        if victim.poll() is None:
            victim.kill()
        a.consumer.close()
        if c is not None:
            c.consumer.close()


def test_member_that_does_not_rejoin_is_dropped_after_the_rebalance_timeout(broker, topic_name):
    """A frozen member (SIGSTOP) with a 45 s session but an 8 s rebalance timeout
    (max.poll.interval.ms) cannot rejoin when a third member arrives: the coordinator ends
    the join phase at the rebalance timeout without it, long before its session would
    expire. After SIGCONT it finds itself fenced (UNKNOWN_MEMBER_ID) and rejoins."""
    create_topic_ready(broker.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    # kafka-python, because librdkafka refuses max.poll.interval.ms below session.timeout.ms.
    script = textwrap.dedent(
        f"""
        import kafka
        c = kafka.KafkaConsumer("{topic_name}", bootstrap_servers="{broker.bootstrap}", group_id="{group}",
                                client_id="frozen", session_timeout_ms=45000, heartbeat_interval_ms=500,
                                max_poll_interval_ms=8000, request_timeout_ms=60000)
        while True:
            c.poll(100)
        """
    )
    frozen = subprocess.Popen([sys.executable, "-c", script])
    quick = {"session.timeout.ms": 6000, "max.poll.interval.ms": 8000}
    a = Member(broker, group, topic_name, "a", **quick)
    c = None
    try:
        poll_all([a], lambda: len(a.partitions()) == 2, 45, "a 2/2 split with the frozen member")
        # Freeze it only in a settled group: a JoinGroup of the frozen member still waiting at
        # the coordinator would count as joined in the next rebalance (seen once in CI: a
        # three-member generation, a [0, 1], c [2], frozen [3]).
        wait_stable_pair(broker, group, a, 30, "a stable group of a and the frozen member")
        frozen.send_signal(signal.SIGSTOP)
        # Only once it is really stopped: a thread still running could rejoin in time.
        wait_until(lambda: all_threads_stopped(frozen.pid), 5, interval=0.001, what="the frozen member stopped")
        c = Member(broker, group, topic_name, "c", **quick)
        joined_at = time.monotonic()
        poll_all([a, c], lambda: len(a.partitions()) == 2 and len(c.partitions()) == 2, 40, "a and c sharing all 4")
        took = time.monotonic() - joined_at
        assert took < 25, f"the join phase waited {took:.1f}s: for the frozen member's session, not the rebalance timeout"
        assert sorted(m.client_id for m in describe(broker, group).members) == ["a", "c"]

        frozen.send_signal(signal.SIGCONT)
        wait_until(lambda: len(describe(broker, group).members) == 3, 40, what="the frozen member rejoining")
    finally:
        if frozen.poll() is None:
            frozen.send_signal(signal.SIGCONT)
            frozen.kill()
        a.consumer.close()
        if c is not None:
            c.consumer.close()


def test_static_member_restart_keeps_assignment_without_rebalance(broker, topic_name):
    create_topic_ready(broker.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    # Client ids order the member ids, so "a" is the group leader and "b" the static member
    # that restarts (a restarting leader on JoinGroup < v9 rebalances, as in Kafka).
    a = Member(broker, group, topic_name, "a")
    b = Member(broker, group, topic_name, "b", **{"group.instance.id": "pod-b", "session.timeout.ms": 10000})
    try:
        poll_all([a, b], lambda: len(a.partitions()) == 2 and len(b.partitions()) == 2, 45, "a 2/2 split")
        before = (a.partitions(), b.partitions())
        a_assigns = a.assigns
        old_ids = {m.client_id: m.member_id for m in describe(broker, group).members}

        # A static member leaves no LeaveGroup behind on close (KIP-345).
        b.consumer.close()
        b = Member(broker, group, topic_name, "b", **{"group.instance.id": "pod-b", "session.timeout.ms": 10000})
        poll_all([a, b], lambda: b.partitions() == before[1], 30, "the restarted static member's old partitions")
        # Keep polling a while: a rebalance, had one been started, would show up here.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            a.poll(0.05)
            b.poll(0.05)
        assert (a.partitions(), b.partitions()) == before
        assert a.assigns == a_assigns and a.revokes == 0, "the other member saw a rebalance"
        members = {m.client_id: m for m in describe(broker, group).members}
        assert members["b"].group_instance_id == "pod-b"
        assert members["b"].member_id != old_ids["b"], "a restarted static member gets a new member id"
        assert members["a"].member_id == old_ids["a"]
    finally:
        a.consumer.close()
        b.consumer.close()


def test_members_keep_their_generation_across_a_broker_restart(fresh_broker, topic_name):
    """Group metadata is replayed from __consumer_offsets: after SIGKILL and restart the
    coordinator knows the members, their heartbeats succeed, and nobody rebalances."""
    create_topic_ready(fresh_broker.bootstrap, topic_name, partitions=4)
    group = f"g-{topic_name}"
    members = [Member(fresh_broker, group, topic_name, c, **{"session.timeout.ms": 30000}) for c in ("a", "b")]
    try:
        poll_all(members, lambda: all(len(m.partitions()) == 2 for m in members), 45, "a 2/2 split")
        ids = sorted(m.member_id for m in describe(fresh_broker, group).members)
        assigns = [m.assigns for m in members]
        split = [m.partitions() for m in members]

        fresh_broker.stop(signal.SIGKILL)
        fresh_broker.start()
        # Before the members could have rejoined: the restarted coordinator already knows them.
        desc = describe(fresh_broker, group)
        assert desc.state == ConsumerGroupState.STABLE, desc.state
        assert sorted(m.member_id for m in desc.members) == ids

        # The members reconnect and heartbeat in their old generation: no rebalance.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for m in members:
                m.poll(0.05)
        assert [m.assigns for m in members] == assigns, "a member was reassigned after the restart"
        assert [m.revokes for m in members] == [0, 0]
        assert [m.partitions() for m in members] == split
        assert sorted(m.member_id for m in describe(fresh_broker, group).members) == ids
    finally:
        for m in members:
            m.consumer.close()


def test_session_timeout_below_the_group_minimum_is_refused(broker, topic_name):
    """group.min.session.timeout.ms is 6000, as in Kafka: a 3 s session gets
    INVALID_SESSION_TIMEOUT, which librdkafka surfaces to the application."""
    create_topic_ready(broker.bootstrap, topic_name)
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic_name}",
                     "session.timeout.ms": 3000, "heartbeat.interval.ms": 500})
    try:
        c.subscribe([topic_name])
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error():
                seen.append(m.error().code())
                if m.error().code() == ck.KafkaError.INVALID_SESSION_TIMEOUT:
                    break
        assert ck.KafkaError.INVALID_SESSION_TIMEOUT in seen, f"errors seen: {seen}"
        assert c.assignment() == []
    finally:
        c.close()
