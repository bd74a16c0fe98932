"""Incremental fetch sessions (KIP-227) with kafka-python, whose consumer keeps one per broker:
after a full first fetch it names only partitions whose position changed, and the broker answers
only partitions with something new. Also the session errors on the wire, and a broker restart
(which forgets every session) under a consuming client."""

from __future__ import annotations

import re
import socket
import struct
import time
import urllib.request

import pytest

kafka = pytest.importorskip("kafka")
from kafka import TopicPartition  # noqa: E402
from kafka.consumer import fetcher as kp_fetcher  # noqa: E402
from kafka.protocol.consumer import FetchRequest, FetchResponse  # noqa: E402

from test_kafka_python import make_consumer, make_producer  # noqa: E402
from weir_harness import create_topic_ready, recv_exact, wait_until  # noqa: E402

PARTITIONS = 24
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71


class ResponseLog:
    """Wraps kafka-python's FetchSessionHandler.handle_response to record, per response, its
    session id and how many partitions it named."""

    def __init__(self, monkeypatch):
        self.seen: list[tuple[int, int, int]] = []  # (session id, epoch the request carried, partitions)
        original = kp_fetcher.FetchSessionHandler.handle_response
        log = self

        def handle_response(handler, response):
            named = sum(len(t.partitions) for t in response.responses)
            log.seen.append((response.session_id, handler.next_metadata.epoch, named))
            return original(handler, response)

        monkeypatch.setattr(kp_fetcher.FetchSessionHandler, "handle_response", handle_response)

    def since(self, mark: int) -> list[tuple[int, int, int]]:
        return self.seen[mark:]


def metric(broker, name: str) -> float:
    with urllib.request.urlopen(f"http://{broker.host}:{broker.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def producer(broker):
    # kafka-python's own request timeout (30 s), rather than the 15 s of the shared helper.
    return make_producer(broker, request_timeout_ms=30_000)


def consumer(broker):
    return make_consumer(broker, fetch_max_wait_ms=100)


def drain(c, want: dict[int, int], got: dict[int, list[bytes]], timeout: float = 60.0) -> None:
    """Polls until every partition p holds want[p] values in got."""
    deadline = time.monotonic() + timeout
    while any(len(got.setdefault(p, [])) < n for p, n in want.items()) and time.monotonic() < deadline:
        for tp, records in c.poll(timeout_ms=200, max_records=5_000).items():
            got.setdefault(tp.partition, []).extend(r.value for r in records)
    short = {p: (len(got.get(p, [])), n) for p, n in want.items() if len(got.get(p, [])) != n}
    assert not short, f"partitions read (got, want): {short}"


def test_kafka_python_fetches_through_an_incremental_session(broker, topic_name, monkeypatch):
    create_topic_ready(broker.bootstrap, topic_name, partitions=PARTITIONS)
    responses = ResponseLog(monkeypatch)
    p = producer(broker)
    c = consumer(broker)
    try:
        tps = [TopicPartition(topic_name, i) for i in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        for i in range(PARTITIONS * 20):
            p.send(topic_name, partition=i % PARTITIONS, value=b"first-%d-%d" % (i % PARTITIONS, i // PARTITIONS))
        p.flush(timeout=30)
        got: dict[int, list[bytes]] = {}
        drain(c, {i: 20 for i in range(PARTITIONS)}, got)

        # Idle: the session's fetches go on, and their responses name no partition.
        mark = len(responses.seen)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            assert c.poll(timeout_ms=100) == {}
        idle = responses.since(mark)
        assert len(idle) >= 5, f"too few fetches while idle: {idle}"
        session_ids = {sid for sid, _, _ in idle}
        assert len(session_ids) == 1 and 0 not in session_ids, f"not one session: {idle}"
        assert all(epoch > 0 for _, epoch, _ in idle), f"full fetches while idle: {idle}"
        assert [named for _, _, named in idle] == [0] * len(idle), f"idle responses named partitions: {idle}"
        assert metric(broker, "weir_fetch_sessions") >= 1
        assert metric(broker, "weir_fetch_session_partitions") >= PARTITIONS

        # Traffic on one partition: responses name that partition only, and every record
        # arrives once, in order.
        mark = len(responses.seen)
        for i in range(300):
            p.send(topic_name, partition=7, value=b"second-%d" % i)
            if i % 50 == 0:
                p.flush(timeout=30)
        p.flush(timeout=30)
        drain(c, {i: 20 + (300 if i == 7 else 0) for i in range(PARTITIONS)}, got)
        busy = responses.since(mark)
        assert {named for _, _, named in busy} <= {0, 1}, f"responses named other partitions: {busy}"
        assert any(named == 1 for _, _, named in busy)
        assert {sid for sid, _, _ in busy} == session_ids, f"the session changed: {busy}"
        for i in range(PARTITIONS):
            expect = [b"first-%d-%d" % (i, j) for j in range(20)]
            if i == 7:
                expect += [b"second-%d" % j for j in range(300)]
            assert got[i] == expect, f"partition {i}"

        # Unassigning partitions forgets them in the session; the rest go on.
        c.assign(tps[:4])
        p.send(topic_name, partition=2, value=b"third")
        p.flush(timeout=30)
        drain(c, {2: 21}, got)
        assert got[2][-1] == b"third"
    finally:
        c.close()
        p.close(timeout=10)


def test_a_broker_restart_forgets_sessions_and_kafka_python_carries_on(fresh_broker, topic_name, monkeypatch):
    broker = fresh_broker
    create_topic_ready(broker.bootstrap, topic_name, partitions=4)
    responses = ResponseLog(monkeypatch)
    p = producer(broker)
    c = consumer(broker)
    try:
        tps = [TopicPartition(topic_name, i) for i in range(4)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        for i in range(400):
            p.send(topic_name, partition=i % 4, value=b"before-%d" % i)
        p.flush(timeout=30)
        got: dict[int, list[bytes]] = {}
        drain(c, {i: 100 for i in range(4)}, got)
        def in_a_session():
            assert c.poll(timeout_ms=100) == {}
            return any(sid != 0 and epoch > 0 for sid, epoch, _ in responses.seen)

        wait_until(in_a_session, 10, what="an incremental fetch")
        before = {sid for sid, _, _ in responses.seen if sid != 0}
        mark = len(responses.seen)

        assert broker.stop() == 0
        broker.start()
        for i in range(400):
            p.send(topic_name, partition=i % 4, value=b"after-%d" % i)
        p.flush(timeout=60)
        drain(c, {i: 200 for i in range(4)}, got)
        for i in range(4):
            assert got[i] == [b"before-%d" % j for j in range(i, 400, 4)] + [b"after-%d" % j for j in range(i, 400, 4)]
        # The old session is gone with the restart (the client hears FETCH_SESSION_ID_NOT_FOUND,
        # or loses its connection first); it fetched the rest in a new one.
        after = {sid for sid, epoch, _ in responses.since(mark) if sid != 0} - before
        assert after, f"no new session after the restart: {responses.since(mark)}"
    finally:
        c.close()
        p.close(timeout=10)


def fetch_request(topic: str, session_id: int, epoch: int, partitions: list[int]):
    FetchTopic = FetchRequest.FetchTopic
    return FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=session_id,
        session_epoch=epoch,
        topics=[
            FetchTopic(
                topic=topic,
                partitions=[
                    FetchTopic.FetchPartition(
                        partition=p, current_leader_epoch=-1, fetch_offset=0, last_fetched_epoch=-1,
                        log_start_offset=-1, partition_max_bytes=1 << 20,
                    )
                    for p in partitions
                ],
            )
        ] if partitions else [],
        forgotten_topics_data=[],
        rack_id="",
    )  # fmt: skip


def test_unknown_sessions_and_stale_epochs_get_their_errors(broker, topic_name):
    """Fetch v12 by hand (kafka-python's message classes, one connection): the top-level
    session errors, and epoch -1 closing a session."""
    create_topic_ready(broker.bootstrap, topic_name, partitions=2)
    version = 12
    with socket.create_connection((broker.host, broker.kafka_port), timeout=10) as s:
        correlation = iter(range(1, 1000))

        def call(req):
            cid = next(correlation)
            req.with_header(correlation_id=cid, client_id="weir-e2e-sessions")
            frame = req.encode(version=version, header=True)
            s.sendall(struct.pack(">i", len(frame)) + frame)
            size = struct.unpack(">i", recv_exact(s, 4))[0]
            resp = FetchResponse.decode(recv_exact(s, size), version=version, header=True)
            assert resp._header.correlation_id == cid
            return resp

        def named(r):
            return sorted(p.partition_index for t in r.responses for p in t.partitions)

        r = call(fetch_request(topic_name, 123456, 1, []))
        assert (r.error_code, r.session_id, named(r)) == (FETCH_SESSION_ID_NOT_FOUND, 0, [])

        r = call(fetch_request(topic_name, 0, 0, [0, 1]))
        assert r.error_code == 0 and r.session_id > 0
        assert named(r) == [0, 1]
        sid = r.session_id
        r = call(fetch_request(topic_name, sid, 1, []))
        assert (r.error_code, r.session_id, named(r)) == (0, sid, [])
        r = call(fetch_request(topic_name, sid, 1, []))  # epoch 1 again: stale
        assert (r.error_code, r.session_id, named(r)) == (INVALID_FETCH_SESSION_EPOCH, 0, [])
        r = call(fetch_request(topic_name, sid, 2, []))  # the refused one did not count
        assert (r.error_code, r.session_id) == (0, sid)

        # Epoch -1 closes the session: a full answer without one, and the id is gone.
        r = call(fetch_request(topic_name, sid, -1, [0]))
        assert (r.error_code, r.session_id, named(r)) == (0, 0, [0])
        r = call(fetch_request(topic_name, sid, 3, []))
        assert r.error_code == FETCH_SESSION_ID_NOT_FOUND
