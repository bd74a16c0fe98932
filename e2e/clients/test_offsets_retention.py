"""Committed offsets expire as in Kafka (`offsets.retention.minutes`, KIP-211), seen through
confluent-kafka: offsets committed without group membership expire that long after their
commit; a consumer group's offsets stay while it has members, however old, and expire that
long after the group became empty, and the empty group ends with them; while the group is
stable, its offsets of topics no member subscribes to expire that long after their commit. Expiry is written to
`__consumer_offsets` as tombstones, so a restarted broker does not bring the offsets back.
A restarted broker lists its groups and expires their offsets without a request naming them.
The broker runs with a 3 s retention (10 s in the restart test) checked every 0.5 s
(`--offsets-retention-ms`, the test form of the minutes)."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from weir_harness import Broker, create_topic_ready, group_consumer_config, running_broker, wait_until  # noqa: E402

RETENTION_S = 3.0
CHECK_INTERVAL_S = 0.5
NO_OFFSET = ck.OFFSET_INVALID  # what committed() gives for a partition without a commit


class RetentionBroker(Broker):
    retention_s = RETENTION_S

    def args(self) -> list[str]:
        return super().args() + [
            "--offsets-retention-ms", str(int(self.retention_s * 1000)),
            "--offsets-retention-check-interval-ms", str(int(CHECK_INTERVAL_S * 1000)),
        ]  # fmt: skip


class RestartRetentionBroker(RetentionBroker):
    """Retention long enough for a restart to fit inside it."""

    retention_s = 10.0


@pytest.fixture()
def broker():
    with running_broker("weir-e2e-retention-", RetentionBroker) as b:
        yield b


def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> list[int]:
    """The group's committed offsets (OffsetFetch only: this consumer never joins)."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)]
    finally:
        c.close()


def assigned_member(bootstrap: str, group: str, topic: str, name: str):
    """A consumer subscribed to `topic` that has joined `group` and holds its assignment."""
    member = ck.Consumer(group_consumer_config(bootstrap, group, name))
    member.subscribe([topic])
    try:
        wait_until(lambda: member.poll(0.1) is None and bool(member.assignment()), 30, what="an assignment")
    except BaseException:
        member.close()
        raise
    return member


def keep_polling(member, seconds: float) -> None:
    """Poll (which keeps the member's session) for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        member.poll(0.1)


def listed_groups(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(20).valid}


def test_offsets_committed_without_membership_expire_after_the_retention(broker, topic_name):
    create_topic_ready(broker.bootstrap, topic_name, partitions=2)
    group = f"{topic_name}-standalone"
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic_name, 0, 5)], asynchronous=False)
        first = time.monotonic()
        time.sleep(1.5)
        c.commit(offsets=[TopicPartition(topic_name, 1, 7)], asynchronous=False)
        second = time.monotonic()
    finally:
        c.close()
    assert committed(broker.bootstrap, group, topic_name, 2) == [5, 7]
    assert group in listed_groups(broker.bootstrap)

    # Each offset's retention counts from its own commit.
    wait_until(lambda: committed(broker.bootstrap, group, topic_name, 2)[0] == NO_OFFSET, 20,
               interval=0.2, what="the first commit expired")
    assert time.monotonic() - first >= RETENTION_S - 0.2
    left = committed(broker.bootstrap, group, topic_name, 2)
    if time.monotonic() - second < RETENTION_S - CHECK_INTERVAL_S - 0.3:
        assert left == [NO_OFFSET, 7], "the younger commit expired with the older one"
    wait_until(lambda: committed(broker.bootstrap, group, topic_name, 2) == [NO_OFFSET, NO_OFFSET], 20,
               interval=0.2, what="the second commit expired")
    assert time.monotonic() - second >= RETENTION_S - 0.2
    wait_until(lambda: group not in listed_groups(broker.bootstrap), 10, what="the group gone from ListGroups")


def test_a_groups_offsets_expire_only_once_it_is_empty_and_stay_expired_after_a_restart(broker, topic_name):
    create_topic_ready(broker.bootstrap, topic_name)
    group = f"{topic_name}-group"
    member = assigned_member(broker.bootstrap, group, topic_name, "retention-member")
    try:
        member.commit(offsets=[TopicPartition(topic_name, 0, 3)], asynchronous=False)
        # Twice the retention with a live member: nothing expires.
        keep_polling(member, 2 * RETENTION_S)
        assert committed(broker.bootstrap, group, topic_name) == [3]
    finally:
        member.close()  # LeaveGroup: the group is empty from now
    emptied = time.monotonic()

    wait_until(lambda: committed(broker.bootstrap, group, topic_name) == [NO_OFFSET], 20, interval=0.2,
               what="the group's offsets expired")
    assert time.monotonic() - emptied >= RETENTION_S - 0.3
    wait_until(lambda: group not in listed_groups(broker.bootstrap), 10, what="the empty group gone")

    broker.stop()
    broker.start()
    assert committed(broker.bootstrap, group, topic_name) == [NO_OFFSET]
    assert group not in listed_groups(broker.bootstrap)


def test_a_stable_groups_offsets_of_unsubscribed_topics_expire_from_their_commit(broker, topic_name):
    subscribed, other = topic_name, f"{topic_name}-other"
    create_topic_ready(broker.bootstrap, subscribed)
    create_topic_ready(broker.bootstrap, other)
    group = f"{topic_name}-stable"
    member = assigned_member(broker.bootstrap, group, subscribed, "retention-stable")
    try:
        member.commit(offsets=[TopicPartition(subscribed, 0, 3), TopicPartition(other, 0, 9)], asynchronous=False)
        committed_at = time.monotonic()
        assert committed(broker.bootstrap, group, other) == [9]
        # The member stays (polling keeps its session); the offset of the topic it does not
        # subscribe to expires from its commit, the subscribed one stays.
        deadline = time.monotonic() + 20
        while committed(broker.bootstrap, group, other) != [NO_OFFSET]:
            assert time.monotonic() < deadline, "the unsubscribed topic's offset never expired"
            keep_polling(member, 0.5)
        assert time.monotonic() - committed_at >= RETENTION_S - 0.3
        keep_polling(member, RETENTION_S)
        assert committed(broker.bootstrap, group, subscribed) == [3]
        assert group in listed_groups(broker.bootstrap)
    finally:
        member.close()


def test_a_restarted_coordinator_lists_its_groups_and_expires_their_offsets_unasked(topic_name):
    """Kafka's coordinator loads a `__consumer_offsets` partition's groups when it is elected
    its leader, not when a request first names one of them: after a restart the group is
    listed before anything asks for it, and its offsets expire on time though nobody does."""
    with running_broker("weir-e2e-retention-restart-", RestartRetentionBroker) as broker:
        retention = RestartRetentionBroker.retention_s
        create_topic_ready(broker.bootstrap, topic_name)
        group = f"{topic_name}-unasked"
        c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            c.commit(offsets=[TopicPartition(topic_name, 0, 5)], asynchronous=False)
            committed_at = time.monotonic()
        finally:
            c.close()

        broker.kill()
        broker.start()
        # Only ListGroups from here until past the retention: no request names the group.
        wait_until(lambda: group in listed_groups(broker.bootstrap), 5, interval=0.2,
                   what="the group listed after the restart without a request naming it")
        assert time.monotonic() - committed_at < retention - 1, "the restart took most of the retention"
        wait_until(lambda: group not in listed_groups(broker.bootstrap), retention + 10, interval=0.5,
                   what="the unasked group expired")
        assert time.monotonic() - committed_at >= retention - 0.3
        assert committed(broker.bootstrap, group, topic_name) == [NO_OFFSET]
