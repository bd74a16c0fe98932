"""OffsetDelete (KIP-496, `kafka-consumer-groups --delete-offsets`) through kafka-python's
admin client: a group's committed offsets of some partitions go, the others stay; a consumer
group with a member keeps the offsets of the topics it subscribes to
(GROUP_SUBSCRIBED_TO_TOPIC) and loses the others; unknown partitions and groups get their
errors; and the deletion survives a SIGKILL of the broker (the tombstones are in
`__consumer_offsets`)."""

from __future__ import annotations

import time

import pytest

kafka = pytest.importorskip("kafka")
ck = pytest.importorskip("confluent_kafka")
from kafka.admin import KafkaAdminClient  # noqa: E402
from kafka.errors import (  # noqa: E402
    GroupIdNotFoundError,
    GroupSubscribedToTopicError,
    NoError,
    UnknownTopicOrPartitionError,
)
from kafka.structs import OffsetAndMetadata  # noqa: E402
from kafka.structs import TopicPartition as TP  # noqa: E402

from weir_harness import create_topic_ready, group_consumer_config  # noqa: E402


def committed(admin, group):
    return {tp: o.offset for tp, o in admin.list_group_offsets({group: None})[group].items()}


def commit(admin, group, offsets):
    """alter_group_offsets, again while the coordinator is still loading (a new broker's
    `__consumer_offsets`): kafka-python leaves partition errors to the caller."""
    deadline = time.monotonic() + 30
    while True:
        result = admin.alter_group_offsets(group, {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        if all(e is NoError for e in result.values()):
            return
        assert all(e is NoError or e.retriable for e in result.values()) and time.monotonic() < deadline, result
        time.sleep(0.2)


def test_offsets_of_some_partitions_are_deleted(broker, topic_name):
    other = f"{topic_name}-other"
    create_topic_ready(broker.bootstrap, topic_name, partitions=2)
    create_topic_ready(broker.bootstrap, other)
    group = f"g-{topic_name}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        commit(admin, group, {TP(topic_name, 0): 5, TP(topic_name, 1): 6, TP(other, 0): 7})
        result = admin.delete_group_offsets(
            group, [TP(topic_name, 0), TP(topic_name, 9), TP(f"{topic_name}-missing", 0)]
        )
        assert result == {
            TP(topic_name, 0): NoError,
            TP(topic_name, 9): UnknownTopicOrPartitionError,
            TP(f"{topic_name}-missing", 0): UnknownTopicOrPartitionError,
        }
        assert committed(admin, group) == {TP(topic_name, 1): 6, TP(other, 0): 7}

        # A member subscribed to `topic_name` holds its offsets; those of `other` can go.
        c = ck.Consumer(group_consumer_config(broker.bootstrap, group, "member"))
        try:
            c.subscribe([topic_name])
            deadline = time.monotonic() + 30
            while not c.assignment():
                assert time.monotonic() < deadline, "the member got no assignment"
                c.poll(0.2)
            result = admin.delete_group_offsets(group, [TP(topic_name, 1), TP(other, 0)])
            assert result == {TP(topic_name, 1): GroupSubscribedToTopicError, TP(other, 0): NoError}
            assert committed(admin, group) == {TP(topic_name, 1): 6}
        finally:
            c.close()
        # Left: nothing holds them any more.
        assert admin.delete_group_offsets(group, [TP(topic_name, 1)]) == {TP(topic_name, 1): NoError}
        assert committed(admin, group) == {}

        with pytest.raises(GroupIdNotFoundError):
            admin.delete_group_offsets(f"{group}-never", [TP(topic_name, 0)])
    finally:
        admin.close()


def test_deleted_offsets_stay_deleted_after_a_sigkill(fresh_broker, topic_name):
    b = fresh_broker
    create_topic_ready(b.bootstrap, topic_name, partitions=2)
    group = f"g-{topic_name}"
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        commit(admin, group, {TP(topic_name, 0): 3, TP(topic_name, 1): 4})
        assert admin.delete_group_offsets(group, [TP(topic_name, 0)]) == {TP(topic_name, 0): NoError}
    finally:
        admin.close()
    b.kill()
    b.start()
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert committed(admin, group) == {TP(topic_name, 1): 4}
                break
            except kafka.errors.KafkaError as e:  # the coordinator loading after the restart
                assert e.retriable and time.monotonic() < deadline, e
                time.sleep(0.2)
    finally:
        admin.close()
