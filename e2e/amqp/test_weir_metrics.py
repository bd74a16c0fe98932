"""AMQP metrics on /metrics, moved by pika: per-queue ready and unacknowledged messages and
consumers, open connections, published and delivered counters. Weir only (RabbitMQ serves its
own metrics elsewhere)."""

from __future__ import annotations

import os
import re
import time
import urllib.request

import pika
import pytest

pytestmark = pytest.mark.skipif(bool(os.environ.get("AMQP_TARGET")), reason="Weir's /metrics only")


def scrape(broker) -> str:
    with urllib.request.urlopen(f"http://{broker.host}:{broker.http_port}/metrics", timeout=5) as r:
        return r.read().decode()


def value(text: str, series: str) -> float | None:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def queue_series(broker, metric: str, queue: str) -> float | None:
    return value(scrape(broker), f'{metric}{{queue="{queue}",vhost="/"}}')


def wait_for(fn, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got == want:
            return
        time.sleep(0.05)
    assert fn() == want


def test_queue_depth_connections_and_counters_follow_pika(target, name):
    broker = target.broker
    before = scrape(broker)
    conn = pika.BlockingConnection(pika.ConnectionParameters(target.host, target.port))
    try:
        ch = conn.channel()
        ch.queue_declare(name)
        assert value(scrape(broker), "weir_amqp_connections") >= 1
        for i in range(50):
            ch.basic_publish("", name, b"m%d" % i)
        wait_for(lambda: queue_series(broker, "weir_amqp_queue_messages_ready", name), 50)
        assert queue_series(broker, "weir_amqp_queue_messages_unacked", name) == 0
        published = value(scrape(broker), "weir_amqp_published_total") - value(before, "weir_amqp_published_total")
        assert published >= 50

        # A consumer with a prefetch of 20 holds 20 unacknowledged; 30 stay ready.
        ch.basic_qos(prefetch_count=20)
        received = []
        ch.basic_consume(name, lambda c, m, p, b: received.append(m.delivery_tag))

        def receive_until(n):
            deadline = time.monotonic() + 10
            while len(received) < n and time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
            assert len(received) == n

        receive_until(20)
        wait_for(lambda: queue_series(broker, "weir_amqp_queue_messages_unacked", name), 20)
        assert queue_series(broker, "weir_amqp_queue_messages_ready", name) == 30
        assert queue_series(broker, "weir_amqp_queue_consumers", name) == 1
        delivered = value(scrape(broker), "weir_amqp_delivered_total") - value(before, "weir_amqp_delivered_total")
        assert delivered >= 20

        # Acknowledging the 20 lets 20 more out: 10 stay ready.
        ch.basic_ack(received[-1], multiple=True)
        receive_until(40)
        wait_for(lambda: queue_series(broker, "weir_amqp_queue_messages_ready", name), 10)
        assert queue_series(broker, "weir_amqp_queue_messages_unacked", name) == 20
        # The last 10 go out and are acknowledged: the queue is empty.
        ch.basic_ack(received[-1], multiple=True)
        receive_until(50)
        ch.basic_ack(received[-1], multiple=True)
        wait_for(lambda: queue_series(broker, "weir_amqp_queue_messages_unacked", name), 0)
        assert queue_series(broker, "weir_amqp_queue_messages_ready", name) == 0

        # A deleted queue leaves no series behind.
        ch.queue_delete(name)
        assert queue_series(broker, "weir_amqp_queue_messages_ready", name) is None
    finally:
        conn.close()
