"""DeleteRecords (KIP-107) through confluent-kafka's and kafka-python's admin clients: the
log start moves to the given offset (records below it are gone for consumers, ListOffsets
earliest names it, the segments wholly below it are deleted from disk), -1 means the high
watermark, the proper errors for offsets past the high watermark, unknown topics, compacted
and internal topics, and the start survives a SIGKILL."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from weir_harness import create_topic_ready  # noqa: E402

SEGMENT_BYTES = 2048
RECORDS = 60


def produce_one_batch_each(bootstrap, topic, count):
    """`count` records, each its own batch (flushed one by one), so segments roll often."""
    p = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(count):
        p.produce(topic, f"record-{i:03d}".encode() * 8, partition=0)
        assert p.flush(10) == 0
    return p


def first_offset_read(bootstrap, topic, start, reset="earliest"):
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "enable.auto.commit": False,
                     "auto.offset.reset": reset})  # fmt: skip
    try:
        c.assign([TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            assert m.error() is None, m.error()
            return m.offset()
        raise AssertionError("nothing read")
    finally:
        c.close()


def segment_bases(broker, topic):
    return sorted(int(f.stem) for f in (broker.data_dir / f"{topic}-0").glob("*.log"))


def delete(admin, topic, offset):
    (f,) = admin.delete_records([TopicPartition(topic, 0, offset)], operation_timeout=10).values()
    return f.result(20).low_watermark


def error_of(admin, topic, offset):
    with pytest.raises(KafkaException) as e:
        delete(admin, topic, offset)
    return e.value.args[0].code()


def test_confluent_kafka_deletes_records_below_an_offset(broker, topic_name):
    create_topic_ready(broker.bootstrap, topic_name, config={"segment.bytes": str(SEGMENT_BYTES)})
    produce_one_batch_each(broker.bootstrap, topic_name, RECORDS)
    bases = segment_bases(broker, topic_name)
    assert len(bases) >= 4, bases
    cut = bases[2] + 1  # inside the third segment
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    assert delete(admin, topic_name, cut) == cut
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dr-watermarks"})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10, cached=False) == (cut, RECORDS)
    finally:
        c.close()
    # The first two segments held only records below the cut; the third still holds some.
    assert segment_bases(broker, topic_name) == bases[2:]
    assert first_offset_read(broker.bootstrap, topic_name, ck.OFFSET_BEGINNING) == cut
    # A consumer asking for a deleted offset is out of range and resets to the new start.
    assert first_offset_read(broker.bootstrap, topic_name, 5) == cut

    # Never backwards: an offset below the start changes nothing.
    assert delete(admin, topic_name, 3) == cut
    assert error_of(admin, topic_name, RECORDS + 1) == KafkaError.OFFSET_OUT_OF_RANGE
    # -1 (OFFSET_END): everything up to the high watermark.
    assert delete(admin, topic_name, ck.OFFSET_END) == RECORDS
    assert segment_bases(broker, topic_name) == [bases[-1]], "the active segment stays"
    p = ck.Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topic_name, b"after", partition=0)
    assert p.flush(10) == 0
    assert first_offset_read(broker.bootstrap, topic_name, ck.OFFSET_BEGINNING) == RECORDS


def test_delete_records_errors(broker, topic_name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    compacted = f"{topic_name}-compacted"
    create_topic_ready(broker.bootstrap, compacted, config={"cleanup.policy": "compact"})
    p = ck.Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(compacted, b"v", key=b"k", partition=0)
    assert p.flush(10) == 0
    assert error_of(admin, compacted, 1) == KafkaError.POLICY_VIOLATION
    # The group offsets topic is created by a group's first FindCoordinator.
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic_name}-g"})
    try:
        c.list_topics(timeout=10)
        deadline = time.monotonic() + 20
        while "__consumer_offsets" not in admin.list_topics(timeout=10).topics:
            assert time.monotonic() < deadline, "__consumer_offsets was not created"
            c.poll(0.2)
    finally:
        c.close()
    partitions = admin.list_topics("__consumer_offsets", timeout=10).topics["__consumer_offsets"].partitions
    (f,) = admin.delete_records([TopicPartition("__consumer_offsets", 0, 0)], operation_timeout=10).values()
    with pytest.raises(KafkaException) as e:
        f.result(20)
    assert partitions and e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION


def test_kafka_python_deletes_records(broker, topic_name):
    kafka = pytest.importorskip("kafka")
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition as KTP

    create_topic_ready(broker.bootstrap, topic_name)
    produce_one_batch_each(broker.bootstrap, topic_name, 10)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        result = admin.delete_records({KTP(topic_name, 0): 7}, timeout_ms=10_000)
        assert result[KTP(topic_name, 0)]["low_watermark"] == 7, result
        consumer = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap)
        try:
            assert consumer.beginning_offsets([KTP(topic_name, 0)]) == {KTP(topic_name, 0): 7}
        finally:
            consumer.close()
        with pytest.raises(kafka.errors.OffsetOutOfRangeError):
            admin.delete_records({KTP(topic_name, 0): 11}, timeout_ms=10_000)
        # Sent to the broker as it is (librdkafka refuses a topic it cannot find a leader for
        # before sending anything).
        with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
            admin.delete_records({KTP(f"{topic_name}-missing", 0): 0}, timeout_ms=10_000, partition_leader_id=0)
    finally:
        admin.close()


def test_the_log_start_survives_a_sigkill(fresh_broker, topic_name):
    b = fresh_broker
    create_topic_ready(b.bootstrap, topic_name, config={"segment.bytes": str(SEGMENT_BYTES)})
    produce_one_batch_each(b.bootstrap, topic_name, 30)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert delete(admin, topic_name, 17) == 17
    b.kill()
    b.start()
    c = ck.Consumer({"bootstrap.servers": b.bootstrap, "group.id": "dr-restart"})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10, cached=False) == (17, 30)
    finally:
        c.close()
    assert first_offset_read(b.bootstrap, topic_name, ck.OFFSET_BEGINNING) == 17
