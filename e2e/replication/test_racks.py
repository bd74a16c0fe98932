"""Racks (`--rack`, Kafka's `broker.rack`) on four brokers, two per rack: clients see each
broker's rack (kafka-python's DescribeCluster); a drain replaces a replica with a broker of
the rack it leaves rather than a less loaded one in the rack the partition keeps, and the
records move with it; a topic created by confluent-kafka with replication factor 2 gets one
replica in each rack for every partition."""

from __future__ import annotations

import pytest

ck = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from kafka.admin import KafkaAdminClient  # noqa: E402
from test_min_isr import consume_all, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402

RACKS = ("a", "a", "b", "b")
MESSAGES = 1_000


@pytest.mark.cluster_args(n=4, racks=RACKS)
def test_placement_and_drains_spread_replicas_over_racks(cluster):
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        brokers = admin.describe_cluster()["brokers"]
        assert sorted((b["broker_id"], b["rack"]) for b in brokers) == list(enumerate(RACKS)), brokers
    finally:
        admin.close()

    # A drain of broker 2 (rack b): brokers 1 and 3 hold nothing, and broker 1 has the lower
    # id, but it is in rack a with the replica that stays.
    http = cluster.brokers[0]
    http.http_json("POST", "/api/v1/topics", {"name": "pinned", "assignment": [[0, 2]]})
    cluster.wait_isr("pinned", 0, 2)
    values = [f"m{i}".encode() for i in range(MESSAGES)]
    assert all(e is None for e, _ in produce(cluster.bootstrap, "pinned", values))
    out = http.http_json("POST", "/api/v1/brokers/2/drain", {})
    assert [m["target_replicas"] for m in out["started"]] == [[0, 3]], out

    def moved():
        p = cluster.partitions("pinned")[0]
        return p if p["replicas"] == [0, 3] and sorted(p["isr"]) == [0, 3] else None

    wait_until(moved, 60, what="pinned-0 on brokers 0 and 3")
    got = consume_all(cluster.bootstrap, "pinned", 0, MESSAGES)
    assert [v for _, v in got] == values
    http.http_json("DELETE", "/api/v1/brokers/2/drain")

    # A new topic: every partition has a replica in each rack (with the rack-unaware placement
    # some of eight partitions over four brokers always share one).
    ck_admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    (f,) = ck_admin.create_topics([NewTopic("spread", 8, 2)], operation_timeout=10).values()
    f.result(30)
    parts = cluster.partitions("spread")
    assert len(parts) == 8
    for p in parts:
        assert sorted(RACKS[b] for b in p["replicas"]) == ["a", "b"], p
