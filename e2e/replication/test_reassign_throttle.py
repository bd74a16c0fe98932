"""The reassignment throttle (`PUT /api/v1/replication/throttle`, Kafka's
`leader.replication.throttled.rate` for the replicas a reassignment adds): with 500 kB/s set, a
replica added to a partition holding about 6 MB catches up no faster than the throttle allows,
while a producer's acks=all traffic to an in-sync follower is not held back; with the throttle
removed, the same move takes a fraction of the time. The copies are byte for byte the
leader's."""

from __future__ import annotations

import time
import urllib.error

import pytest

ck = pytest.importorskip("confluent_kafka")

from test_metrics import metric  # noqa: E402
from test_min_isr import produce, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402

THROTTLE = 500_000  # bytes per second
MESSAGES = 6_000
VALUE = b"x" * 1_000


def fill(cluster, topic):
    admin = cluster.brokers[0]
    admin.http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0]]})
    cluster.wait_isr(topic, 0, 1)
    reports = produce(cluster.bootstrap, topic, [VALUE] * MESSAGES, acks="1")
    assert all(e is None for e, _ in reports)


def move_to_0_and_1(cluster, topic, meanwhile=lambda: None) -> float:
    """Reassign `topic`-0 from [0] to [0, 1], run `meanwhile`; seconds until broker 1 is in
    its ISR."""
    admin = cluster.brokers[0]
    start = time.monotonic()
    out = admin.http_json("POST", "/api/v1/partitions/reassign",
                          {"partitions": [{"topic": topic, "partition": 0, "replicas": [0, 1]}]})  # fmt: skip
    assert out["results"][0]["outcome"] == "started", out
    meanwhile()

    def done():
        p = cluster.partitions(topic)[0]
        return p["replicas"] == [0, 1] and p["adding"] == [] and sorted(p["isr"]) == [0, 1]

    wait_until(done, 120, interval=0.1, what=f"broker 1 in the ISR of {topic}-0")
    return time.monotonic() - start


def set_throttle(cluster, rate):
    want = {"bytes_per_sec": rate, "holds": {}, "effective_bytes_per_sec": rate}
    out = cluster.brokers[1].http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": rate})
    assert out == want
    for b in cluster.brokers:
        wait_until(lambda b=b: b.http_json("GET", "/api/v1/replication/throttle") == want, 10,
                   what=f"broker {b.node_id} applied the throttle")  # fmt: skip


def test_holds_tighten_the_throttle_and_their_release_leaves_the_clusters_value(cluster):
    """Named holds (`/api/v1/replication/throttle/holds/{holder}`, what the operator sets while
    its own moves run): the throttle in force is the lowest non-zero of the cluster's value
    and the holds, and removing a hold gives back exactly what was there."""
    admin = cluster.brokers[2]
    path = "/api/v1/replication/throttle"
    set_throttle(cluster, 2_000_000)
    out = admin.http_json("PUT", f"{path}/holds/weir-operator", {"bytes_per_sec": 5_000_000})
    assert out == {"bytes_per_sec": 2_000_000, "holds": {"weir-operator": 5_000_000}, "effective_bytes_per_sec": 2_000_000}
    out = admin.http_json("PUT", f"{path}/holds/ops", {"bytes_per_sec": 1_000_000})
    assert out["effective_bytes_per_sec"] == 1_000_000, out
    # Every broker serves the same view (the holds are metadata, applied everywhere).
    for b in cluster.brokers:
        wait_until(lambda b=b: b.http_json("GET", path) == out, 10, what=f"broker {b.node_id} has the holds")
    admin.http_json("DELETE", f"{path}/holds/ops")
    # Without a throttle of its own, the cluster runs at the hold.
    out = admin.http_json("PUT", path, {"bytes_per_sec": 0})
    assert out == {"bytes_per_sec": 0, "holds": {"weir-operator": 5_000_000}, "effective_bytes_per_sec": 5_000_000}
    # 0 removes a hold as DELETE does; removing it twice is no error.
    out = admin.http_json("PUT", f"{path}/holds/weir-operator", {"bytes_per_sec": 0})
    assert out == {"bytes_per_sec": 0, "holds": {}, "effective_bytes_per_sec": 0}
    assert admin.http_json("DELETE", f"{path}/holds/weir-operator")["holds"] == {}
    for bad_path, body, status in (
        (f"{path}/holds/two%20words", {"bytes_per_sec": 1}, 400),
        (f"{path}/holds/{'x' * 65}", {"bytes_per_sec": 1}, 400),
        (f"{path}/holds/ops", {"bytes_per_sec": -1}, 400),
        (f"{path}/holds/ops", {"rate": 1}, 400),
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            admin.http_json("PUT", bad_path, body)
        assert refused.value.code == status, (bad_path, body)
    assert admin.http_json("GET", path) == {"bytes_per_sec": 0, "holds": {}, "effective_bytes_per_sec": 0}


def test_a_throttled_reassignment_catches_up_at_the_throttle_and_in_sync_replicas_are_not_held(cluster):
    fill(cluster, "throttled")
    fill(cluster, "unthrottled")
    size = len(segment_bytes(cluster.brokers[0], "throttled", 0))
    assert size > 5_000_000

    # An RF 2 topic whose follower is in sync already: acks=all is not throttled.
    cluster.brokers[0].http_json("POST", "/api/v1/topics", {"name": "in-sync", "assignment": [[0, 1]]})
    cluster.wait_isr("in-sync", 0, 2)

    # A negative rate is refused.
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.brokers[0].http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": -1})
    assert refused.value.code == 400
    set_throttle(cluster, THROTTLE)

    def acks_all_to_the_in_sync_topic():
        # 2 MB to a follower in sync: not held by the throttle.
        t0 = time.monotonic()
        reports = produce(cluster.bootstrap, "in-sync", [VALUE] * 2_000, acks="all")
        assert all(e is None for e, _ in reports)
        assert time.monotonic() - t0 < 5, "acks=all to an in-sync follower was held by the throttle"

    throttled = move_to_0_and_1(cluster, "throttled", acks_all_to_the_in_sync_topic)
    # At most one second's budget saved up, then the throttle: about size / THROTTLE - 1 seconds.
    assert throttled >= size / THROTTLE - 2, f"{size} bytes copied in {throttled:.1f}s at a {THROTTLE} B/s throttle"

    # The leader counted the throttled bytes (the whole log) and the fetches it held back.
    leader = cluster.brokers[0]
    served = metric(leader, "weir_reassignment_throttled_bytes_total")
    assert served >= size, (served, size)
    assert metric(leader, "weir_reassignment_throttled_fetches_total") >= 1

    set_throttle(cluster, 0)
    unthrottled = move_to_0_and_1(cluster, "unthrottled")
    assert unthrottled < throttled / 2, (throttled, unthrottled)
    assert metric(leader, "weir_reassignment_throttled_bytes_total") == served, "counted without a throttle"

    for topic in ("throttled", "unthrottled"):
        assert segment_bytes(cluster.brokers[1], topic, 0) == segment_bytes(cluster.brokers[0], topic, 0)
