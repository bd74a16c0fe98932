"""A restarted broker serves Kafka and AMQP clients only once it is registered with the
metadata quorum, as Kafka enables request processing only after its broker has caught up
with the metadata log. Until then its image is the one it stopped with. Here all three
brokers are SIGKILLed and one is started alone: with one voter of three it cannot register,
so its listeners accept no connection (clients wait in the listen backlog) and a librdkafka
Metadata request or a pika connection gets nothing. Once a second broker starts, the quorum
forms, the first registers, and the client that has been waiting all along is answered.
The binary before answered at once from the old image."""

from __future__ import annotations

import socket
import threading
import time

import pytest

ck = pytest.importorskip("confluent_kafka")
pika = pytest.importorskip("pika")

from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout  # noqa: E402
from test_min_isr import create, produce  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def listeners_bound(b) -> bool:
    log = b.log_since_last_start()
    return "Kafka listener bound" in log and "AMQP listener bound" in log


def amqp_greeting(b, timeout: float) -> bytes:
    """The bytes the broker sends within `timeout` after an AMQP 0-9-1 protocol header: its
    Connection.Start frame once it serves clients, nothing before."""
    with socket.create_connection((b.host, b.amqp_port), timeout=5) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        s.settimeout(timeout)
        try:
            return s.recv(7)
        except socket.timeout:
            return b""


def test_a_broker_without_its_quorum_serves_no_clients_until_it_registers(cluster):
    topic = "after-registration"
    create(cluster, topic)
    assert [e for e, _ in produce(cluster.bootstrap, topic, [b"a", b"b"])] == [None, None]
    for b in cluster.brokers:
        b.kill()

    alone = cluster.brokers[0]
    alone.spawn()
    wait_until(lambda: listeners_bound(alone), 60, what="broker 0's listeners bound")
    # A connection is made (the listeners are bound) but nothing is read from it.
    assert amqp_greeting(alone, 2.0) == b"", "AMQP connection served before registration"
    # pika 1.3 raises the handshake's stack timeout as it is, not wrapped.
    with pytest.raises((pika.exceptions.AMQPConnectionError, AMQPConnectorStackTimeout)):
        pika.BlockingConnection(
            pika.ConnectionParameters(
                host=alone.host, port=alone.amqp_port, connection_attempts=1, socket_timeout=2, stack_timeout=3
            )
        )
    early = ck.Producer({"bootstrap.servers": alone.bootstrap})
    with pytest.raises(ck.KafkaException):
        early.list_topics(topic, timeout=3)

    # A client that asks now and waits long enough is answered once the quorum forms.
    answer: dict = {}

    def ask():
        try:
            answer["metadata"] = ck.Producer({"bootstrap.servers": alone.bootstrap}).list_topics(topic, timeout=90)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            answer["error"] = e

    waiter = threading.Thread(target=ask)
    waiter.start()
    time.sleep(2.0)
    assert waiter.is_alive(), f"answered before the quorum formed: {answer}"

    cluster.brokers[1].spawn()
    alone.wait_ready(90)
    cluster.brokers[1].wait_ready(90)
    waiter.join(100)
    assert "metadata" in answer, answer
    md = answer["metadata"]
    assert md.topics[topic].error is None, md.topics[topic].error
    # Answered from an image with this broker's registration in it (which other brokers it
    # lists depends on who the quorum had fenced when the three were killed).
    assert 0 in md.brokers, md.brokers
    assert amqp_greeting(alone, 10.0)[:1] == b"\x01", "no Connection.Start after registration"
    pika.BlockingConnection(pika.ConnectionParameters(host=alone.host, port=alone.amqp_port)).close()
