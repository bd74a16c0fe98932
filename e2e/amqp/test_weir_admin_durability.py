"""Weir-only AMQP tests: the admin API for vhosts, exchanges, queues and bindings
(docs/admin-api.md), and durable entities surviving restarts and SIGKILL. Skipped when the
tests run against another broker (AMQP_TARGET)."""

from __future__ import annotations

import json
import time
import os
import signal
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.skipif(bool(os.environ.get("AMQP_TARGET")), reason="Weir's admin API and restarts only")


def http(broker, method: str, path: str, body=None):
    """(status, parsed JSON or None) of one admin API request."""
    url = f"http://{broker.host}:{broker.http_port}/api/v1{path}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def conn(broker, vhost: str = "/"):
    return pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.amqp_port, virtual_host=vhost))


@pytest.fixture()
def weir(target):
    if not target.is_weir:
        pytest.skip("needs Weir")
    return target.broker


def test_exchange_put_is_idempotent_and_inequivalent_is_409(weir, name):
    V = "/vhosts/%2F"
    st, body = http(weir, "PUT", f"{V}/exchanges/{name}", {"type": "topic"})
    assert st == 201, body
    assert body == {"vhost": "/", "name": name, "type": "topic", "durable": True, "auto_delete": False,
                    "internal": False, "arguments": {}}  # fmt: skip
    st, body = http(weir, "PUT", f"{V}/exchanges/{name}", {"type": "topic", "durable": True})
    assert st == 200, body
    st, body = http(weir, "PUT", f"{V}/exchanges/{name}", {"type": "fanout"})
    assert (st, body["code"]) == (409, "inequivalent_arguments"), body
    st, body = http(weir, "GET", f"{V}/exchanges/{name}")
    assert st == 200 and body["type"] == "topic"
    st, body = http(weir, "GET", f"{V}/exchanges")
    names = {e["name"] for e in body["exchanges"]}
    assert {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match", name} <= names
    # An AMQP client sees it as a durable topic exchange.
    with conn(weir) as c:
        ch = c.channel()
        ch.exchange_declare(name, "topic", durable=True)
    st, body = http(weir, "DELETE", f"{V}/exchanges/{name}")
    assert st == 204, body
    st, body = http(weir, "GET", f"{V}/exchanges/{name}")
    assert (st, body["code"]) == (404, "unknown_exchange")
    st, body = http(weir, "DELETE", f"{V}/exchanges/{name}")
    assert (st, body["code"]) == (404, "unknown_exchange")


def test_reserved_names_and_bad_requests(weir, name):
    V = "/vhosts/%2F"
    assert http(weir, "PUT", f"{V}/exchanges/amq.{name}", {"type": "direct"})[1]["code"] == "access_refused"
    assert http(weir, "PUT", f"{V}/exchanges/amq.direct", {"type": "direct"})[0] == 200
    assert http(weir, "DELETE", f"{V}/exchanges/amq.direct")[1]["code"] == "access_refused"
    assert http(weir, "DELETE", f"{V}/exchanges/amq.default")[1]["code"] == "access_refused"
    assert http(weir, "PUT", f"{V}/exchanges/{name}", {"type": "nope"})[1]["code"] == "invalid_arguments"
    assert http(weir, "PUT", f"{V}/exchanges/bad%20name", {"type": "direct"})[1]["code"] == "invalid_name"
    assert http(weir, "PUT", f"{V}/exchanges/{name}", {"type": "direct", "typo": 1})[1]["code"] == "bad_request"
    st, body = http(weir, "PUT", f"{V}/queues/{name}", {"arguments": {"x-queue-type": "quorum"}})
    assert (st, body["code"]) == (400, "invalid_arguments"), body
    st, body = http(weir, "PUT", f"{V}/queues/{name}", {"arguments": {"x-message-ttl": "soon"}})
    assert (st, body["code"]) == (400, "invalid_arguments"), body
    st, body = http(weir, "GET", f"/vhosts/{q('nope-' + name)}/queues")
    assert (st, body["code"]) == (404, "unknown_vhost"), body


def test_queue_counts_bindings_and_deletes(weir, name):
    V = "/vhosts/%2F"
    ex, qu = f"{name}.x", f"{name}.q"
    assert http(weir, "PUT", f"{V}/exchanges/{ex}", {"type": "direct"})[0] == 201
    st, body = http(weir, "PUT", f"{V}/queues/{qu}", {"arguments": {"x-max-length": 100}})
    assert st == 201, body
    assert body["type"] == "classic" and body["durable"] and body["arguments"] == {"x-max-length": 100}
    assert http(weir, "PUT", f"{V}/queues/{qu}", {"arguments": {"x-max-length": 100}})[0] == 200
    st, body = http(weir, "PUT", f"{V}/queues/{qu}", {"arguments": {"x-max-length": 5}})
    assert (st, body["code"]) == (409, "inequivalent_arguments")
    binding = {"source": ex, "destination": qu, "routing_key": "k"}
    st, body = http(weir, "POST", f"{V}/bindings", binding)
    assert st == 201, body
    assert http(weir, "POST", f"{V}/bindings", binding)[0] == 200
    st, body = http(weir, "GET", f"{V}/bindings?source={q(ex)}")
    assert body["bindings"] == [{"vhost": "/", "source": ex, "destination_type": "queue", "destination": qu,
                                 "routing_key": "k", "arguments": {}}]  # fmt: skip
    with conn(weir) as c:
        ch = c.channel()
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish(ex, "k", b"%d" % i)
        m, _, _ = ch.basic_get(qu)
        ch.basic_consume(qu, lambda *a: None)
        st, body = http(weir, "GET", f"{V}/queues/{qu}")
        assert (body["messages"], body["messages_ready"], body["messages_unacknowledged"], body["consumers"]) in (
            (3, 2, 1, 1), (3, 0, 3, 1),
        ), body  # fmt: skip
        st, body = http(weir, "DELETE", f"{V}/queues/{qu}?if_unused=true")
        assert (st, body["code"]) == (409, "in_use")
    st, body = http(weir, "DELETE", f"{V}/queues/{qu}?if_empty=true")
    assert (st, body["code"]) == (409, "not_empty")
    st, body = http(weir, "DELETE", f"{V}/bindings", binding)
    assert st == 204, body
    st, body = http(weir, "DELETE", f"{V}/bindings", binding)
    assert (st, body["code"]) == (404, "unknown_binding")
    assert http(weir, "DELETE", f"{V}/queues/{qu}")[0] == 204
    assert http(weir, "GET", f"{V}/queues/{qu}")[1]["code"] == "unknown_queue"
    assert http(weir, "DELETE", f"{V}/exchanges/{ex}")[0] == 204


def test_vhosts(weir, name):
    vh = f"vh-{name}"
    st, body = http(weir, "PUT", f"/vhosts/{q(vh)}", {})
    assert (st, body) == (201, {"name": vh})
    assert http(weir, "PUT", f"/vhosts/{q(vh)}", {})[0] == 200
    assert {"name": vh} in http(weir, "GET", "/vhosts")[1]["vhosts"]
    with conn(weir, vh) as c:
        ch = c.channel()
        ch.queue_declare("in-vhost", durable=True)
    st, body = http(weir, "GET", f"/vhosts/{q(vh)}/queues/in-vhost")
    assert st == 200 and body["vhost"] == vh
    assert http(weir, "GET", "/vhosts/%2F/queues/in-vhost")[0] == 404
    assert http(weir, "DELETE", f"/vhosts/{q(vh)}")[0] == 204
    assert http(weir, "GET", f"/vhosts/{q(vh)}")[1]["code"] == "unknown_vhost"
    assert http(weir, "DELETE", "/vhosts/%2F")[1]["code"] == "access_refused"


def _declare_entities(b, name):
    with conn(b) as c:
        ch = c.channel()
        ch.exchange_declare(f"{name}.dx", "topic", durable=True)
        ch.queue_declare(f"{name}.dq", durable=True, arguments={"x-message-ttl": 60000})
        ch.queue_bind(f"{name}.dq", f"{name}.dx", "a.#")
        ch.queue_bind(f"{name}.dq", "amq.fanout")
        ch.exchange_declare(f"{name}.tx", "direct", durable=False)
        ch.queue_declare(f"{name}.tq", durable=False)
    V = "/vhosts/%2F"
    assert http(b, "PUT", f"{V}/queues/{name}.aq", {"durable": True})[0] == 201
    assert http(b, "POST", f"{V}/bindings", {"source": f"{name}.dx", "destination": f"{name}.aq", "routing_key": "b"})[0] == 201


def _check_entities(b, name):
    with conn(b) as c:
        ch = c.channel()
        ch.exchange_declare(f"{name}.dx", "topic", durable=True, passive=True)
        ch.queue_declare(f"{name}.dq", durable=True, arguments={"x-message-ttl": 60000})
        ch.queue_declare(f"{name}.aq", passive=True)
        ch.confirm_delivery()
        ch.basic_publish(f"{name}.dx", "a.x", b"routed after restart")
        ch.basic_publish(f"{name}.dx", "b", b"to the admin queue")
        ch.basic_publish("amq.fanout", "", b"fanout")
        bodies = []
        while True:
            m, _, body = ch.basic_get(f"{name}.dq", auto_ack=True)
            if m is None:
                break
            bodies.append(body)
        assert bodies == [b"routed after restart", b"fanout"]
        assert ch.basic_get(f"{name}.aq", auto_ack=True)[2] == b"to the admin queue"
        for transient in ("tx", "tq"):
            ch2 = c.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                if transient == "tx":
                    ch2.exchange_declare(f"{name}.tx", passive=True)
                else:
                    ch2.queue_declare(f"{name}.tq", passive=True)
            assert e.value.reply_code == 404


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "sigkill"])
def test_durable_entities_survive_restart(own_weir, name, sig):
    _declare_entities(own_weir, name)
    own_weir.stop(sig)
    own_weir.start()
    _check_entities(own_weir, name)


def test_auto_delete_durable_queue_leaves_the_quorum(own_weir, name):
    with conn(own_weir) as c:
        ch = c.channel()
        ch.queue_declare(name, durable=True, auto_delete=True)
        tag = ch.basic_consume(name, lambda *a: None)
        ch.basic_cancel(tag)
    st, _ = http(own_weir, "GET", f"/vhosts/%2F/queues/{name}")
    assert st == 404
    own_weir.stop(signal.SIGTERM)
    own_weir.start()
    assert http(own_weir, "GET", f"/vhosts/%2F/queues/{name}")[0] == 404


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "sigkill"])
def test_confirmed_persistent_messages_survive(own_weir, name, sig):
    persistent = pika.BasicProperties(delivery_mode=2)
    with conn(own_weir) as c:
        ch = c.channel()
        ch.confirm_delivery()
        ch.queue_declare(name, durable=True)
        ch.queue_declare(f"{name}.transient-queue", durable=False)
        for i in range(200):
            ch.basic_publish("", name, b"%d" % i, persistent)  # returns once confirmed
        ch.basic_publish("", name, b"transient message", pika.BasicProperties(delivery_mode=1))
        ch.basic_publish("", f"{name}.transient-queue", b"x", persistent)
        for _ in range(50):
            m, _, _ = ch.basic_get(name)
            ch.basic_ack(m.delivery_tag)
        held = [ch.basic_get(name)[0] for _ in range(10)]  # unacknowledged when the broker stops
        assert all(m is not None for m in held)
        ch.basic_publish("", name, b"after", persistent)  # a confirm also orders the acks before it
    own_weir.stop(sig)
    own_weir.start()
    with conn(own_weir) as c:
        ch = c.channel()
        got = []
        while True:
            m, _, body = ch.basic_get(name, auto_ack=True)
            if m is None:
                break
            got.append(body)
        assert got == [b"%d" % i for i in range(50, 200)] + [b"after"]
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.queue_declare(f"{name}.transient-queue", passive=True)


def test_large_persistent_message_survives_sigkill(own_weir, name):
    body = bytes(range(256)) * (3 * 4096)  # 3 MiB, larger than the Kafka side's default max.message.bytes
    with conn(own_weir) as c:
        ch = c.channel()
        ch.confirm_delivery()
        ch.queue_declare(name, durable=True)
        ch.basic_publish("", name, body, pika.BasicProperties(delivery_mode=2))
    own_weir.stop(signal.SIGKILL)
    own_weir.start()
    with conn(own_weir) as c:
        m, _, got = c.channel().basic_get(name, auto_ack=True)
        assert m is not None and m.redelivered and got == body


def test_memory_alarm_blocks_publishers_until_queues_drain(tmp_path, monkeypatch, name):
    from weir_harness import Broker

    monkeypatch.setenv("WEIR_AMQP_MEMORY_LIMIT", str(1_000_000))
    b = Broker(tmp_path / "broker-0").start()
    try:
        events = []
        with conn(b) as publisher, conn(b) as other:
            publisher.add_on_connection_blocked_callback(lambda c, f: events.append(("blocked", f.method.reason)))
            publisher.add_on_connection_unblocked_callback(lambda c, f: events.append(("unblocked", None)))
            ch = publisher.channel()
            ch.queue_declare(name)
            for _ in range(3):
                ch.basic_publish("", name, b"x" * 500_000)
            publisher.process_data_events(time_limit=0.1)
            other_ch = other.channel()
            deadline = time.monotonic() + 10
            # The alarm is raised within a check interval; the first publish after it is held.
            while not events and time.monotonic() < deadline:
                ch.basic_publish("", name, b"probe")
                publisher.process_data_events(time_limit=0.1)
            assert events and events[0][0] == "blocked", events
            assert "memory" in events[0][1]
            # Consumers and other connections keep working; draining the queue clears the alarm.
            assert other_ch.queue_declare(name, passive=True).method.message_count >= 3
            assert other_ch.queue_purge(name).method.message_count >= 3
            while len(events) < 2 and time.monotonic() < deadline:
                publisher.process_data_events(time_limit=0.1)
            assert [e[0] for e in events] == ["blocked", "unblocked"], events
            m, _, body = wait_for_get(other_ch, name)
            assert body == b"probe"
    finally:
        b.stop()


def wait_for_get(ch, queue, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = ch.basic_get(queue, auto_ack=True)
        if r[0] is not None:
            return r
        time.sleep(0.05)
    raise AssertionError(f"nothing arrived in {queue}")
