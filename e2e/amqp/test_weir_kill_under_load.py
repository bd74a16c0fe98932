"""Weir killed under AMQP load: two pika publishers in confirm mode send persistent messages
through a durable topic exchange to three durable queues (one takes every message, two take
half each), pika consumers ack what they get, and the broker is stopped eight times at
seeded random moments (SIGKILL, and SIGTERM every third time) and started again; clients
reconnect. The queue that takes every message is consumed (and acked) throughout; the other
two only once the restarts are over, so their backlog lives through every stop. Afterwards
every confirmed message has been delivered to every queue it was routed to (at least once: a
delivery whose ack the broker had not stored comes again), and nothing was delivered that no
publisher sent. Skipped against other brokers (AMQP_TARGET)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.skipif(bool(os.environ.get("AMQP_TARGET")), reason="restarts Weir")

EXCHANGE_SUFFIX = ".x"
# Binding keys; the first queue is consumed throughout, the others after the restarts.
QUEUES = {"all": "#", "even": "even.*", "odd": "odd.*"}
RESTARTS = 8


def connect(broker):
    params = pika.ConnectionParameters(broker.host, broker.amqp_port, heartbeat=10, socket_timeout=5,
                                       blocked_connection_timeout=30, connection_attempts=1)  # fmt: skip
    return pika.BlockingConnection(params)


class Publisher(threading.Thread):
    """Publishes "<id>:<seq>" with routing key even.<id> or odd.<id>, persistent, mandatory;
    a message counts as confirmed once basic_publish returned (confirm mode)."""

    def __init__(self, broker, exchange: str, pid: int):
        super().__init__(daemon=True)
        self.broker, self.exchange, self.pid = broker, exchange, pid
        self.stop = threading.Event()
        self.confirmed: list[tuple[bytes, str]] = []
        self.errors: list[str] = []
        self.next_seq = 0

    def run(self):
        while not self.stop.is_set():
            try:
                c = connect(self.broker)
                ch = c.channel()
                ch.confirm_delivery()
                while not self.stop.is_set():
                    seq = self.next_seq
                    self.next_seq += 1
                    key = f"{'even' if seq % 2 == 0 else 'odd'}.{self.pid}"
                    body = f"{self.pid}:{seq}".encode()
                    try:
                        ch.basic_publish(self.exchange, key, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
                        self.confirmed.append((body, key))
                    except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as e:
                        self.errors.append(f"{body!r}: {e!r}")
                c.close()
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.2)  # the broker is down or going: reconnect


class Consumer(threading.Thread):
    def __init__(self, broker, queue: str):
        super().__init__(daemon=True)
        self.broker, self.queue = broker, queue
        self.stop = threading.Event()
        self.delivered: set[bytes] = set()
        self.last_delivery = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            try:
                c = connect(self.broker)
                ch = c.channel()
                ch.basic_qos(prefetch_count=200)
                for method, _, body in ch.consume(self.queue, inactivity_timeout=0.5):
                    if self.stop.is_set():
                        break
                    if method is None:
                        continue
                    self.delivered.add(body)
                    self.last_delivery = time.monotonic()
                    ch.basic_ack(method.delivery_tag)
                c.close()
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.2)


def test_confirmed_messages_survive_kills_under_load(own_weir, name):
    rng = random.Random(int(os.environ.get("WEIR_SOAK_SEED", "1")))
    exchange = name + EXCHANGE_SUFFIX
    queues = {f"{name}.{q}": key for q, key in QUEUES.items()}
    c = connect(own_weir)
    ch = c.channel()
    ch.exchange_declare(exchange, "topic", durable=True)
    for queue, key in queues.items():
        ch.queue_declare(queue, durable=True)
        ch.queue_bind(queue, exchange, key)
    c.close()

    publishers = [Publisher(own_weir, exchange, i) for i in range(2)]
    consumers = [Consumer(own_weir, queue) for queue in queues]
    for t in publishers + consumers[:1]:
        t.start()
    confirmed = lambda: sum(len(p.confirmed) for p in publishers)  # noqa: E731
    for restart in range(RESTARTS):
        before = confirmed()
        deadline = time.monotonic() + 60
        while confirmed() < before + 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert confirmed() >= before + 300, f"publishing did not resume before stop {restart + 1}"
        time.sleep(rng.uniform(0, 2))
        sig = signal.SIGTERM if restart % 3 == 2 else signal.SIGKILL
        code = own_weir.stop(sig)
        assert sig == signal.SIGKILL or code == 0, f"exit code {code} on SIGTERM"
        time.sleep(rng.uniform(0, 1))
        own_weir.start()
    for p in publishers:
        p.stop.set()
    for p in publishers:
        p.join(30)
    assert all(p.errors == [] for p in publishers), [p.errors[:3] for p in publishers]
    for consumer in consumers[1:]:
        consumer.start()

    sent = {body: key for p in publishers for body, key in p.confirmed}
    for consumer in consumers:
        key = queues[consumer.queue]
        want = {b for b, k in sent.items() if key == "#" or k.startswith(key.split(".")[0] + ".")}
        deadline = time.monotonic() + 60
        while not want <= consumer.delivered and time.monotonic() < deadline:
            time.sleep(0.2)
        missing = want - consumer.delivered
        assert not missing, f"{consumer.queue}: {len(missing)} of {len(want)} confirmed messages never delivered"
        published = {f"{p.pid}:{i}".encode() for p in publishers for i in range(p.next_seq)}
        assert consumer.delivered <= published, f"{consumer.queue}: a delivery nobody published"
    for consumer in consumers:
        consumer.stop.set()
    for consumer in consumers:
        consumer.join(10)
