"""Kafka's replication throttle configs (KIP-73), set as `kafka-reassign-partitions --throttle`
and Cruise Control set them: the dynamic broker configs `leader.replication.throttled.rate` and
`follower.replication.throttled.rate`, and the topic configs
`leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`, through
IncrementalAlterConfigs from confluent-kafka (librdkafka) and kafka-python.

A replica a reassignment adds to a partition holding about 6 MB catches up no faster than
the rate allows, whether only the leader's side or only the follower's side is throttled; the
same move with the configs deleted (as the tool's `--verify` deletes them) takes a fraction of
the time; an in-sync follower named by `*` lists is not held back; DescribeConfigs shows where
each value comes from; bad keys, values and resource names are refused and change nothing."""

from __future__ import annotations

import time

import pytest

ck = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")

from confluent_kafka import KafkaError, KafkaException  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)
from kafka.admin import KafkaAdminClient  # noqa: E402
from kafka.structs import TopicPartition  # noqa: E402
from test_min_isr import produce, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402

RATE = 500_000  # bytes per second
MESSAGES = 6_000
VALUE = b"q" * 1_000
LEADER_RATE = "leader.replication.throttled.rate"
FOLLOWER_RATE = "follower.replication.throttled.rate"
LOG_DIRS_RATE = "replica.alter.log.dirs.io.max.bytes.per.second"
LEADER_LIST = "leader.replication.throttled.replicas"
FOLLOWER_LIST = "follower.replication.throttled.replicas"
UNTHROTTLED = "9223372036854775807"


def op(name, value=None, kind=AlterConfigOpType.SET):
    return ConfigEntry(name, value, incremental_operation=kind)


def alter(cluster, resource_type, name, *ops, validate_only=False):
    """One IncrementalAlterConfigs through librdkafka; returns None or the KafkaError."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    resource = ConfigResource(resource_type, name, incremental_configs=list(ops))
    (f,) = admin.incremental_alter_configs([resource], validate_only=validate_only).values()
    try:
        f.result(20)
        return None
    except KafkaException as e:
        return e.args[0]


def describe(cluster, resource_type, name) -> dict:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    (f,) = admin.describe_configs([ConfigResource(resource_type, name)]).values()
    return {k: (e.value, ConfigSource(e.source)) for k, e in f.result(20).items()}


def fill(cluster, topic):
    cluster.brokers[0].http_json("POST", "/api/v1/topics", {"name": topic, "assignment": [[0]]})
    cluster.wait_isr(topic, 0, 1)
    assert all(e is None for e, _ in produce(cluster.bootstrap, topic, [VALUE] * MESSAGES, acks="1"))


def move_to_0_and_1(cluster, topic) -> float:
    """Reassign `topic`-0 from [0] to [0, 1] with kafka-python's AlterPartitionReassignments;
    seconds until broker 1 is in its ISR."""
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        start = time.monotonic()
        assert admin.alter_partition_reassignments({tp: [0, 1]}) == {tp: None}

        def done():
            p = cluster.partitions(topic)[0]
            return p["replicas"] == [0, 1] and p["adding"] == [] and sorted(p["isr"]) == [0, 1]

        wait_until(done, 120, interval=0.1, what=f"broker 1 in the ISR of {topic}-0")
        return time.monotonic() - start
    finally:
        admin.close()


def quota_bytes(broker, side) -> float:
    for line in broker.metrics().splitlines():
        if line.startswith(f'weir_replication_quota_throttled_bytes_total{{side="{side}"}} '):
            return float(line.split()[1])
    return 0.0  # a labelled counter appears once it counts


def clear_as_verify_does(cluster, topic):
    """What `kafka-reassign-partitions --verify` sends once the moves are done."""
    for b in ("0", "1", "2"):
        deleted = [op(k, kind=AlterConfigOpType.DELETE) for k in (LEADER_RATE, FOLLOWER_RATE, LOG_DIRS_RATE)]
        assert alter(cluster, ResourceType.BROKER, b, *deleted) is None
    lists = [op(k, kind=AlterConfigOpType.DELETE) for k in (LEADER_LIST, FOLLOWER_LIST)]
    assert alter(cluster, ResourceType.TOPIC, topic, *lists) is None


def test_the_leaders_rate_holds_a_move_and_deleting_it_lets_the_next_go(cluster):
    fill(cluster, "lthrottled")
    fill(cluster, "lfree")
    size = len(segment_bytes(cluster.brokers[0], "lthrottled", 0))
    assert size > 5_000_000

    # As the tool sets them: the rate on the brokers, the current replica in the leader
    # list, the new one in the follower list. Only the leader's side has a rate.
    assert alter(cluster, ResourceType.BROKER, "0", op(LEADER_RATE, str(RATE))) is None
    assert alter(cluster, ResourceType.TOPIC, "lthrottled", op(LEADER_LIST, "0:0"), op(FOLLOWER_LIST, "0:1")) is None
    assert describe(cluster, ResourceType.BROKER, "0")[LEADER_RATE] == (str(RATE), ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert describe(cluster, ResourceType.BROKER, "1")[LEADER_RATE] == (UNTHROTTLED, ConfigSource.DEFAULT_CONFIG)
    topic_configs = describe(cluster, ResourceType.TOPIC, "lthrottled")
    assert topic_configs[LEADER_LIST] == ("0:0", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert describe(cluster, ResourceType.TOPIC, "lfree")[LEADER_LIST] == ("", ConfigSource.DEFAULT_CONFIG)

    throttled = move_to_0_and_1(cluster, "lthrottled")
    # One second's budget saved up at most, then the rate: about size / RATE - 1 seconds.
    assert throttled >= size / RATE - 2, f"{size} bytes copied in {throttled:.1f}s at {RATE} B/s"
    served = quota_bytes(cluster.brokers[0], "leader")
    assert served >= size, (served, size)

    # The same throttle on the other topic's lists, then cleared as --verify clears it.
    assert alter(cluster, ResourceType.TOPIC, "lfree", op(LEADER_LIST, "*"), op(FOLLOWER_LIST, "*")) is None
    clear_as_verify_does(cluster, "lfree")
    assert describe(cluster, ResourceType.BROKER, "0")[LEADER_RATE] == (UNTHROTTLED, ConfigSource.DEFAULT_CONFIG)
    assert describe(cluster, ResourceType.TOPIC, "lfree")[LEADER_LIST] == ("", ConfigSource.DEFAULT_CONFIG)
    free = move_to_0_and_1(cluster, "lfree")
    assert free < throttled / 2, (throttled, free)
    assert quota_bytes(cluster.brokers[0], "leader") == served, "counted without a throttle"

    for topic in ("lthrottled", "lfree"):
        assert segment_bytes(cluster.brokers[1], topic, 0) == segment_bytes(cluster.brokers[0], topic, 0)


def test_the_followers_rate_from_the_cluster_default_holds_a_move(cluster):
    """Only the follower's side is throttled, and its rate comes from the default broker
    resource (`kafka-configs --entity-default`, the resource named ""). Neither Python client
    names that resource in its admin API, so kafka-python's protocol classes send it."""
    from kafka.net.compat import KafkaNetClient
    from kafka.protocol.admin import IncrementalAlterConfigsRequest

    fill(cluster, "fthrottled")
    size = len(segment_bytes(cluster.brokers[0], "fthrottled", 0))
    client = KafkaNetClient(bootstrap_servers=cluster.bootstrap)
    client.check_version()
    resource_cls = IncrementalAlterConfigsRequest.AlterConfigsResource
    config_cls = resource_cls.AlterableConfig

    def alter_default(name, value, operation=0):
        req = IncrementalAlterConfigsRequest(validate_only=False, resources=[resource_cls(
            resource_type=4, resource_name="", configs=[config_cls(name=name, config_operation=operation, value=value)])])  # fmt: skip
        return client.send_and_receive(0, req, timeout_ms=10_000).responses[0]

    try:
        assert alter_default(FOLLOWER_RATE, str(RATE)).error_code == 0
        assert alter(cluster, ResourceType.TOPIC, "fthrottled", op(FOLLOWER_LIST, "0:1")) is None
        # Every broker now shows the default's value, as coming from the default.
        for b in ("0", "1", "2"):
            got = describe(cluster, ResourceType.BROKER, b)[FOLLOWER_RATE]
            assert got == (str(RATE), ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG), (b, got)
        throttled = move_to_0_and_1(cluster, "fthrottled")
        assert throttled >= size / RATE - 2, f"{size} bytes copied in {throttled:.1f}s at {RATE} B/s"
        assert quota_bytes(cluster.brokers[1], "follower") >= size
        assert quota_bytes(cluster.brokers[0], "leader") == 0, "the leader's side has no rate"
        refused = alter_default(LOG_DIRS_RATE, "1000")
        assert refused.error_code == KafkaError.INVALID_CONFIG and "log director" in refused.error_message
        assert alter_default(FOLLOWER_RATE, None, operation=1).error_code == 0
        assert describe(cluster, ResourceType.BROKER, "2")[FOLLOWER_RATE] == (UNTHROTTLED, ConfigSource.DEFAULT_CONFIG)
    finally:
        client.close()
    assert segment_bytes(cluster.brokers[1], "fthrottled", 0) == segment_bytes(cluster.brokers[0], "fthrottled", 0)


def test_in_sync_followers_are_not_held_and_bad_configs_change_nothing(cluster):
    # min.insync.replicas=2: acks=all fails if the follower falls out of the ISR.
    cluster.brokers[0].http_json("POST", "/api/v1/topics",
                                 {"name": "synced", "assignment": [[0, 1]], "configs": {"min.insync.replicas": "2"}})  # fmt: skip
    cluster.wait_isr("synced", 0, 2)
    # The tightest throttle, on every replica of the topic, on both sides.
    for b in ("0", "1"):
        assert alter(cluster, ResourceType.BROKER, b, op(LEADER_RATE, "1"), op(FOLLOWER_RATE, "1")) is None
    assert alter(cluster, ResourceType.TOPIC, "synced", op(LEADER_LIST, "*"), op(FOLLOWER_LIST, "*")) is None
    t0 = time.monotonic()
    reports = produce(cluster.bootstrap, "synced", [VALUE] * 2_000, acks="all")
    assert all(e is None for e, _ in reports)
    assert time.monotonic() - t0 < 5, "acks=all to an in-sync follower was held by the throttle"
    assert sorted(cluster.partitions("synced")[0]["isr"]) == [0, 1]
    wait_until(lambda: segment_bytes(cluster.brokers[1], "synced", 0) == segment_bytes(cluster.brokers[0], "synced", 0),
               10, what="the follower holds every record")  # fmt: skip

    before = describe(cluster, ResourceType.BROKER, "0")
    for resource_type, name, entry in (
        (ResourceType.BROKER, "0", op(LEADER_RATE, "-1")),
        (ResourceType.BROKER, "0", op(LEADER_RATE, "fast")),
        (ResourceType.BROKER, "0", op("num.io.threads", "8")),
        (ResourceType.BROKER, "0", op(LOG_DIRS_RATE, "1000")),
        (ResourceType.TOPIC, "synced", op(FOLLOWER_LIST, "0-1")),
    ):
        err = alter(cluster, resource_type, name, entry)
        assert err is not None and err.code() == KafkaError.INVALID_CONFIG, (name, entry, err)
    # validate_only checks and keeps nothing.
    assert alter(cluster, ResourceType.BROKER, "0", op(LEADER_RATE, "7"), validate_only=True) is None
    err = alter(cluster, ResourceType.BROKER, "0", op(LEADER_RATE, "-7"), validate_only=True)
    assert err is not None and err.code() == KafkaError.INVALID_CONFIG
    assert describe(cluster, ResourceType.BROKER, "0") == before
    assert before[LEADER_RATE] == ("1", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert describe(cluster, ResourceType.TOPIC, "synced")[FOLLOWER_LIST] == ("*", ConfigSource.DYNAMIC_TOPIC_CONFIG)

    # The non-incremental AlterConfigs (kafka-python with incremental=False) on a broker:
    # the entries given replace the resource's dynamic configs.
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType

    kadmin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        res = KConfigResource(ConfigResourceType.BROKER, "2", configs={LEADER_RATE: "700", FOLLOWER_RATE: "800"})
        assert kadmin.alter_configs([res], incremental=False) == {"broker": {"2": "OK"}}
        got = describe(cluster, ResourceType.BROKER, "2")
        dynamic = ConfigSource.DYNAMIC_BROKER_CONFIG
        assert (got[LEADER_RATE], got[FOLLOWER_RATE]) == (("700", dynamic), ("800", dynamic))
        res = KConfigResource(ConfigResourceType.BROKER, "2", configs={LEADER_RATE: "-1"})
        assert kadmin.alter_configs([res], incremental=False)["broker"]["2"].startswith("[Error 40]")
        assert describe(cluster, ResourceType.BROKER, "2") == got
    finally:
        kadmin.close()
    # A bare request (the admin above sends the other modified keys along): the follower rate,
    # left out, returns to the default.
    from kafka.net.compat import KafkaNetClient
    from kafka.protocol.admin import AlterConfigsRequest

    client = KafkaNetClient(bootstrap_servers=cluster.bootstrap)
    client.check_version()
    try:
        resource_cls = AlterConfigsRequest.AlterConfigsResource
        req = AlterConfigsRequest(validate_only=False, resources=[resource_cls(
            resource_type=4, resource_name="2", configs=[resource_cls.AlterableConfig(name=LEADER_RATE, value="900")])])  # fmt: skip
        assert client.send_and_receive(2, req, timeout_ms=10_000).responses[0].error_code == 0
    finally:
        client.close()
    got = describe(cluster, ResourceType.BROKER, "2")
    assert (got[LEADER_RATE], got[FOLLOWER_RATE]) == (("900", dynamic), (UNTHROTTLED, ConfigSource.DEFAULT_CONFIG))
