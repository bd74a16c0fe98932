"""A failure soak: three brokers, a topic with six partitions, replication factor 3 and
min.insync.replicas=2, an idempotent acks=all confluent-kafka producer, and a confluent-kafka
group consumer (6 s session) that commits after every poll. For WEIR_SOAK_SECONDS (default
150) a seeded random sequence (WEIR_SOAK_SEED, default 1) of failures and admin moves runs:
SIGKILL of a partition leader, of the metadata quorum leader or of any broker; SIGSTOP of a
broker for up to seven seconds (beyond replica.lag.time.max.ms); SIGTERM; SIGKILL of two
brokers at once (no metadata quorum, no ISR of two) or of all three; a reassignment of a
partition to two or three replicas, half of the time with a broker SIGKILLed during it;
preferred-leader election. After each step every ISR is whole again and the producer has gone
on.

Afterwards: every acknowledged message is on its partition exactly once and in order, the
replicas are byte for byte equal, the group consumer read up to the end, its acknowledged
commits were not lost, and no broker exited unless the soak stopped it. The brokers' logs are
added to a failure's report and the steps taken are printed with the seed.

With the default seed the soak failed on the binary before dba98b1: the group consumer lost
its member id while two brokers were down and stayed without partitions, the coordinator
holding the rebalance for the stale member's five-minute rebalance timeout
(test_group_membership.py shows the same deterministically)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicPartition  # noqa: E402
from numbered import NumberedProducer, check_exactly_once_in_order  # noqa: E402
from test_min_isr import create, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402

PARTITIONS = 6
TOPIC = "soak"
GROUP = "soak-readers"


class CommittingConsumer(threading.Thread):
    """A subscribed group member that commits synchronously after every poll that returned
    records; remembers the highest offset each acknowledged commit stored per partition."""

    def __init__(self, bootstrap: str):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.read = 0
        self.committed: dict[int, int] = {}
        self.consumer = ck.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": GROUP,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6_000,
            }
        )
        self.consumer.subscribe([TOPIC])

    def run(self):
        while not self.stop.is_set():
            records = [m for m in self.consumer.consume(500, 0.5) if m.error() is None]
            if not records:
                continue
            self.read += len(records)
            try:
                for tp in self.consumer.commit(asynchronous=False):
                    if tp.error is None and tp.offset >= 0:
                        self.committed[tp.partition] = max(self.committed.get(tp.partition, -1), tp.offset)
            except ck.KafkaException:
                pass  # a commit refused during a failover; the next poll's commit covers it
        self.consumer.close()


class Soak:
    def __init__(self, cluster, rng: random.Random):
        self.cluster = cluster
        self.rng = rng
        self.stopped_by_us: set[int] = set()
        self.steps: list[str] = []

    def assert_nobody_exited(self):
        for i, b in enumerate(self.cluster.brokers):
            assert i in self.stopped_by_us or b.running(), f"broker {i} exited with {b.proc.returncode}"

    def kill(self, i: int):
        self.stopped_by_us.add(i)
        self.cluster.brokers[i].kill()

    def start(self, brokers: list[int]):
        for i in brokers:
            self.cluster.brokers[i].spawn()
        for i in brokers:
            self.cluster.brokers[i].wait_ready(120)
            self.stopped_by_us.discard(i)

    def admin(self):
        return self.cluster.any_running()

    def leader_of(self, partition: int) -> int:
        try:
            leader = self.cluster.partitions(TOPIC)[partition]["leader"]
        except OSError:
            leader = None
        return leader if leader is not None and leader >= 0 else self.rng.randrange(3)

    def quorum_leader(self) -> int:
        try:
            leader = self.admin().http_json("GET", "/api/v1/cluster", timeout=5)["quorum"]["leader"]
        except OSError:
            leader = None
        return leader if leader is not None else self.rng.randrange(3)

    def step(self) -> str:
        rng = self.rng
        action = rng.choice(
            ["kill_leader", "kill_leader", "kill_quorum_leader", "kill_any", "stop", "stop", "term",
             "kill_two", "kill_all", "reassign", "reassign", "elect"]
        )  # fmt: skip
        if action in ("kill_leader", "kill_quorum_leader", "kill_any", "term"):
            if action == "kill_leader":
                victim = self.leader_of(rng.randrange(PARTITIONS))
            elif action == "kill_quorum_leader":
                victim = self.quorum_leader()
            else:
                victim = rng.randrange(3)
            if action == "term":
                self.stopped_by_us.add(victim)
                code = self.cluster.brokers[victim].stop(signal.SIGTERM, timeout=60)
                assert code == 0, f"broker {victim} exited with {code} on SIGTERM"
            else:
                self.kill(victim)
            time.sleep(rng.uniform(0, 6))
            self.start([victim])
            return f"{action} {victim}"
        if action == "stop":
            victim = rng.randrange(3)
            self.cluster.sigstop(victim)
            time.sleep(rng.uniform(0.5, 7))
            self.cluster.sigcont(victim)
            return f"stop {victim}"
        if action in ("kill_two", "kill_all"):
            victims = rng.sample(range(3), 2) if action == "kill_two" else [0, 1, 2]
            for v in victims:
                self.kill(v)
            time.sleep(rng.uniform(0, 5))
            self.start(victims)
            return f"{action} {victims}"
        if action == "reassign":
            partition = rng.randrange(PARTITIONS)
            replicas = rng.sample(range(3), rng.choice([2, 3]))
            body = {"partitions": [{"topic": TOPIC, "partition": partition, "replicas": replicas}]}
            out = self.admin().http_json("POST", "/api/v1/partitions/reassign", body)
            what = f"reassign {partition} to {replicas}: {out['results'][0]['outcome']}"
            if rng.random() < 0.5:
                victim = rng.randrange(3)
                time.sleep(rng.uniform(0, 1))
                self.kill(victim)
                time.sleep(rng.uniform(0, 4))
                self.start([victim])
                what += f", broker {victim} SIGKILLed during it"
            wait_until(
                lambda: self.admin().http_json("GET", "/api/v1/partitions/reassignments", timeout=5)["reassignments"]
                == [],
                120, interval=0.3, what=f"{what} to finish",
            )  # fmt: skip
            return what
        out = self.admin().http_json("POST", "/api/v1/partitions/elect-preferred", {})
        return "elect preferred: " + ", ".join(sorted({r["outcome"] for r in out["results"]}))

    def every_isr_whole(self) -> bool:
        """In every live broker's view, each partition has a leader and its whole replica set
        in the ISR."""
        for b in self.cluster.brokers:
            if not b.running() or b.stopped:
                continue
            try:
                view = b.http_json("GET", f"/api/v1/partitions?topic={TOPIC}", timeout=5)["partitions"]
            except OSError:
                return False
            for p in view:
                if p["leader"] is None or p["leader"] < 0 or sorted(p["isr"]) != sorted(p["replicas"]):
                    return False
        return True


def test_nothing_acknowledged_is_lost_under_random_failures(cluster):
    seed = int(os.environ.get("WEIR_SOAK_SEED", "1"))
    seconds = float(os.environ.get("WEIR_SOAK_SECONDS", "150"))
    soak = Soak(cluster, random.Random(seed))
    create(cluster, TOPIC, partitions=PARTITIONS, config={"min.insync.replicas": "2", "segment.bytes": "262144"})
    prod = NumberedProducer(cluster.bootstrap, TOPIC, PARTITIONS)
    prod.start()
    reader = CommittingConsumer(cluster.bootstrap)
    reader.start()
    wait_until(lambda: prod.total_acked() > 500, 60, what="first acknowledgements")
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            acked = prod.total_acked()
            began = time.monotonic()
            what = soak.step()
            soak.assert_nobody_exited()
            wait_until(soak.every_isr_whole, 120, interval=0.3, what=f"every ISR whole after: {what}")
            wait_until(lambda: prod.total_acked() > acked + 200, 120, what=f"acknowledgements after: {what}")
            soak.assert_nobody_exited()
            soak.steps.append(f"{what} ({time.monotonic() - began:.1f} s, {prod.total_acked()} acked)")
            time.sleep(soak.rng.uniform(0, 2))
    finally:
        print(f"seed {seed}:\n" + "\n".join(soak.steps))
    prod.finish()
    total = prod.total_acked()
    wait_until(lambda: reader.read >= total, 120, what=f"the group consumer reading all {total} records")
    reader.stop.set()
    reader.join(30)
    check_exactly_once_in_order(cluster.bootstrap, prod)
    for p in range(PARTITIONS):
        holders = [cluster.brokers[r] for r in cluster.partitions(TOPIC)[p]["replicas"]]
        wait_until(lambda: len({segment_bytes(b, TOPIC, p) for b in holders}) == 1, 60,
                   what=f"identical replicas of partition {p}")  # fmt: skip
    check = ck.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": GROUP})
    try:
        stored = check.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        check.close()
    for tp in stored:
        assert tp.offset >= reader.committed.get(tp.partition, -1), f"an acknowledged commit of {tp.partition} was lost"
