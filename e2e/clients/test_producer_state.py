"""Idempotent producer state as Kafka keeps it, seen through confluent-kafka:

- a producer whose batches were all deleted (DeleteRecords up to the high watermark) goes on
  after the broker is SIGKILLed and restarted, although the rebuilt state no longer knows it
  (Kafka accepts any sequence from a producer it has no state for);
- `producer.id.expiration.ms` (KIP-854): producers silent that long are forgotten, which
  `weir_log_producer_ids` (Kafka's ProducerIdCount) shows, and a forgotten one goes on too;
- DescribeProducers (kafka-python's `describe_producers`) lists what a partition holds;
- the state comes back after a clean stop (from the snapshot written at the log end) and
  after SIGKILL (from the snapshot of the last segment roll and the batches after it), and
  the producers go on without a duplicate or a gap."""

from __future__ import annotations

import re
import signal
import time
import urllib.request

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from weir_harness import Broker, create_topic_ready, running_broker, wait_until  # noqa: E402

kafka = pytest.importorskip("kafka")
from kafka.admin import KafkaAdminClient  # noqa: E402
from kafka.errors import UnknownTopicOrPartitionError  # noqa: E402
from kafka.structs import TopicPartition as KTP  # noqa: E402

EXPIRATION_MS = 3000


class ExpiringBroker(Broker):
    def args(self) -> list[str]:
        return super().args() + ["--producer-id-expiration-ms", str(EXPIRATION_MS)]


def producer_ids(broker) -> int:
    with urllib.request.urlopen(f"http://{broker.host}:{broker.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return int(float(re.search(r"^weir_log_producer_ids (\S+)$", text, re.M).group(1)))


class Sender:
    """One idempotent producer kept across the broker's restart; fatal errors are recorded."""

    def __init__(self, bootstrap):
        self.errors = []
        self.p = ck.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0,
                              "message.timeout.ms": 30_000, "error_cb": self.errors.append})  # fmt: skip

    def send(self, topic, values):
        reports = []
        for v in values:
            self.p.produce(topic, v, partition=0, on_delivery=lambda e, m: reports.append(e))
            assert self.p.flush(30) == 0
        assert reports == [None] * len(values), reports
        assert not [e for e in self.errors if e.fatal()], self.errors


def read_values(bootstrap, topic):
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-r", "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == ck.KafkaError._PARTITION_EOF, m.error()
                return out
            out.append(m.value())
        raise AssertionError("no end of partition")
    finally:
        c.close()


def test_a_producer_goes_on_after_its_batches_were_deleted_and_the_broker_restarted(fresh_broker, topic_name):
    b = fresh_broker
    create_topic_ready(b.bootstrap, topic_name)
    s = Sender(b.bootstrap)
    s.send(topic_name, [b"a", b"b", b"c"])
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    (f,) = admin.delete_records([TopicPartition(topic_name, 0, ck.OFFSET_END)]).values()
    assert f.result(20).low_watermark == 3
    b.kill()
    b.start()
    s.send(topic_name, [b"d", b"e"])
    assert read_values(b.bootstrap, topic_name) == [b"d", b"e"]


def test_idle_producers_expire_and_may_go_on(topic_name):
    with running_broker("weir-e2e-producer-expiry-", ExpiringBroker) as b:
        create_topic_ready(b.bootstrap, topic_name)
        senders = [Sender(b.bootstrap) for _ in range(3)]
        for i, s in enumerate(senders):
            s.send(topic_name, [f"{i}-0".encode()])
        wait_until(lambda: producer_ids(b) == 3, 10, what="three producer ids held")
        wait_until(lambda: producer_ids(b) == 0, 3 * EXPIRATION_MS / 1000 + 5, what="the idle producers forgotten")
        senders[0].send(topic_name, [b"0-1"])
        wait_until(lambda: producer_ids(b) == 1, 10, what="the one that went on held again")
        assert read_values(b.bootstrap, topic_name) == [b"0-0", b"1-0", b"2-0", b"0-1"]


def test_describe_producers_lists_a_partitions_idempotent_producers(broker, topic_name):
    create_topic_ready(broker.bootstrap, topic_name, partitions=2)
    started = int(time.time() * 1000)
    s = Sender(broker.bootstrap)
    s.send(topic_name, [b"a", b"b", b"c"])  # three batches: sequences 0, 1, 2
    plain = ck.Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce(topic_name, b"x", partition=1)
    assert plain.flush(10) == 0
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        result = admin.describe_producers([KTP(topic_name, 0), KTP(topic_name, 1)])
        (p,) = result[KTP(topic_name, 0)].active_producers
        assert p.producer_id >= 0 and p.producer_epoch == 0 and p.last_sequence == 2, p
        assert started - 1000 <= p.last_timestamp <= int(time.time() * 1000) + 1000, p
        assert (p.coordinator_epoch, p.current_transaction_start_offset) == (-1, -1)
        assert result[KTP(topic_name, 1)].active_producers == [], "a non-idempotent producer holds no state"
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.describe_producers([KTP(topic_name, 5)])
    finally:
        admin.close()


def held_producers(bootstrap, topic):
    """(producer id, epoch, last sequence) of every producer partition 0 of `topic` holds."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        ps = admin.describe_producers([KTP(topic, 0)])[KTP(topic, 0)].active_producers
        return sorted((p.producer_id, p.producer_epoch, p.last_sequence) for p in ps)
    finally:
        admin.close()


def test_producer_state_comes_back_from_snapshots_after_a_stop_and_a_kill(fresh_broker, topic_name):
    b = fresh_broker
    # Small segments: every few batches roll, and each roll snapshots the producer state.
    create_topic_ready(b.bootstrap, topic_name, config={"segment.bytes": "1024"})
    senders = [Sender(b.bootstrap) for _ in range(2)]
    for i, s in enumerate(senders):
        s.send(topic_name, [f"{i}-{n}".encode() * 60 for n in range(15)])
    before = held_producers(b.bootstrap, topic_name)
    assert [p[2] for p in before] == [14, 14], before
    part = b.data_dir / f"{topic_name}-0"
    rolls = sorted(int(f.stem) for f in part.glob("*.log"))[1:]
    assert len(rolls) >= 5, rolls

    assert b.stop(signal.SIGTERM) == 0
    snapshots = sorted(int(f.stem) for f in part.glob("*.snapshot"))
    assert snapshots == rolls + [30], "a snapshot at every roll and at the log end"
    b.start()
    assert held_producers(b.bootstrap, topic_name) == before

    for i, s in enumerate(senders):
        s.send(topic_name, [f"{i}-{n}".encode() * 60 for n in range(15, 20)])
    b.kill()
    b.start()
    after = held_producers(b.bootstrap, topic_name)
    assert [(p[0], p[1]) for p in after] == [(p[0], p[1]) for p in before]
    assert [p[2] for p in after] == [19, 19], after
    for i, s in enumerate(senders):
        s.send(topic_name, [f"{i}-{n}".encode() * 60 for n in range(20, 22)])
    got = read_values(b.bootstrap, topic_name)
    for i in range(2):
        mine = [v for v in got if v.startswith(f"{i}-".encode())]
        assert mine == [f"{i}-{n}".encode() * 60 for n in range(22)], mine
