"""The replication metrics on /metrics, scraped from real brokers while the situation they
describe is made to happen: a frozen leader makes its followers' fetcher lag grow (seconds),
frozen followers hold acks=all produces in the purgatory until they leave the ISR (shrinks,
under-replicated and under-min-ISR partitions), and they count as expands when they return; a
consumer group's lag is exported by its coordinator, for partitions led there and elsewhere
alike."""

from __future__ import annotations

import re

import pytest

ck = pytest.importorskip("confluent_kafka")

from test_min_isr import produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402

METRICS = [
    "weir_under_replicated_partitions",
    "weir_under_min_isr_partitions",
    "weir_isr_shrinks_total",
    "weir_isr_expands_total",
    "weir_replica_fetcher_lag_messages",
    "weir_replica_fetcher_lag_seconds",
    "weir_produce_purgatory_size",
    "weir_follower_truncations_total",
    "weir_reassignment_throttled_bytes_total",
    "weir_reassignment_throttled_fetches_total",
]


def metric(broker, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", broker.metrics(), re.M)
    assert m, f"{name} not on /metrics of broker {broker.node_id}"
    return float(m.group(1))


@pytest.mark.cluster_args(session_timeout_ms=60_000, lag_time_max_ms=5000)
def test_replication_metrics_follow_lag_purgatory_and_isr_changes(cluster):
    for b in cluster.brokers:
        for name in METRICS:
            metric(b, name)
    admin = cluster.brokers[0]
    # Broker 0 leads both; "strict" needs all three replicas in sync.
    for name, cfg in (("metered", {}), ("strict", {"min.insync.replicas": "3"})):
        admin.http_json("POST", "/api/v1/topics", {"name": name, "assignment": [[0, 1, 2]], "configs": cfg})
        cluster.wait_isr(name, 0, 3)
    assert [e for e, _ in produce(cluster.bootstrap, "metered", [b"a"] * 10)] == [None] * 10
    followers = cluster.brokers[1:]
    wait_until(lambda: all(metric(f, "weir_replica_fetcher_lag_seconds") < 1.5 for f in followers), 20,
               what="followers caught up")

    # A frozen leader: its followers get no answers, their lag in seconds keeps growing.
    cluster.sigstop(0)
    wait_until(lambda: all(metric(f, "weir_replica_fetcher_lag_seconds") >= 3 for f in followers), 20,
               what="fetcher lag of 3 s on both followers")
    cluster.sigcont(0)
    wait_until(lambda: all(metric(f, "weir_replica_fetcher_lag_seconds") < 1.5 for f in followers), 30,
               what="fetcher lag back under 1.5 s")
    # The resumed leader may have judged its followers out of sync for the time it was frozen.
    for name in ("metered", "strict"):
        cluster.wait_isr(name, 0, 3)

    # A frozen follower (one: two would leave the metadata quorum without a majority): an
    # acks=all produce waits in the purgatory until it leaves the ISR.
    shrinks = metric(admin, "weir_isr_shrinks_total")
    expands = metric(admin, "weir_isr_expands_total")
    cluster.sigstop(2)
    p = ck.Producer({"bootstrap.servers": admin.bootstrap, "acks": "all", "linger.ms": 0,
                     "message.timeout.ms": 60_000, "request.timeout.ms": 30_000})
    reports = []
    p.produce("metered", b"waits", partition=0, on_delivery=lambda e, m: reports.append(e))
    p.poll(0.5)
    wait_until(lambda: metric(admin, "weir_produce_purgatory_size") >= 1, 10, what="a produce in the purgatory")
    wait_until(lambda: p.poll(0.2) >= 0 and reports == [None], 30, what="the produce completing at ISR 1")
    assert metric(admin, "weir_produce_purgatory_size") == 0
    wait_until(lambda: metric(admin, "weir_isr_shrinks_total") >= shrinks + 2, 10, what="two ISR shrinks")
    wait_until(lambda: metric(admin, "weir_under_replicated_partitions") == 2, 10, what="2 under-replicated")
    assert metric(admin, "weir_under_min_isr_partitions") == 1  # "strict"
    cluster.sigcont(2)
    for name in ("metered", "strict"):
        cluster.wait_isr(name, 0, 3)
    wait_until(lambda: metric(admin, "weir_under_replicated_partitions") == 0, 10, what="fully replicated again")
    assert metric(admin, "weir_under_min_isr_partitions") == 0
    assert metric(admin, "weir_isr_expands_total") >= expands + 2


def test_replication_traffic_is_counted_apart_from_client_traffic(cluster):
    leader, *followers = cluster.brokers
    leader.http_json("POST", "/api/v1/topics", {"name": "traffic", "assignment": [[0, 1, 2]]})
    cluster.wait_isr("traffic", 0, 3)
    names = ["weir_kafka_bytes_in_total", "weir_kafka_messages_in_total", "weir_replication_bytes_out_total",
             "weir_replication_bytes_in_total", "weir_kafka_bytes_out_total"]  # fmt: skip
    before = {b.node_id: {n: metric(b, n) for n in names} for b in cluster.brokers}
    assert [e for e, _ in produce(cluster.bootstrap, "traffic", [b"x" * 500] * 1000)] == [None] * 1000
    # acks=all: both followers hold everything once the produce is acknowledged.
    delta = {b.node_id: {n: metric(b, n) - before[b.node_id][n] for n in names} for b in cluster.brokers}
    produced = delta[0]["weir_kafka_bytes_in_total"]
    assert delta[0]["weir_kafka_messages_in_total"] == 1000
    assert produced > 500_000
    assert delta[0]["weir_replication_bytes_out_total"] >= 2 * produced
    for f in followers:
        assert delta[f.node_id]["weir_replication_bytes_in_total"] >= produced
        assert delta[f.node_id]["weir_kafka_bytes_in_total"] == 0
    # Followers' fetches are not consumer traffic.
    assert delta[0]["weir_kafka_bytes_out_total"] == 0
    # By topic, the same: counted by the leader, never by the followers.
    by_topic = 'weir_kafka_topic_{}_total{{topic="traffic"}}'
    assert metric(leader, by_topic.format("messages_in")) == 1000
    assert metric(leader, by_topic.format("bytes_in")) == produced
    assert metric(leader, by_topic.format("failed_produce")) == 0
    for f in followers:
        assert 'topic="traffic"' not in f.metrics()


def group_lag(broker, group: str) -> tuple[float, float] | None:
    """(sum, max) of the group's lag on the broker's /metrics, None when it has no series."""
    text = broker.metrics()
    found = [re.search(rf'^weir_kafka_consumer_group_lag_{k}{{group="{re.escape(group)}"}} (\S+)$', text, re.M)
             for k in ("sum", "max")]  # fmt: skip
    return None if not all(found) else (float(found[0].group(1)), float(found[1].group(1)))


@pytest.mark.cluster_args(extra_args=("--consumer-lag-interval-ms", "300"))
def test_consumer_lag_is_exported_by_the_coordinator_also_for_partitions_led_elsewhere(cluster):
    from test_coordinator_moves import OFFSETS_TOPIC, offsets_partition, offsets_view

    group = "lag-group"
    admin = cluster.brokers[0]
    c = ck.Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        # Asking for the group's offsets makes __consumer_offsets (FindCoordinator).
        c.committed([ck.TopicPartition("absent", 0)], timeout=20)
        part = offsets_partition(group)
        cluster.wait_isr(OFFSETS_TOPIC, part, 3)
        coordinator = cluster.brokers[offsets_view(cluster, part)["leader"]]
        elsewhere = next(b.node_id for b in cluster.brokers if b.node_id != coordinator.node_id)
        # lag-a is led by the coordinator (its end read locally), lag-b only by another
        # broker (its end asked of that leader).
        others = [b.node_id for b in cluster.brokers if b is not coordinator]
        admin.http_json("POST", "/api/v1/topics", {"name": "lag-a", "assignment": [[coordinator.node_id, *others]]})
        admin.http_json("POST", "/api/v1/topics", {"name": "lag-b", "assignment": [[elsewhere]]})
        cluster.wait_isr("lag-a", 0, 3)
        assert [e for e, _ in produce(cluster.bootstrap, "lag-a", [b"a"] * 40)] == [None] * 40
        assert [e for e, _ in produce(cluster.bootstrap, "lag-b", [b"b"] * 30)] == [None] * 30
        c.commit(offsets=[ck.TopicPartition("lag-a", 0, 15), ck.TopicPartition("lag-b", 0, 5)], asynchronous=False)

        # lag-a 40 - 15, lag-b 30 - 5.
        wait_until(lambda: group_lag(coordinator, group) == (50, 25), 20, what="the group's lag on its coordinator")
        assert all(group_lag(b, group) is None for b in cluster.brokers if b is not coordinator)
        for topic in ("lag-a", "lag-b"):
            assert [e for e, _ in produce(cluster.bootstrap, topic, [b"c"] * 10)] == [None] * 10
        wait_until(lambda: group_lag(coordinator, group) == (70, 35), 20, what="the lag after ten more records each")
        c.commit(offsets=[ck.TopicPartition("lag-a", 0, 50), ck.TopicPartition("lag-b", 0, 40)], asynchronous=False)
        wait_until(lambda: group_lag(coordinator, group) == (0, 0), 20, what="no lag once all is committed")
    finally:
        c.close()
