"""KIP-951 with librdkafka: a Produce (v10+) that reaches a broker which no longer leads the
partition is refused with NOT_LEADER_OR_FOLLOWER naming the new leader, its epoch and its
endpoint, and librdkafka applies that to its metadata cache (its `METADATAUPDATE` debug line)
and delivers to the new leader. The producer's periodic metadata refresh is off, so nothing
else tells it of the move."""

from __future__ import annotations

import logging

import pytest

ck = pytest.importorskip("confluent_kafka")

from weir_harness import wait_until  # noqa: E402


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_refused_produce_names_the_new_leader_and_librdkafka_follows_it(cluster):
    topic = "hinted"
    admin = cluster.brokers[0]
    admin.http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0, 1, 2]]})
    before = cluster.wait_isr(topic, 0, 3)
    assert before["leader"] == 0

    collect = Collect()
    logger = logging.getLogger("weir-e2e-leader-hints")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collect)
    reports = []
    producer = ck.Producer({
        "bootstrap.servers": cluster.bootstrap,
        "acks": "all",
        "linger.ms": 0,
        "message.timeout.ms": 20_000,
        "topic.metadata.refresh.interval.ms": -1,  # no periodic refresh
        "debug": "metadata",
        "logger": logger,
    })  # fmt: skip
    producer.produce(topic, b"before", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert producer.flush(30) == 0
    assert reports == [(None, 0)]

    # Leadership moves to broker 1: the same replicas in a new order, then a preferred-leader
    # election. Broker 0 stays up and keeps the producer's connection.
    out = admin.http_json("POST", "/api/v1/partitions/reassign",
                          {"partitions": [{"topic": topic, "partition": 0, "replicas": [1, 0, 2]}]})  # fmt: skip
    assert out["results"][0]["outcome"] == "completed", out
    out = admin.http_json("POST", "/api/v1/partitions/elect-preferred", {"topic": topic})
    assert out["results"][0]["outcome"] == "elected", out
    for b in cluster.brokers:
        wait_until(lambda b=b: next(p for p in b.http_json("GET", f"/api/v1/partitions?topic={topic}")["partitions"]
                                    if p["partition"] == 0)["leader"] == 1, 20, what=f"broker {b.node_id} sees leader 1")  # fmt: skip
    epoch = cluster.partitions(topic)[0]["leader_epoch"]
    assert epoch > before["leader_epoch"]
    collect.lines.clear()

    producer.produce(topic, b"after", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert producer.flush(30) == 0
    assert reports[1] == (None, 1), reports
    hint = f"updated with leader 1 and epoch {epoch}"
    assert any("METADATAUPDATE" in line and hint in line for line in collect.lines), (
        "librdkafka did not take the leader from the produce response:\n" + "\n".join(collect.lines[-40:])
    )
