"""Preferred-leader election through the admin API: after the first replica of a partition
was killed and came back (leadership moved away, it rejoined the ISR as a follower),
`POST /api/v1/partitions/elect-preferred` gives it leadership back with a new leader epoch,
and acks=all produce and consume keep working through the move."""

from __future__ import annotations

import urllib.error

import pytest

ck = pytest.importorskip("confluent_kafka")

from test_min_isr import consume_all, create, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def test_elect_preferred_leader_moves_leadership_back(cluster):
    topic = "preferred"
    create(cluster, topic, partitions=1, config={"min.insync.replicas": "2"})
    p = cluster.partitions(topic)[0]
    preferred = p["replicas"][0]
    assert p["leader"] == preferred
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"one"])] == [None]

    cluster.brokers[preferred].kill()
    moved = wait_until(lambda: (lambda q: q if q["leader"] not in (None, preferred) else None)(
        cluster.partitions(topic)[0]), 30, what="leadership moved off the preferred replica")
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"two"])] == [None]
    cluster.restart(preferred)
    cluster.wait_isr(topic, 0, 3)
    assert cluster.partitions(topic)[0]["leader"] != preferred

    admin = cluster.any_running()
    # Bad requests are refused without changing anything.
    for body, status in (({"partitions": [0]}, 400), ({"topic": "nope"}, 404), ({"topic": topic, "x": 1}, 400)):
        with pytest.raises(urllib.error.HTTPError) as e:
            admin.http_json("POST", "/api/v1/partitions/elect-preferred", body)
        assert e.value.code == status, body
    resp = admin.http_json("POST", "/api/v1/partitions/elect-preferred", {"topic": topic})
    assert [(r["partition"], r["preferred"], r["outcome"]) for r in resp["results"]] == [(0, preferred, "elected")]
    after = cluster.partitions(topic)[0]
    assert after["leader"] == preferred and after["leader_epoch"] > moved["leader_epoch"]
    again = admin.http_json("POST", "/api/v1/partitions/elect-preferred", {})
    assert {(r["topic"], r["outcome"]) for r in again["results"]} == {(topic, "already_leader")}

    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"three"])] == [None]
    got = consume_all(cluster.bootstrap, topic, 0, 3)
    assert [v for _, v in got] == [b"one", b"two", b"three"]
