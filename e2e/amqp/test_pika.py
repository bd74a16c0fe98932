"""AMQP 0-9-1 behaviour through pika, a client nobody here wrote.

Every expectation is RabbitMQ's: the file also runs against RabbitMQ (AMQP_TARGET=HOST:PORT,
see run_against_rabbitmq.sh). Names carry a per-test suffix so runs never collide.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from contextlib import contextmanager

import pika
import pika.exceptions
import pytest


def params(target, **kw) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(target.host, target.port, blocked_connection_timeout=30, **kw)


@contextmanager
def connection(target, **kw):
    conn = pika.BlockingConnection(params(target, **kw))
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


@contextmanager
def channel(target, confirm: bool = False):
    with connection(target) as conn:
        ch = conn.channel()
        if confirm:
            ch.confirm_delivery()
        yield ch


def get_bodies(ch, queue: str) -> list[bytes]:
    """Every ready message of `queue` (basic.get until get-empty), acknowledged."""
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def wait_for(pred, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def message_count(target, queue: str) -> int:
    with channel(target) as ch:
        return ch.queue_declare(queue, passive=True).method.message_count


def consume_n(conn, ch, queue: str, n: int, timeout: float = 5.0, auto_ack: bool = False):
    """Up to n (method, properties, body) deliveries, not acknowledged unless auto_ack."""
    got = []
    deadline = time.monotonic() + timeout
    for delivery in ch.consume(queue, auto_ack=auto_ack, inactivity_timeout=0.2):
        if delivery[0] is not None:
            got.append(delivery)
        if len(got) >= n or time.monotonic() > deadline:
            break
    return got


# -------------------------------------------------------------------------------------------
# Routing: every exchange type, table-driven
# -------------------------------------------------------------------------------------------

ALL = {"x-match": "all"}
ANY = {"x-match": "any"}

ROUTING_CASES = {
    "direct": (
        "direct",
        [("q1", "a", None), ("q2", "b", None), ("q3", "a", None), ("q3", "c", None)],
        [("a", None, {"q1", "q3"}), ("b", None, {"q2"}), ("c", None, {"q3"}), ("A", None, set()), ("", None, set())],
    ),
    "fanout": (
        "fanout",
        [("q1", "x", None), ("q2", "", None)],
        [("anything", None, {"q1", "q2"}), ("", None, {"q1", "q2"})],
    ),
    "topic": (
        "topic",
        [("q1", "*.orange.*", None), ("q2", "*.*.rabbit", None), ("q2", "lazy.#", None), ("q3", "#", None),
         ("q4", "a.#.z", None), ("q5", "", None)],
        [
            ("quick.orange.rabbit", None, {"q1", "q2", "q3"}),
            ("lazy.orange.elephant", None, {"q1", "q2", "q3"}),
            ("quick.orange.fox", None, {"q1", "q3"}),
            ("lazy.brown.fox", None, {"q2", "q3"}),
            ("quick.brown.fox", None, {"q3"}),
            ("orange", None, {"q3"}),
            ("quick.orange.male.rabbit", None, {"q3"}),
            ("lazy", None, {"q2", "q3"}),
            ("a.z", None, {"q3", "q4"}),
            ("a.b.c.z", None, {"q3", "q4"}),
            ("a.b.c", None, {"q3"}),
            ("", None, {"q3", "q5"}),
        ],
    ),
    "headers": (
        "headers",
        [
            ("q1", "", {**ALL, "format": "pdf", "type": "report"}),
            ("q2", "", {**ANY, "format": "pdf", "type": "log"}),
            ("q3", "", {"format": "zip"}),
            ("q4", "", {**ANY}),
            ("q5", "", {"x-match": "all-with-x", "x-tenant": "a"}),
            ("q6", "", {"x-match": "any-with-x", "x-tenant": "b", "type": "log"}),
        ],
        [
            ("", {"format": "pdf", "type": "report"}, {"q1", "q2"}),
            ("", {"format": "pdf"}, {"q2"}),
            ("", {"type": "log"}, {"q2", "q6"}),
            ("", {"format": "zip", "type": "x"}, {"q3"}),
            ("", {"x-tenant": "a"}, {"q5"}),
            ("", {"x-tenant": "b"}, {"q6"}),
            ("", {}, set()),
            ("", None, set()),
        ],
    ),
}


@pytest.mark.parametrize("case", list(ROUTING_CASES))
def test_exchange_types_route_as_rabbitmq(target, name, case):
    kind, bindings, messages = ROUTING_CASES[case]
    with channel(target, confirm=True) as ch:
        ch.exchange_declare(name, kind, auto_delete=True)
        queues = {q: f"{name}.{q}" for q, _, _ in bindings}
        for q in queues.values():
            ch.queue_declare(q, exclusive=True)
        for q, key, args in bindings:
            ch.queue_bind(queues[q], name, routing_key=key, arguments=args)
        for i, (key, headers, _) in enumerate(messages):
            ch.basic_publish(name, key, f"{i}".encode(), pika.BasicProperties(headers=headers))
        got = {q: sorted(int(b) for b in get_bodies(ch, real)) for q, real in queues.items()}
        for q in queues:
            expected = sorted(i for i, (_, _, dest) in enumerate(messages) if q in dest)
            assert got[q] == expected, f"{case}: queue {q} got messages {got[q]}, expected {expected}"


def test_default_and_standard_exchanges_exist(target, name):
    with channel(target, confirm=True) as ch:
        for ex, kind in [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
                         ("amq.headers", "headers"), ("amq.match", "headers")]:
            ch.exchange_declare(ex, passive=True)
            ch.exchange_declare(ex, kind, durable=True)  # equivalent redeclare is allowed
        q = ch.queue_declare(name, exclusive=True).method.queue
        ch.basic_publish("", q, b"via default")
        assert get_bodies(ch, q) == [b"via default"]


def test_declaring_reserved_or_default_exchange_is_refused(target, name):
    with channel(target) as ch:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.exchange_declare(f"amq.{name}", "direct")
        assert e.value.reply_code == 403
    with channel(target) as ch:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.exchange_delete("amq.direct")
        assert e.value.reply_code == 403


def test_exchange_to_exchange_bindings_and_alternate_exchange(target, name):
    with channel(target, confirm=True) as ch:
        ch.exchange_declare(f"{name}.src", "topic")
        ch.exchange_declare(f"{name}.dst", "fanout", auto_delete=True)
        ch.exchange_declare(f"{name}.ae", "fanout", auto_delete=True)
        ch.exchange_declare(f"{name}.main", "direct", auto_delete=True, arguments={"alternate-exchange": f"{name}.ae"})
        q1 = ch.queue_declare(f"{name}.q1", exclusive=True).method.queue
        q_ae = ch.queue_declare(f"{name}.qae", exclusive=True).method.queue
        q_main = ch.queue_declare(f"{name}.qmain", exclusive=True).method.queue
        ch.exchange_bind(f"{name}.dst", f"{name}.src", routing_key="a.*")
        ch.queue_bind(q1, f"{name}.dst")
        ch.queue_bind(q_ae, f"{name}.ae")
        ch.queue_bind(q_main, f"{name}.main", routing_key="known")
        ch.basic_publish(f"{name}.src", "a.b", b"e2e")
        ch.basic_publish(f"{name}.src", "b.b", b"nowhere")
        ch.basic_publish(f"{name}.main", "known", b"routed")
        # Unroutable through main: goes to the alternate exchange, so a mandatory publish
        # is not returned.
        ch.basic_publish(f"{name}.main", "unknown", b"alternate", mandatory=True)
        assert get_bodies(ch, q1) == [b"e2e"]
        assert get_bodies(ch, q_main) == [b"routed"]
        assert get_bodies(ch, q_ae) == [b"alternate"]
        ch.exchange_unbind(f"{name}.dst", f"{name}.src", routing_key="a.*")
        ch.basic_publish(f"{name}.src", "a.b", b"after unbind")
        assert get_bodies(ch, q1) == []
        ch.exchange_delete(f"{name}.src")


def test_internal_exchange_refuses_publishes(target, name):
    with channel(target) as ch:
        ch.exchange_declare(name, "fanout", internal=True, auto_delete=True)
        ch.basic_publish(name, "", b"x")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(f"{name}-after", exclusive=True)  # the error arrives by then
        assert e.value.reply_code == 403


def test_exchange_redeclare_with_other_type_is_precondition_failed(target, name):
    with channel(target) as ch:
        ch.exchange_declare(name, "direct", auto_delete=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.exchange_declare(name, "fanout", auto_delete=True)
        assert e.value.reply_code == 406
    with channel(target) as ch:
        ch.exchange_delete(name)


def test_exchange_delete_if_unused(target, name):
    with channel(target) as ch:
        ch.exchange_declare(name, "direct")
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, name, "k")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.exchange_delete(name, if_unused=True)
        assert e.value.reply_code == 406
    with channel(target) as ch:
        ch.exchange_delete(name)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.exchange_declare(name, passive=True)
        assert e.value.reply_code == 404


# -------------------------------------------------------------------------------------------
# Queues
# -------------------------------------------------------------------------------------------


def test_passive_declare_of_missing_queue_is_404_and_other_channels_survive(target, name):
    with connection(target) as conn:
        good = conn.channel()
        bad = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            bad.queue_declare(name, passive=True)
        assert e.value.reply_code == 404
        assert "NOT_FOUND" in e.value.reply_text
        assert good.is_open
        q = good.queue_declare(name, exclusive=True).method.queue
        good.basic_publish("", q, b"still fine")
        assert get_bodies(good, q) == [b"still fine"]


def test_server_named_queue(target):
    with channel(target) as ch:
        q = ch.queue_declare("", exclusive=True).method.queue
        assert q.startswith("amq.gen-")
        assert ch.queue_declare(q, passive=True).method.queue == q


def test_exclusive_queue_is_locked_to_its_connection_and_dies_with_it(target, name):
    with connection(target) as owner:
        och = owner.channel()
        och.queue_declare(name, exclusive=True)
        with channel(target) as other:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                other.queue_declare(name, exclusive=True)
            assert e.value.reply_code == 405
            assert "RESOURCE_LOCKED" in e.value.reply_text
        with channel(target) as other:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                other.basic_consume(name, lambda *a: None)
            assert e.value.reply_code == 405
    # The owner closed: the queue is gone.
    with channel(target) as ch:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(name, passive=True)
        assert e.value.reply_code == 404


def test_queue_redeclare_with_other_properties_is_406(target, name):
    with channel(target) as ch:
        ch.queue_declare(name, durable=False, auto_delete=False, arguments={"x-message-ttl": 1000})
        ch.queue_declare(name, durable=False, arguments={"x-message-ttl": 1000})
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(name, durable=False, arguments={"x-message-ttl": 2000})
        assert e.value.reply_code == 406
    with channel(target) as ch:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(name, durable=True, arguments={"x-message-ttl": 1000})
        assert e.value.reply_code == 406
    with channel(target) as ch:
        ch.queue_delete(name)


def test_auto_delete_queue_goes_with_its_last_consumer(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, auto_delete=True)
        t1 = ch.basic_consume(name, lambda *a: None)
        t2 = ch.basic_consume(name, lambda *a: None)
        ch.basic_cancel(t1)
        assert ch.queue_declare(name, passive=True).method.consumer_count == 1
        ch.basic_cancel(t2)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(name, passive=True)
        assert e.value.reply_code == 404


def test_purge_and_delete_if_empty_if_unused(target, name):
    with channel(target, confirm=True) as ch:
        ch.queue_declare(name)
        for i in range(3):
            ch.basic_publish("", name, b"m%d" % i)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_delete(name, if_empty=True)
        assert e.value.reply_code == 406
    with connection(target) as conn:
        ch = conn.channel()
        assert ch.queue_purge(name).method.message_count == 3
        tag = ch.basic_consume(name, lambda *a: None)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_delete(name, if_unused=True)
        assert e.value.reply_code == 406
    with channel(target) as ch:
        ch.basic_publish("", name, b"last")
        wait_for(lambda: ch.queue_declare(name, passive=True).method.message_count == 1, what="one message")
        assert ch.queue_delete(name).method.message_count == 1
        # Deleting what does not exist is fine, as in RabbitMQ.
        ch.queue_delete(name)
    del tag


def test_queue_delete_cancels_consumers_of_other_connections(target, name):
    cancelled = []
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
        tag = ch.basic_consume(name, lambda *a: None)
        with channel(target) as other:
            other.queue_delete(name)
        deadline = time.monotonic() + 5
        while not cancelled and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert cancelled == [tag]


def test_x_queue_type_other_than_classic_is_refused_clearly(target, name):
    if not target.is_weir:
        pytest.skip("RabbitMQ serves quorum queues; Weir refuses them until issue 7")
    with channel(target) as ch:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        assert e.value.reply_code == 406
        assert "quorum" in e.value.reply_text and "not supported" in e.value.reply_text
    with channel(target) as ch:
        ch.queue_declare(name, arguments={"x-queue-type": "classic"}, exclusive=True)


def test_x_expires_removes_an_unused_queue(target, name):
    with channel(target) as ch:
        ch.queue_declare(name, arguments={"x-expires": 300})
    # Poll less often than the expiry: RabbitMQ counts a passive declare as a use.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if _queue_missing(target, name):
            return
    raise AssertionError("the queue did not expire within 10 s")


def _queue_missing(target, q) -> bool:
    with channel(target) as ch:
        try:
            ch.queue_declare(q, passive=True)
            return False
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code == 404


# -------------------------------------------------------------------------------------------
# Basic
# -------------------------------------------------------------------------------------------


def test_publisher_confirms_and_mandatory_return(target, name):
    with channel(target, confirm=True) as ch:
        ch.queue_declare(name, exclusive=True)
        for i in range(50):
            ch.basic_publish("", name, b"%d" % i)  # raises unless acked
        with pytest.raises(pika.exceptions.UnroutableError) as e:
            ch.basic_publish("", f"{name}-nobody", b"lost", mandatory=True)
        returned = e.value.messages[0]
        assert returned.method.reply_code == 312 and returned.method.reply_text == "NO_ROUTE"
        assert returned.body == b"lost"
        # Non-mandatory unroutable: silently dropped, still confirmed.
        ch.basic_publish("", f"{name}-nobody", b"dropped")
        assert ch.queue_declare(name, passive=True).method.message_count == 50


def test_unroutable_return_arrives_on_a_channel_without_confirms(target, name):
    returns = []
    with connection(target) as conn:
        ch = conn.channel()
        ch.add_on_return_callback(lambda c, m, p, b: returns.append((m.reply_code, b)))
        ch.basic_publish("amq.direct", f"{name}-unbound", b"back", mandatory=True)
        deadline = time.monotonic() + 5
        while not returns and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
    assert returns == [(312, b"back")]


def test_prefetch_limits_unacknowledged_deliveries(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        for i in range(10):
            ch.basic_publish("", name, b"%d" % i)
        ch.basic_qos(prefetch_count=3)
        got = []
        ch.basic_consume(name, lambda c, m, p, b: got.append(m.delivery_tag))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert len(got) == 3, got
        ch.basic_ack(got[-1], multiple=True)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and len(got) < 6:
            conn.process_data_events(time_limit=0.1)
        conn.process_data_events(time_limit=0.3)
        assert len(got) == 6, got


def test_global_prefetch_is_shared_by_the_channel_consumers(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        q1 = ch.queue_declare(f"{name}.1", exclusive=True).method.queue
        q2 = ch.queue_declare(f"{name}.2", exclusive=True).method.queue
        for q in (q1, q2):
            for i in range(5):
                ch.basic_publish("", q, b"x")
        ch.basic_qos(prefetch_count=4, global_qos=True)
        got = []
        ch.basic_consume(q1, lambda c, m, p, b: got.append(1))
        ch.basic_consume(q2, lambda c, m, p, b: got.append(2))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert len(got) == 4, got


def test_nack_requeue_redelivers_with_the_redelivered_flag(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish("", name, b"again")
        m, _, body = ch.basic_get(name)
        assert body == b"again" and not m.redelivered
        ch.basic_nack(m.delivery_tag, requeue=True)
        m2, _, body2 = wait_for(lambda: _get(ch, name), what="redelivery")
        assert body2 == b"again" and m2.redelivered
        ch.basic_reject(m2.delivery_tag, requeue=False)
        assert ch.basic_get(name)[0] is None


def _get(ch, q):
    r = ch.basic_get(q)
    return r if r[0] is not None else None


def test_requeued_messages_keep_their_order(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        for i in range(5):
            ch.basic_publish("", name, b"%d" % i)
        ch.basic_qos(prefetch_count=3)
        deliveries = consume_n(conn, ch, name, 3)
        assert [d[2] for d in deliveries] == [b"0", b"1", b"2"]
        ch.cancel()
        ch.basic_nack(deliveries[-1][0].delivery_tag, multiple=True, requeue=True)
        bodies = []
        while True:
            m, _, b = ch.basic_get(name, auto_ack=True)
            if m is None:
                break
            bodies.append((b, m.redelivered))
        assert bodies == [(b"0", True), (b"1", True), (b"2", True), (b"3", False), (b"4", False)]


def test_recover_requeues_unacknowledged(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish("", name, b"r")
        m, _, _ = ch.basic_get(name)
        assert ch.queue_declare(name, passive=True).method.message_count == 0
        ch.basic_recover(requeue=True)
        m2, _, b = wait_for(lambda: _get(ch, name), what="recovered message")
        assert b == b"r" and m2.redelivered


def test_unacked_messages_return_when_the_channel_closes(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name)
        ch.basic_publish("", name, b"held")
        m, _, _ = ch.basic_get(name)
        assert m is not None
        ch.close()
    assert message_count(target, name) == 1
    with channel(target) as ch:
        ch.queue_delete(name)


def test_ack_of_unknown_delivery_tag_is_406(target, name):
    with channel(target) as ch:
        ch.queue_declare(name, exclusive=True)
        ch.basic_ack(999)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(name, passive=True)
        assert e.value.reply_code == 406


def test_publish_to_missing_exchange_is_404(target, name):
    with channel(target) as ch:
        ch.basic_publish(f"{name}-missing", "k", b"x")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(f"{name}-q", exclusive=True)
        assert e.value.reply_code == 404


def test_consumer_tag_reuse_closes_the_connection_530(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.basic_consume(name, lambda *a: None, consumer_tag="same")
        q2 = ch.queue_declare("", exclusive=True).method.queue
        with pytest.raises((pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker,
                            pika.exceptions.DuplicateConsumerTag)):
            ch.basic_consume(q2, lambda *a: None, consumer_tag="same")


def test_consumer_tag_reuse_raw_is_connection_exception(target, name):
    """pika refuses a duplicate tag locally; a raw client shows the broker's answer."""
    s = RawClient(target)
    s.open_channel(1)
    s.method(1, 50, 10, shortstr(name) + b"\x00" * 0 + b"\x00" + b"\x00\x00\x00\x00", prefix=b"\x00\x00")  # declare
    s.expect_method(50, 11)
    consume = b"\x00\x00" + shortstr(name) + shortstr("tag") + b"\x00" + b"\x00\x00\x00\x00"
    s.method(1, 60, 20, consume)
    s.expect_method(60, 21)
    s.method(1, 60, 20, consume)
    ch, cls, mth, payload = s.read_method()
    assert (ch, cls, mth) == (0, 10, 50), (ch, cls, mth)
    code = struct.unpack(">H", payload[:2])[0]
    assert code == 530
    s.close()


def test_exclusive_consumer_refuses_others(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.basic_consume(name, lambda *a: None, exclusive=True)
        ch2 = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch2.basic_consume(name, lambda *a: None)
        assert e.value.reply_code == 403


def test_consumers_share_a_queue_round_robin(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        got = {"a": 0, "b": 0}
        ch.basic_consume(name, lambda c, m, p, b: got.__setitem__("a", got["a"] + 1), auto_ack=True)
        ch.basic_consume(name, lambda c, m, p, b: got.__setitem__("b", got["b"] + 1), auto_ack=True)
        for _ in range(10):
            ch.basic_publish("", name, b"x")
        deadline = time.monotonic() + 5
        while got["a"] + got["b"] < 10 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert got == {"a": 5, "b": 5}


def test_single_active_consumer(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True, arguments={"x-single-active-consumer": True})
        got = []
        t1 = ch.basic_consume(name, lambda c, m, p, b: got.append("first"), auto_ack=True)
        ch.basic_consume(name, lambda c, m, p, b: got.append("second"), auto_ack=True)
        for _ in range(4):
            ch.basic_publish("", name, b"x")
        deadline = time.monotonic() + 5
        while len(got) < 4 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert got == ["first"] * 4
        ch.basic_cancel(t1)
        ch.basic_publish("", name, b"y")
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert got[4:] == ["second"]


def test_large_message_is_split_by_frame_max(target, name):
    body = bytes(range(256)) * 4096  # 1 MiB
    with channel(target, confirm=True) as ch:
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish("", name, body, pika.BasicProperties(content_type="application/octet-stream"))
        m, props, got = ch.basic_get(name, auto_ack=True)
        assert got == body and props.content_type == "application/octet-stream"


def test_properties_and_headers_round_trip(target, name):
    props = pika.BasicProperties(
        content_type="text/plain", content_encoding="utf-8", headers={"a": 1, "b": "two", "c": [1, 2]},
        delivery_mode=2, priority=3, correlation_id="corr", reply_to="rq", message_id="mid",
        timestamp=1700000000, type="t", app_id="app",
    )  # fmt: skip
    with channel(target, confirm=True) as ch:
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish("", name, b"p", props)
        _, got, _ = ch.basic_get(name, auto_ack=True)
        for field in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
                      "reply_to", "message_id", "timestamp", "type", "app_id"):
            assert getattr(got, field) == getattr(props, field), field
        assert got.headers["a"] == 1 and got.headers["b"] == b"two" or got.headers["b"] == "two"


def test_tx_commit_and_rollback(target, name):
    with connection(target) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.tx_select()
        ch.basic_publish("", name, b"rolled back")
        ch.tx_rollback()
        ch.basic_publish("", name, b"committed")
        assert ch.queue_declare(name, passive=True).method.message_count == 0
        ch.tx_commit()
        assert ch.queue_declare(name, passive=True).method.message_count == 1
        m, _, b = ch.basic_get(name)
        assert b == b"committed"
        ch.basic_ack(m.delivery_tag)
        ch.tx_rollback()  # the ack is undone: still unacknowledged
        ch.basic_ack(m.delivery_tag)
        ch.tx_commit()
        ch.basic_recover(requeue=True)
        assert ch.basic_get(name)[0] is None


def test_confirm_after_tx_is_406(target, name):
    with channel(target) as ch:
        ch.tx_select()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.confirm_delivery()
        assert e.value.reply_code == 406


# -------------------------------------------------------------------------------------------
# TTL, length limits, dead-lettering
# -------------------------------------------------------------------------------------------


def test_message_ttl_expiry_dead_letters_with_x_death(target, name):
    with channel(target, confirm=True) as ch:
        ch.exchange_declare(f"{name}.dlx", "fanout", auto_delete=True)
        dead = ch.queue_declare(f"{name}.dead", exclusive=True).method.queue
        ch.queue_bind(dead, f"{name}.dlx")
        ch.queue_declare(name, exclusive=True, arguments={"x-message-ttl": 200, "x-dead-letter-exchange": f"{name}.dlx"})
        ch.basic_publish("", name, b"short-lived", pika.BasicProperties(headers={"k": "v"}))
        m, props, body = wait_for(lambda: _get(ch, dead), what="dead-lettered message")
        assert body == b"short-lived"
        death = props.headers["x-death"][0]
        assert death["reason"] in (b"expired", "expired")
        assert death["queue"] in (name.encode(), name)
        assert death["count"] == 1
        assert props.headers["k"] in (b"v", "v")


def test_per_message_expiration(target, name):
    with channel(target, confirm=True) as ch:
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish("", name, b"gone", pika.BasicProperties(expiration="100"))
        ch.basic_publish("", name, b"kept", pika.BasicProperties(expiration="60000"))
        time.sleep(0.4)
        assert get_bodies(ch, name) == [b"kept"]


def test_reject_without_requeue_dead_letters_with_routing_key(target, name):
    with channel(target, confirm=True) as ch:
        dead = ch.queue_declare(f"{name}.dead", exclusive=True).method.queue
        ch.queue_declare(name, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
        ch.basic_publish("", name, b"bad")
        m, _, _ = ch.basic_get(name)
        ch.basic_reject(m.delivery_tag, requeue=False)
        m2, props, body = wait_for(lambda: _get(ch, dead), what="dead letter")
        assert body == b"bad" and m2.routing_key == dead
        assert props.headers["x-death"][0]["reason"] in (b"rejected", "rejected")


def test_max_length_drop_head_dead_letters_the_oldest(target, name):
    with channel(target, confirm=True) as ch:
        dead = ch.queue_declare(f"{name}.dead", exclusive=True).method.queue
        ch.queue_declare(name, exclusive=True, arguments={
            "x-max-length": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})  # fmt: skip
        for i in range(4):
            ch.basic_publish("", name, b"%d" % i)
        assert get_bodies(ch, name) == [b"2", b"3"]
        assert get_bodies(ch, dead) == [b"0", b"1"]


def test_max_length_bytes(target, name):
    with channel(target, confirm=True) as ch:
        ch.queue_declare(name, exclusive=True, arguments={"x-max-length-bytes": 10})
        for b in (b"aaaa", b"bbbb", b"cccc"):
            ch.basic_publish("", name, b)
        assert get_bodies(ch, name) == [b"bbbb", b"cccc"]


def test_reject_publish_overflow_nacks_confirms(target, name):
    with channel(target, confirm=True) as ch:
        ch.queue_declare(name, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        ch.basic_publish("", name, b"fits")
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", name, b"rejected")
        assert get_bodies(ch, name) == [b"fits"]


# -------------------------------------------------------------------------------------------
# Connection: protocol header, authentication, heartbeats
# -------------------------------------------------------------------------------------------


def shortstr(s: str) -> bytes:
    b = s.encode()
    return bytes([len(b)]) + b


def longstr(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


class RawClient:
    """A minimal AMQP speaker for what client libraries will not send (bad frames, silence)."""

    def __init__(self, target, heartbeat: int = 0, handshake: bool = True):
        self.s = socket.create_connection((target.host, target.port), timeout=10)
        if handshake:
            self.s.sendall(b"AMQP\x00\x00\x09\x01")
            self.expect_method(10, 10)  # start
            resp = b"\x00guest\x00guest"
            self.method(0, 10, 11, b"\x00\x00\x00\x00" + shortstr("PLAIN") + longstr(resp) + shortstr("en_US"))
            _, _, _, tune = self.expect_method(10, 30)
            channel_max, frame_max, _hb = struct.unpack(">HIH", tune[:8])
            self.method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, heartbeat))
            self.method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00")
            self.expect_method(10, 41)

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def method(self, ch: int, cls: int, mth: int, args: bytes, prefix: bytes = b""):
        payload = struct.pack(">HH", cls, mth) + prefix + args
        self.s.sendall(struct.pack(">BHI", 1, ch, len(payload)) + payload + b"\xce")

    def read_frame(self):
        kind, ch, size = struct.unpack(">BHI", self.recv_exact(7))
        payload = self.recv_exact(size)
        assert self.recv_exact(1) == b"\xce"
        return kind, ch, payload

    def read_method(self):
        while True:
            kind, ch, payload = self.read_frame()
            if kind == 1:
                cls, mth = struct.unpack(">HH", payload[:4])
                return ch, cls, mth, payload[4:]

    def expect_method(self, cls: int, mth: int):
        got = self.read_method()
        assert (got[1], got[2]) == (cls, mth), f"expected {cls}.{mth}, got {got[1]}.{got[2]} {got[3]!r}"
        return got

    def open_channel(self, ch: int):
        self.method(ch, 20, 10, shortstr(""))
        self.expect_method(20, 11)

    def close(self):
        self.s.close()


def test_wrong_protocol_header_gets_the_right_one_back(target):
    with socket.create_connection((target.host, target.port), timeout=5) as s:
        s.sendall(b"AMQP\x01\x01\x00\x0a")
        got = b""
        while len(got) < 8:
            try:
                chunk = s.recv(64)
            except ConnectionResetError:  # RabbitMQ resets right after writing
                break
            if not chunk:
                break
            got += chunk
        assert got == b"AMQP\x00\x00\x09\x01"
        # and the server closes the socket
        s.settimeout(5)
        try:
            assert s.recv(64) == b""
        except ConnectionResetError:
            pass


def test_bad_credentials_are_refused(target):
    with pytest.raises((pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)):
        pika.BlockingConnection(params(target, credentials=pika.PlainCredentials("guest", "wrong")))


def test_amqplain_authentication_with_py_amqp(target, name):
    amqp = pytest.importorskip("amqp")
    with amqp.Connection(f"{target.host}:{target.port}", userid="guest", password="guest",
                         login_method="AMQPLAIN") as conn:  # fmt: skip
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        ch.basic_publish(amqp.Message(b"py-amqp"), exchange="", routing_key=name)
        msg = None
        deadline = time.monotonic() + 5
        while msg is None and time.monotonic() < deadline:
            msg = ch.basic_get(name, no_ack=True)
        assert msg is not None and msg.body == b"py-amqp"


def test_unknown_vhost_is_refused(target):
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ProbableAccessDeniedError)):
        pika.BlockingConnection(params(target, virtual_host=f"nope-{uuid.uuid4().hex[:6]}"))


def test_missed_heartbeats_close_the_connection(target):
    c = RawClient(target, heartbeat=1)
    c.open_channel(1)
    # Say nothing: the broker must give up after about two intervals.
    c.s.settimeout(10)
    start = time.monotonic()
    with pytest.raises((ConnectionError, OSError)):
        while True:
            c.read_frame()  # server heartbeats, then EOF
    assert time.monotonic() - start < 8


def test_heartbeats_keep_an_idle_connection_alive(target, name):
    with connection(target, heartbeat=1) as conn:
        ch = conn.channel()
        ch.queue_declare(name, exclusive=True)
        conn.sleep(3.5)  # pika sends and checks heartbeats while sleeping
        assert conn.is_open
        ch.basic_publish("", name, b"alive")
        assert get_bodies(ch, name) == [b"alive"]


def test_frame_on_unopened_channel_is_504(target):
    c = RawClient(target)
    c.method(5, 50, 10, b"\x00\x00" + shortstr("x") + b"\x00" + b"\x00\x00\x00\x00")
    ch, cls, mth, payload = c.read_method()
    assert (ch, cls, mth) == (0, 10, 50)
    assert struct.unpack(">H", payload[:2])[0] == 504
    c.close()


def test_oversized_frame_is_501(target):
    c = RawClient(target)
    c.open_channel(1)
    big = 1 << 20
    c.s.sendall(struct.pack(">BHI", 3, 1, big) + b"\x00" * 16)
    ch, cls, mth, payload = c.read_method()
    assert (ch, cls, mth) == (0, 10, 50)
    assert struct.unpack(">H", payload[:2])[0] == 501
    c.close()


def test_body_without_publish_is_505(target):
    c = RawClient(target)
    c.open_channel(1)
    c.s.sendall(struct.pack(">BHI", 3, 1, 3) + b"abc" + b"\xce")
    ch, cls, mth, payload = c.read_method()
    assert (ch, cls, mth) == (0, 10, 50)
    assert struct.unpack(">H", payload[:2])[0] == 505
    c.close()


def test_channel_error_carries_class_and_method_ids(target, name):
    c = RawClient(target)
    c.open_channel(1)
    # queue.declare passive of a missing queue → channel.close 404 for class 50 method 10
    c.method(1, 50, 10, b"\x00\x00" + shortstr(name) + b"\x01" + b"\x00\x00\x00\x00")
    ch, cls, mth, payload = c.read_method()
    assert (ch, cls, mth) == (1, 20, 40)
    code = struct.unpack(">H", payload[:2])[0]
    tlen = payload[2]
    class_id, method_id = struct.unpack(">HH", payload[3 + tlen : 7 + tlen])
    assert (code, class_id, method_id) == (404, 50, 10)
    c.method(1, 20, 41, b"")  # close-ok
    c.open_channel(1)  # the channel id can be reused
    c.close()
