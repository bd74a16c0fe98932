"""OffsetForLeaderEpoch (KIP-320) with librdkafka: a consumer that seeks to a position
carrying a leader epoch validates it with OffsetForLeaderEpoch before fetching. A position
inside the epoch's range is kept; one past the epoch's end offset is reported as log
truncation — which only happens if the broker answered the request: without
it librdkafka skips validation and the fetch fails with OFFSET_OUT_OF_RANGE instead."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError, TopicPartition  # noqa: E402

from weir_harness import create_topic_ready  # noqa: E402


def _produce(bootstrap, topic, n):
    p = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(n):
        p.produce(topic, f"m{i}".encode(), partition=0)
        p.flush(10)
    assert p.flush(30) == 0


def _next(c, timeout=20.0):
    """The next message or error event from the consumer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None:
            return m
    raise AssertionError("no message or error within the deadline")


def test_seek_with_leader_epoch_is_validated(broker):
    topic = "ofle-seek"
    create_topic_ready(broker.bootstrap, topic)
    _produce(broker.bootstrap, topic, 5)
    c = ck.Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "weir-e2e-ofle",
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
        }
    )
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        first = _next(c)
        assert first.error() is None, first.error()
        assert first.offset() == 0
        assert first.leader_epoch() == 0

        # Inside epoch 0 (which ends at the log end, 5): validated, fetched from there.
        c.seek(TopicPartition(topic, 0, 3, leader_epoch=0))
        m = _next(c)
        assert m.error() is None, m.error()
        assert (m.offset(), m.value()) == (3, b"m3")

        # Past the end of epoch 0: the broker says epoch 0 ends at 5, so the client reports
        # truncation rather than fetching at 9.
        c.seek(TopicPartition(topic, 0, 9, leader_epoch=0))
        err = None
        deadline = time.monotonic() + 20
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is not None:
                err = m.error()
            elif m is not None:
                raise AssertionError(f"fetched offset {m.offset()} after seeking past the epoch's end")
        assert err is not None, "no error after seeking past the epoch's end"
        # With auto.offset.reset=error librdkafka reports it as _AUTO_OFFSET_RESET whose text
        # carries the broker's answer (epoch 0 ends at offset 5).
        assert err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError._LOG_TRUNCATION), err
        assert "log truncation detected at offset 9" in err.str(), err
        assert "broker end offset is 5 (offset leader epoch 0)" in err.str(), err
    finally:
        c.close()
