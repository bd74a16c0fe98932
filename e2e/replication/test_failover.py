"""The classic replication test: 3 brokers, a topic with 3 partitions, replication factor 3,
min.insync.replicas=2. An idempotent confluent-kafka producer with acks=all sends a numbered
stream while the current leader of partition 0 is SIGKILLed five times in a row (and
restarted each time, waiting for the ISR to be whole again). Afterwards every acknowledged
message is present exactly once, in order per partition, and the replicas' logs are byte for
byte equal."""

from __future__ import annotations

import threading
import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicPartition  # noqa: E402

from test_min_isr import create, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402

PARTITIONS = 3
KILLS = 5


class NumberedProducer(threading.Thread):
    """Sends "p:seq" to partition p round robin until stopped; records what was acked."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        self.topic = topic
        self.stop = threading.Event()
        self.acked = {p: [] for p in range(PARTITIONS)}
        self.failed = []
        self.sent = 0
        self.producer = ck.Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 120_000,
                "request.timeout.ms": 10_000,
            }
        )

    def _report(self, err, msg):
        if err is None:
            self.acked[msg.partition()].append((msg.offset(), msg.value()))
        else:
            self.failed.append((msg.partition(), msg.value(), err))

    def run(self):
        seq = 0
        while not self.stop.is_set():
            p = seq % PARTITIONS
            try:
                self.producer.produce(self.topic, f"{p}:{seq}".encode(), partition=p, on_delivery=self._report)
                seq += 1
            except BufferError:
                self.producer.poll(0.05)
                continue
            self.producer.poll(0)
            if seq % 50 == 0:
                time.sleep(0.01)
        self.sent = seq
        self.producer.flush(150)


def leader_of(cluster, topic, partition):
    try:
        return cluster.partitions(topic)[partition]["leader"]
    except OSError:
        return None


def test_acknowledged_messages_survive_five_leader_kills(cluster):
    topic = "failover"
    create(cluster, topic, partitions=PARTITIONS, config={"min.insync.replicas": "2"})
    prod = NumberedProducer(cluster.bootstrap, topic)
    prod.start()
    wait_until(lambda: sum(len(v) for v in prod.acked.values()) > 300, 30, what="first acknowledgements")
    for kill in range(KILLS):
        # (a tuple: broker 0 is a valid, falsy, leader id)
        (leader,) = wait_until(lambda: (lambda l: l is not None and (l,))(leader_of(cluster, topic, 0)), 30,
                               what="a leader for partition 0")
        victim = cluster.brokers[leader]
        before = sum(len(v) for v in prod.acked.values())
        victim.kill()
        wait_until(lambda: leader_of(cluster, topic, 0) not in (None, leader), 30,
                   what=f"a new leader after killing {leader} (kill {kill + 1})")
        # Production goes on with the survivors (min.insync.replicas=2 holds).
        wait_until(lambda: sum(len(v) for v in prod.acked.values()) > before + 200, 60,
                   what=f"acknowledgements after kill {kill + 1}")
        cluster.restart(leader)
        for p in range(PARTITIONS):
            cluster.wait_isr(topic, p, 3, timeout=60)
    prod.stop.set()
    prod.join(200)
    assert not prod.is_alive(), "producer did not finish flushing"
    assert prod.failed == [], f"{len(prod.failed)} messages failed, first: {prod.failed[:3]}"

    # Every partition read from the beginning: each acknowledged message exactly once, in
    # the order it was sent, at the offset it was acknowledged with.
    c = ck.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "failover-check",
                     "enable.auto.commit": False})
    try:
        for p in range(PARTITIONS):
            want = prod.acked[p]
            c.assign([TopicPartition(topic, p, 0)])
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
            assert sorted(want) == sorted(got[: len(want)]) or set(want) <= set(got), (
                f"partition {p}: acknowledged messages missing: {sorted(set(want) - set(got))[:5]}"
            )
            assert set(want) <= set(got)
    finally:
        c.close()
    # The replicas agree byte for byte once the followers caught up.
    for p in range(PARTITIONS):
        wait_until(lambda: len({segment_bytes(b, topic, p) for b in cluster.brokers}) == 1, 30,
                   what=f"identical replicas of partition {p}")
