"""A numbered acks=all stream from an idempotent confluent-kafka producer, and the check
that every acknowledged message is on the partition exactly once and in order; shared by the
failover, reassignment and drain tests."""

from __future__ import annotations

import threading
import time

import confluent_kafka as ck
from confluent_kafka import TopicPartition


class NumberedProducer(threading.Thread):
    """Sends "p:seq" to partitions 0..n-1 round robin until stopped; records what was acked."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, metadata_refresh_ms: int | None = 1000):
        super().__init__(daemon=True)
        self.topic = topic
        self.partitions = partitions
        self.stop = threading.Event()
        self.acked = {p: [] for p in range(partitions)}
        self.failed = []
        config = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 120_000,
            "request.timeout.ms": 10_000,
        }
        # None: librdkafka's own refresh interval (the failover test leaves recovery to it).
        if metadata_refresh_ms is not None:
            config["topic.metadata.refresh.interval.ms"] = metadata_refresh_ms
        self.producer = ck.Producer(config)

    def total_acked(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def _report(self, err, msg):
        if err is None:
            self.acked[msg.partition()].append((msg.offset(), msg.value()))
        else:
            self.failed.append((msg.partition(), msg.value(), err))

    def run(self):
        seq = 0
        while not self.stop.is_set():
            p = seq % self.partitions
            try:
                self.producer.produce(self.topic, f"{p}:{seq}".encode(), partition=p, on_delivery=self._report)
                seq += 1
            except BufferError:
                self.producer.poll(0.05)
                continue
            self.producer.poll(0)
            if seq % 50 == 0:
                time.sleep(0.01)
        self.producer.flush(150)

    def finish(self) -> None:
        self.stop.set()
        self.join(200)
        assert not self.is_alive(), "producer did not finish flushing"
        assert self.failed == [], f"{len(self.failed)} messages failed, first: {self.failed[:3]}"


def check_exactly_once_in_order(bootstrap: str, prod: NumberedProducer) -> None:
    """Read every partition from the start: each acknowledged message exactly once, in the
    order it was sent, at the offset it was acknowledged with.

    Some acknowledgements carry no offset: an idempotent librdkafka producer whose request
    got no answer (its connection cut by a broker kill) and whose next batch to the partition
    succeeded knows by the sequence numbers that the earlier batch was written too, and
    reports its messages delivered with offset -1001 (None here). Those are checked by value:
    present exactly once, in order, wherever they are."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{prod.topic}", "enable.auto.commit": False})
    try:
        for p in range(prod.partitions):
            want = prod.acked[p]
            c.assign([TopicPartition(prod.topic, p, 0)])
            got = []
            deadline = time.monotonic() + 60
            while len(got) < len(want) and time.monotonic() < deadline:
                for m in c.consume(1000, 1.0):
                    assert m.error() is None, m.error()
                    got.append((m.offset(), m.value()))
            values = [v for _, v in got]
            assert len(values) == len(set(values)), f"partition {p}: duplicates"
            seqs = [int(v.split(b":")[1]) for v in values]
            assert seqs == sorted(seqs), f"partition {p}: out of order"
            got_pairs = set(got)
            where = {v: o for o, v in got}
            missing = [(o, v) for o, v in want if (v not in where if o is None else (o, v) not in got_pairs)]
            if missing:
                # Say where each lost message went: elsewhere in the partition (acknowledged at
                # an offset it is not at) or nowhere, and what holds its acknowledged offset.
                at_offset = dict(got)
                lost = [f"{v.decode()} acked at {o}, found at {where.get(v)}, offset holds {at_offset.get(o)}"
                        for o, v in missing[:5]]  # fmt: skip
                raise AssertionError(f"partition {p}: {len(missing)} acknowledged messages missing: {lost}; "
                                     f"read {len(got)} up to offset {got[-1][0] if got else None}")  # fmt: skip
    finally:
        c.close()
