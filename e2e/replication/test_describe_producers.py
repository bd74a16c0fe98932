"""DescribeProducers asked of each replica (kafka-python's `describe_producers` with
`broker_id`, as `kafka-transactions describe-producers --broker-id` does): every replica holds
the same producer state, followers from the batches they replicated; a broker without a
replica answers NOT_LEADER_OR_FOLLOWER."""

from __future__ import annotations

import pytest

kafka = pytest.importorskip("kafka")
ck = pytest.importorskip("confluent_kafka")
from kafka.admin import KafkaAdminClient  # noqa: E402
from kafka.errors import NotLeaderForPartitionError  # noqa: E402
from kafka.structs import TopicPartition as KTP  # noqa: E402

from test_min_isr import create  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def test_every_replica_describes_the_same_producers(cluster):
    topic = "describe-producers"
    create(cluster, topic, rf=2)
    p = ck.Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "linger.ms": 0})
    for v in (b"a", b"b", b"c", b"d"):
        p.produce(topic, v, partition=0)
        assert p.flush(10) == 0
    replicas = cluster.partitions(topic)[0]["replicas"]
    (outsider,) = [i for i in range(3) if i not in replicas]
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        def described(broker_id):
            return admin.describe_producers([KTP(topic, 0)], broker_id=broker_id)[KTP(topic, 0)].active_producers

        wait_until(lambda: all(len(described(r)) == 1 and described(r)[0].last_sequence == 3 for r in replicas), 20,
                   what="every replica holding the producer at sequence 3")  # fmt: skip
        assert len({described(r)[0] for r in replicas}) == 1, [described(r) for r in replicas]
        with pytest.raises(NotLeaderForPartitionError):
            described(outsider)
    finally:
        admin.close()
