"""ISR upkeep and divergence with real processes and confluent-kafka:

- a follower SIGSTOPped beyond replica.lag.time.max.ms leaves the ISR (the quorum's session
  timeout is set far longer, so it is the leader's lag rule that removes it), acks=all keeps
  working at ISR=2, and after SIGCONT it catches up and rejoins;
- a deposed leader holding records only it has (acks=1, never replicated) truncates them when
  it returns as a follower, and its log then equals the new leader's byte for byte."""

from __future__ import annotations

import threading
import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError  # noqa: E402

from test_min_isr import consume_all, create, local_offsets, produce, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def metric(broker, name):
    for line in broker.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@pytest.mark.cluster_args(session_timeout_ms=60_000, lag_time_max_ms=3000)
def test_sigstopped_follower_leaves_the_isr_and_rejoins(cluster):
    topic = "lagging"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    leader = cluster.partitions(topic)[0]["leader"]
    follower = next(b for b in cluster.brokers if b.node_id != leader)
    acked, failed, stop = [], [], threading.Event()

    def run():
        p = ck.Producer({"bootstrap.servers": cluster.brokers[leader].bootstrap, "acks": "all", "linger.ms": 5,
                         "message.timeout.ms": 60_000})
        i = 0
        while not stop.is_set():
            p.produce(topic, f"m{i}".encode(), partition=0,
                      on_delivery=lambda e, m: (failed if e else acked).append(e or m.offset()))
            p.poll(0)
            i += 1
            time.sleep(0.002)
        p.flush(60)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: len(acked) > 100, 30, what="first acknowledgements")
    cluster.sigstop(follower.node_id)
    try:
        stopped_at = time.monotonic()
        p = cluster.wait_isr(topic, 0, 2, timeout=30)
        assert follower.node_id not in p["isr"]
        assert time.monotonic() - stopped_at >= 2.5, "left the ISR before replica.lag.time.max.ms"
        assert metric(cluster.brokers[leader], "weir_isr_shrinks_total") >= 1
        # acks=all goes on at ISR=2.
        n = len(acked)
        wait_until(lambda: len(acked) > n + 200, 30, what="acknowledgements at ISR=2")
    finally:
        cluster.sigcont(follower.node_id)
    p = cluster.wait_isr(topic, 0, 3, timeout=60)
    assert follower.node_id in p["isr"]
    assert metric(cluster.brokers[leader], "weir_isr_expands_total") >= 1
    stop.set()
    t.join(90)
    assert failed == []
    got = consume_all(cluster.bootstrap, topic, 0, len(acked))
    assert len(got) >= len(acked) and {o for o, _ in got} >= set(acked)


@pytest.mark.cluster_args(session_timeout_ms=3000, lag_time_max_ms=60_000)
def test_deposed_leader_truncates_unreplicated_records(cluster):
    topic = "divergent"
    create(cluster, topic, config={"min.insync.replicas": "2"})
    leader_id = cluster.partitions(topic)[0]["leader"]
    leader = cluster.brokers[leader_id]
    followers = [b for b in cluster.brokers if b.node_id != leader_id]
    assert [e for e, _ in produce(leader.bootstrap, topic, [f"a{i}".encode() for i in range(10)])] == [None] * 10
    wait_until(lambda: all(local_offsets(b, topic, 0)[0] == 10 for b in followers), 20, what="followers at 10")

    for b in followers:
        cluster.sigstop(b.node_id)
    try:
        # Let the followers' outstanding long-poll fetches finish (max wait 500 ms), so that
        # nothing the leader appends next reaches them.
        time.sleep(1.5)
        reports = produce(leader.bootstrap, topic, [f"lost{i}".encode() for i in range(5)], acks="1")
        assert [e for e, _ in reports] == [None] * 5 and [o for _, o in reports] == list(range(10, 15))
        assert local_offsets(leader, topic, 0)[0] == 15
        leader.kill()
    finally:
        for b in followers:
            cluster.sigcont(b.node_id)

    # The survivors fence the dead leader and elect one of themselves (a new leader epoch).
    def new_leader():
        try:
            p = cluster.partitions(topic)[0]
        except OSError:
            return None
        return p if p["leader"] is not None and p["leader"] != leader_id else None

    p = wait_until(new_leader, 60, interval=0.2, what="a new leader")
    assert p["leader_epoch"] >= 1
    new = cluster.brokers[p["leader"]]
    reports = produce(new.bootstrap, topic, [f"b{i}".encode() for i in range(7)])
    assert [e for e, _ in reports] == [None] * 7 and [o for _, o in reports] == list(range(10, 17))

    cluster.restart(leader_id)
    cluster.wait_isr(topic, 0, 3, timeout=60)
    wait_until(lambda: local_offsets(leader, topic, 0)[0] == 17, 30, what="the old leader caught up")
    assert segment_bytes(leader, topic, 0) == segment_bytes(new, topic, 0)
    assert metric(leader, "weir_follower_truncations_total") >= 1
    got = consume_all(cluster.bootstrap, topic, 0, 17)
    assert [v for _, v in got] == [f"a{i}".encode() for i in range(10)] + [f"b{i}".encode() for i in range(7)]
    # The deposed leader's leader-epoch checkpoint now records the new epoch at offset 10.
    text = (leader.data_dir / f"{topic}-0" / "leader-epoch-checkpoint").read_text().split("\n")
    assert text[2] == "0 0" and text[3].split() == [str(p["leader_epoch"]), "10"], text
