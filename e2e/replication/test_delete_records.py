"""DeleteRecords with replication factor 3, through confluent-kafka's AdminClient: the answer
waits until every replica on a live broker has moved its log start (Kafka's low watermark);
a follower that cannot fetch (SIGSTOPped, still registered) holds the answer back until the
request's timeout (REQUEST_TIMED_OUT, the leader's start moved all the same), and takes the new
start at its next fetch; each replica checkpoints it, and a new leader after the old one
stopped serves from it."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from test_min_isr import create  # noqa: E402
from weir_harness import wait_until  # noqa: E402

RECORDS = 40


def local_start(broker, topic):
    view = broker.http_json("GET", f"/api/v1/partitions?topic={topic}")["partitions"]
    return next(p for p in view if p["partition"] == 0)["log_start_offset"]


def checkpointed_start(broker, topic):
    lines = (broker.data_dir / "log-start-offset-checkpoint").read_text().splitlines()[2:]
    return next(int(off) for t, p, off in (line.split() for line in lines) if t == topic and p == "0")


def delete(admin, topic, offset, timeout_s):
    (f,) = admin.delete_records([TopicPartition(topic, 0, offset)], operation_timeout=timeout_s).values()
    return f.result(timeout_s + 20).low_watermark


@pytest.mark.cluster_args(session_timeout_ms=60_000, lag_time_max_ms=60_000)
def test_delete_records_waits_for_every_live_replica(cluster):
    topic = "delete-records"
    create(cluster, topic, config={"segment.bytes": "2048", "min.insync.replicas": "2"})
    p = ck.Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(RECORDS):
        p.produce(topic, f"record-{i:03d}".encode() * 8, partition=0)
        assert p.flush(10) == 0
    leader = cluster.partitions(topic)[0]["leader"]
    stopped, running = [i for i in range(3) if i != leader]
    admin = AdminClient({"bootstrap.servers": cluster.brokers[leader].bootstrap})
    admin.list_topics(topic, timeout=10)

    assert delete(admin, topic, 10, 10) == 10
    for b in cluster.brokers:
        assert local_start(b, topic) == 10
        assert checkpointed_start(b, topic) == 10

    cluster.sigstop(stopped)
    try:
        started = time.monotonic()
        with pytest.raises(KafkaException) as e:
            delete(admin, topic, 25, 2)
        assert e.value.args[0].code() == KafkaError.REQUEST_TIMED_OUT
        assert time.monotonic() - started < 10
        # The leader and the running follower moved; the stopped one could not.
        wait_until(lambda: local_start(cluster.brokers[running], topic) == 25, 10, what="the running follower's start")
        assert local_start(cluster.brokers[leader], topic) == 25
    finally:
        cluster.sigcont(stopped)
    wait_until(lambda: local_start(cluster.brokers[stopped], topic) == 25, 20, what="the resumed follower's start")
    assert delete(admin, topic, 25, 10) == 25
    assert checkpointed_start(cluster.brokers[stopped], topic) == 25

    # A new leader serves from the moved start (SIGTERM: fenced at once, where a SIGKILLed
    # broker would keep leading until this test's 60 s session ran out).
    cluster.brokers[leader].stop()
    wait_until(lambda: cluster.partitions(topic)[0]["leader"] not in (leader, -1), 30, what="a new leader")
    c = ck.Consumer({"bootstrap.servers": cluster.brokers[running].bootstrap, "group.id": "delete-records",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    try:
        wait_until(
            lambda: c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (25, RECORDS),
            30,
            what="the new leader's watermarks",
        )
        c.assign([TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
        m = None
        deadline = time.monotonic() + 20
        while m is None and time.monotonic() < deadline:
            m = c.poll(1.0)
        assert m is not None and m.error() is None and m.offset() == 25
    finally:
        c.close()


def test_a_new_replica_catches_up_from_a_log_start_inside_a_batch(cluster):
    """DeleteRecords can put the log start inside a batch; a replica added afterwards fetches
    from that start, is sent the whole batch holding it, and must take it (Kafka restarts the
    empty log at the batch's base offset). Found by a failure soak: the reassignment never
    completed, the new replica refusing the batch at every fetch."""
    topic = "delete-records-mid-batch"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    (f,) = admin.create_topics([NewTopic(topic, 1, -1, replica_assignment=[[0, 1]])], operation_timeout=10).values()
    f.result(30)
    cluster.wait_isr(topic, 0, 2)
    p = ck.Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 200})
    for i in range(100):
        p.produce(topic, f"record-{i:03d}".encode(), partition=0)
    assert p.flush(10) == 0  # one batch, offsets 0..99
    assert delete(admin, topic, 50, 10) == 50

    out = cluster.brokers[0].http_json(
        "POST", "/api/v1/partitions/reassign", {"partitions": [{"topic": topic, "partition": 0, "replicas": [0, 1, 2]}]}
    )
    assert out["results"][0]["outcome"] in ("started", "completed"), out
    wait_until(lambda: cluster.brokers[0].http_json("GET", "/api/v1/partitions/reassignments")["reassignments"] == [],
               30, what="the reassignment done")  # fmt: skip
    cluster.wait_isr(topic, 0, 3)
    new = cluster.brokers[2]
    assert local_start(new, topic) == 50
    assert checkpointed_start(new, topic) == 50
    view = new.http_json("GET", f"/api/v1/partitions?topic={topic}")["partitions"][0]
    assert view["log_end_offset"] == 100
