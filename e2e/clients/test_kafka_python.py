"""kafka-python (pure Python client, its own protocol code) against a real weir-broker:
KafkaProducer, a group-less KafkaConsumer (assign + seek), offset queries, KafkaAdminClient."""

from __future__ import annotations

import socket
import struct
import time

import pytest

kafka = pytest.importorskip("kafka")
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic  # noqa: E402
from kafka.errors import TopicAlreadyExistsError  # noqa: E402

from weir_harness import create_topic_ready  # noqa: E402

N = 5_000


def make_producer(broker, **extra):
    conf = dict(
        bootstrap_servers=broker.bootstrap,
        acks="all",
        # kafka-python 3 turns idempotence on by default, which needs InitProducerId: not
        # served by the broker yet (docs/compatibility.md).
        enable_idempotence=False,
        linger_ms=5,
        request_timeout_ms=15_000,
    )
    conf.update(extra)
    return KafkaProducer(**conf)


def make_consumer(broker, **extra):
    conf = dict(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=15_000,
        fetch_max_wait_ms=200,
    )
    conf.update(extra)
    return KafkaConsumer(**conf)


def poll_n(c, n, timeout=60.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for _, records in c.poll(timeout_ms=500, max_records=2_000).items():
            got.extend(records)
    return got


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_produce_assign_seek_and_offsets(broker, topic_name, compression):
    create_topic_ready(broker.bootstrap, topic_name)
    p = make_producer(broker, compression_type=compression)
    base = int(time.time() * 1000) - 3_600_000  # an hour ago, 10 ms apart
    futures = [
        p.send(topic_name, key=b"%d" % i, value=b"value-%05d" % i, timestamp_ms=base + 10 * i) for i in range(N)
    ]
    p.flush(timeout=60)
    metas = [f.get(timeout=30) for f in futures]
    p.close(timeout=10)
    assert [m.offset for m in metas] == list(range(N))
    assert {(m.topic, m.partition) for m in metas} == {(topic_name, 0)}
    assert [m.timestamp for m in metas[:3]] == [base, base + 10, base + 20]

    tp = TopicPartition(topic_name, 0)
    c = make_consumer(broker)
    try:
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = poll_n(c, N)
        assert len(got) == N, f"read {len(got)} of {N}"
        assert [r.offset for r in got] == list(range(N))
        assert [r.value for r in got] == [b"value-%05d" % i for i in range(N)]
        assert [r.key for r in got] == [b"%d" % i for i in range(N)]
        assert [r.timestamp for r in got] == [base + 10 * i for i in range(N)]
        assert {r.timestamp_type for r in got} == {0}  # CreateTime
        assert c.poll(timeout_ms=300) == {}

        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: N}
        assert c.position(tp) == N

        times = c.offsets_for_times({tp: base + 10 * 2500})
        assert (times[tp].offset, times[tp].timestamp) == (2500, base + 25_000)
        times = c.offsets_for_times({tp: base + 10 * 2500 + 5})  # between two records: the later one
        assert (times[tp].offset, times[tp].timestamp) == (2501, base + 25_010)
        times = c.offsets_for_times({tp: 0})
        assert (times[tp].offset, times[tp].timestamp) == (0, base)
        assert c.offsets_for_times({tp: base + 10 * N + 1})[tp] is None  # nothing that recent

        # seek to an offset from offsets_for_times reads from there.
        c.seek(tp, c.offsets_for_times({tp: base + 10 * (N - 10)})[tp].offset)
        assert [r.value for r in poll_n(c, 10)] == [b"value-%05d" % i for i in range(N - 10, N)]
    finally:
        c.close()


def test_admin_client_create_list_delete(broker, topic_name):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15_000)
    try:
        a.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)], timeout_ms=10_000)
        assert topic_name in a.list_topics()
        deadline = time.monotonic() + 15  # a new partition may be LEADER_NOT_AVAILABLE for a moment
        while True:
            (desc,) = a.describe_topics([topic_name])
            leaders = sorted((p["partition_index"], p["leader_id"]) for p in desc["partitions"])
            if leaders == [(0, 0), (1, 0)] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert desc["error_code"] == 0
        assert leaders == [(0, 0), (1, 0)]
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)], timeout_ms=10_000)

        # Both partitions take writes and serve them.
        p = make_producer(broker)
        for part in (0, 1):
            p.send(topic_name, value=b"p%d" % part, partition=part).get(timeout=30)
        p.close(timeout=10)
        c = make_consumer(broker)
        try:
            tps = [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
            c.assign(tps)
            c.seek_to_beginning()
            assert sorted((r.partition, r.value) for r in poll_n(c, 2)) == [(0, b"p0"), (1, b"p1")]
            assert c.end_offsets(tps) == {tps[0]: 1, tps[1]: 1}
        finally:
            c.close()

        a.delete_topics([topic_name], timeout_ms=10_000)
        deadline = time.monotonic() + 10
        while topic_name in a.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert topic_name not in a.list_topics()
    finally:
        a.close()


def test_admin_client_configs_partitions_cluster(broker, topic_name):
    """DescribeConfigs v4, CreatePartitions v3 and DescribeCluster v2 as kafka-python sends them."""
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15_000)
    try:
        a.create_topics(
            [NewTopic(topic_name, num_partitions=1, replication_factor=1, topic_configs={"retention.ms": "3600000"})],
            timeout_ms=10_000,
        )
        res = ConfigResource(ConfigResourceType.TOPIC, topic_name)
        modified = a.describe_configs([res])["topic"][topic_name]
        assert {k: (v["value"], v["config_source"]) for k, v in modified.items()} == {
            "retention.ms": ("3600000", "DYNAMIC_TOPIC_CONFIG")
        }
        everything = a.describe_configs([res], config_filter="all")["topic"][topic_name]
        assert everything["cleanup.policy"]["value"] == "delete"
        assert everything["cleanup.policy"]["config_source"] == "DEFAULT_CONFIG"
        assert everything["retention.ms"]["value"] == "3600000"

        result = a.create_partitions({topic_name: NewPartitions(3)})
        assert [(r.name, r.error_code) for r in result.results] == [(topic_name, 0)]
        (desc,) = a.describe_topics([topic_name])
        assert len(desc["partitions"]) == 3

        cluster = a.describe_cluster()
        assert cluster["controller_id"] == 0
        assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [
            (0, "127.0.0.1", broker.kafka_port)
        ]
    finally:
        a.close()


def test_non_incremental_alter_configs_replaces_a_topics_configs(broker, topic_name):
    """AlterConfigs (key 33, the call before IncrementalAlterConfigs, still Sarama's): the
    entries given become the topic's whole set of dynamic configs, so a key left out returns
    to its default. kafka-python's admin (incremental=False) first reads the modified keys
    and sends them along; its protocol classes send a bare request. An unknown key or a bad
    value is INVALID_CONFIG and changes nothing; validate_only keeps nothing."""
    from kafka.net.compat import KafkaNetClient
    from kafka.protocol.admin import AlterConfigsRequest

    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15_000)
    client = KafkaNetClient(bootstrap_servers=broker.bootstrap)
    client.check_version()
    resource_cls = AlterConfigsRequest.AlterConfigsResource

    def alter(configs, validate_only=False):
        res = ConfigResource(ConfigResourceType.TOPIC, topic_name, configs=configs)
        return a.alter_configs([res], validate_only=validate_only, incremental=False)["topic"][topic_name]

    def alter_bare(configs):
        entries = [resource_cls.AlterableConfig(name=k, value=v) for k, v in configs.items()]
        req = AlterConfigsRequest(validate_only=False, resources=[
            resource_cls(resource_type=2, resource_name=topic_name, configs=entries)])  # fmt: skip
        return client.send_and_receive(0, req, timeout_ms=10_000).responses[0].error_code

    def dynamic():
        got = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])["topic"][topic_name]
        return {k: v["value"] for k, v in got.items()}

    try:
        a.create_topics([NewTopic(topic_name, 1, 1, topic_configs={"retention.ms": "3600000"})], timeout_ms=10_000)
        assert alter({"max.message.bytes": "2000", "cleanup.policy": "compact"}) == "OK"
        assert dynamic() == {"retention.ms": "3600000", "max.message.bytes": "2000", "cleanup.policy": "compact"}
        assert alter_bare({"max.message.bytes": "3000"}) == 0
        assert dynamic() == {"max.message.bytes": "3000"}, "the keys left out were not reset"
        assert alter({"max.message.bytes": "-5"}).startswith("[Error 40] InvalidConfigurationError")
        assert alter_bare({"no.such.key": "1"}) == 40  # kafka-python's admin refuses it itself
        assert alter({"retention.ms": "1"}, validate_only=True) == "OK"
        assert dynamic() == {"max.message.bytes": "3000"}
        assert alter_bare({}) == 0
        assert dynamic() == {}
    finally:
        client.close()
        a.close()


def test_default_producer_and_group_consumer(broker, topic_name):
    """kafka-python's defaults: an idempotent producer (InitProducerId) and a consumer in a
    group (subscribe, commit); a second member resumes from the committed offsets."""
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15_000)
    try:
        a.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)], timeout_ms=10_000)
    finally:
        a.close()
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=15_000)  # idempotent by default
    futures = []
    for i in range(1_000):
        futures.append(p.send(topic_name, value=b"d-%04d" % i, partition=i % 2))
    p.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    p.close(timeout=10)
    assert sorted(m.offset for m in metas if m.partition == 0) == list(range(500))

    group = topic_name + "-group"

    def member(want):
        c = KafkaConsumer(
            topic_name, bootstrap_servers=broker.bootstrap, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False, request_timeout_ms=15_000,
        )  # fmt: skip
        try:
            got = []
            end = time.monotonic() + 45
            while len(got) < want and time.monotonic() < end:
                for _, records in c.poll(timeout_ms=500, max_records=want - len(got)).items():
                    got.extend(records)
            c.commit()
            committed = {tp.partition: c.committed(tp) for tp in c.assignment()}
        finally:
            c.close()
        return got, committed

    first, _ = member(600)
    second, committed = member(400)
    assert len(first) == 600 and len(second) == 400
    everything = first + second
    assert len({(r.partition, r.offset) for r in everything}) == 1_000, "a message was delivered twice"
    assert sorted(r.value for r in everything) == [b"d-%04d" % i for i in range(1_000)]
    assert committed == {0: 500, 1: 500}


def _produce_v3_frame(correlation_id: int, topic: str, acks: int, records: bytes) -> bytes:
    def string(s: str) -> bytes:
        raw = s.encode()
        return struct.pack(">h", len(raw)) + raw

    header = struct.pack(">hhi", 0, 3, correlation_id) + string("weir-e2e-raw")
    body = struct.pack(">hhi", -1, acks, 5_000)  # transactional_id null, acks, timeout
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1)  # one topic, one partition
    body += struct.pack(">ii", 0, len(records)) + records
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def _record_batch(value: bytes) -> bytes:
    """One record in a v2 record batch, encoded by kafka-python's own record builder."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=10_000_000,
    )  # fmt: skip
    b.append(0, int(time.time() * 1000), None, value, [])
    return bytes(b.build())


def _next_request_answered(sock) -> bool:
    """Send a Metadata v1 request on sock: True if it is answered, False if sock was closed."""
    frame = struct.pack(">hhih", 3, 1, 99, 0) + struct.pack(">i", -1)
    try:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        return sock.recv(4) != b""
    except (ConnectionResetError, BrokenPipeError):
        return False


def test_failed_acks0_produce_closes_the_connection(broker, topic_name):
    """An acks=0 Produce gets no response, so when it fails (here MESSAGE_TOO_LARGE) Kafka
    closes the connection for the client to notice. Regression test: the broker used to drop
    it silently (fixed in 20de1b8, broker/src/kafka/handlers/produce.rs)."""
    create_topic_ready(broker.bootstrap, topic_name, config={"max.message.bytes": "1000"})
    # Control: a valid acks=0 produce gets no answer and leaves the connection usable.
    with socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10) as s:
        s.sendall(_produce_v3_frame(1, topic_name, 0, _record_batch(b"x" * 100)))
        assert _next_request_answered(s), "a successful acks=0 produce closed the connection"
    # A refused one: the broker must close the connection (it cannot answer with the error).
    with socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10) as s:
        s.sendall(_produce_v3_frame(2, topic_name, 0, _record_batch(b"y" * 5_000)))
        time.sleep(0.3)
        assert not _next_request_answered(s), "the failed acks=0 produce left the connection open"
