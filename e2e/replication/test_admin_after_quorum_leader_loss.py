"""Admin requests keep working through an AdminClient when the metadata quorum leader dies.

Every Weir broker forwards admin requests (CreateTopics, DeleteTopics, ...) to the metadata
quorum, so Metadata names the answering broker as the controller, as a KRaft Kafka broker
names a live broker. Naming the quorum leader instead left a librdkafka AdminClient that had
learned it waiting for that dead broker past its request timeout (seen in a soak: a
DeleteTopics 31 s late)."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def test_topics_are_deleted_and_created_right_after_the_quorum_leader_is_killed(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for t in ("before-a", "before-b"):
        admin.create_topics([NewTopic(t, 1, 3)], operation_timeout=20)[t].result(30)
    md = admin.list_topics(timeout=10)
    assert md.controller_id in md.brokers, "the announced controller is not a listed broker"
    leader = cluster.any_running().http_json("GET", "/api/v1/cluster")["quorum"]["leader"]
    cluster.brokers[leader].kill()

    started = time.monotonic()
    admin.delete_topics(["before-a"], operation_timeout=20)["before-a"].result(30)
    admin.create_topics([NewTopic("after", 1, 2)], operation_timeout=20)["after"].result(30)
    took = time.monotonic() - started
    # A new quorum leader is elected within a few seconds (broker session 3 s here).
    assert took < 20, f"admin requests took {took:.1f} s after the quorum leader died"
    names = set(admin.list_topics(timeout=10).topics)
    assert "after" in names and "before-a" not in names and "before-b" in names
