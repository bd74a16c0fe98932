"""Partition reassignment and broker draining through the admin API, with real processes:
while an idempotent acks=all producer sends a numbered stream, replicas move between
brokers (new replicas catch up as followers, join the ISR, then the old ones leave and
leadership moves). Afterwards every acknowledged message is present exactly once, in order,
the new replicas are byte for byte equal, Metadata and the admin API show the new replica
sets, and the brokers that lost a replica deleted its log directory."""

from __future__ import annotations

import time
import urllib.error
from functools import partial

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient  # noqa: E402

from numbered import NumberedProducer, check_exactly_once_in_order  # noqa: E402
from test_min_isr import consume_all, produce, segment_bytes  # noqa: E402
from weir_harness import wait_until  # noqa: E402


def create_assigned(cluster, topic, assignment, config):
    admin = cluster.any_running()
    admin.http_json("POST", "/api/v1/topics", {"name": topic, "assignment": assignment, "configs": config})
    for p, replicas in enumerate(assignment):
        cluster.wait_isr(topic, p, len(replicas))


def metadata_replicas(cluster, topic):
    md = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(topic, timeout=10)
    return {p: (sorted(m.replicas), m.leader) for p, m in md.topics[topic].partitions.items()}


def wait_no_reassignments(cluster, timeout=90):
    admin = cluster.any_running()
    wait_until(lambda: admin.http_json("GET", "/api/v1/partitions/reassignments", timeout=5)["reassignments"] == [],
               timeout, interval=0.3, what="reassignments to complete")


def wait_log_dir_gone(broker, topic, partition, timeout=30):
    d = broker.data_dir / f"{topic}-{partition}"
    wait_until(lambda: not d.exists(), timeout, what=f"{d} deleted on broker {broker.node_id}")


def local_log_end(broker, topic, partition):
    view = broker.http_json("GET", f"/api/v1/partitions?topic={topic}")["partitions"]
    return next(p for p in view if p["partition"] == partition)["log_end_offset"]


def test_reassignment_moves_replicas_and_leadership_under_a_producer(cluster):
    topic = "moving"
    create_assigned(cluster, topic, [[0, 1], [1, 2]], {"min.insync.replicas": "2"})
    admin = cluster.brokers[2]
    # Bad requests change nothing: unknown broker, duplicate entry, missing replicas, unknown topic.
    for body, status in (
        ({"partitions": [{"topic": topic, "partition": 0, "replicas": [0, 9]}]}, 400),
        ({"partitions": [{"topic": topic, "partition": 0, "replicas": [0, 2]}] * 2}, 400),
        ({"partitions": [{"topic": topic, "partition": 0}]}, 400),
        ({"partitions": [{"topic": "nope", "partition": 0, "replicas": [0]}]}, 404),
        ({"partitions": [{"topic": topic, "partition": 0, "replicas": [2]}, {"topic": topic, "partition": 7, "replicas": [2]}]}, 400),
    ):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as e:
            admin.http_json("POST", "/api/v1/partitions/reassign", body)
        assert e.value.code == status, body
    assert admin.http_json("GET", "/api/v1/partitions/reassignments")["reassignments"] == []
    assert [p["replicas"] for p in cluster.partitions(topic)] == [[0, 1], [1, 2]]

    prod = NumberedProducer(cluster.bootstrap, topic, 2)
    prod.start()
    wait_until(lambda: prod.total_acked() > 400, 30, what="first acknowledgements")
    # Partition 0 leaves its leader 0 for 2; partition 1 leaves its leader 1 for 0.
    resp = admin.http_json("POST", "/api/v1/partitions/reassign", {"partitions": [
        {"topic": topic, "partition": 0, "replicas": [2, 1]},
        {"topic": topic, "partition": 1, "replicas": [0, 2]},
    ]})  # fmt: skip
    assert [r["outcome"] for r in resp["results"]] in (["started", "started"], ["started", "completed"],
                                                       ["completed", "started"], ["completed", "completed"])
    for r, target in zip(resp["results"], ([2, 1], [0, 2])):
        assert r["target_replicas"] == target
        if r["outcome"] == "started":
            assert sorted(r["replicas"]) == sorted(set(target) | {0 if target == [2, 1] else 1})
    wait_no_reassignments(cluster)
    parts = cluster.partitions(topic)
    assert [p["replicas"] for p in parts] == [[2, 1], [0, 2]]
    assert parts[0]["leader"] == 2 and parts[1]["leader"] == 0, "leadership moved to the first target replica"
    assert all(p["adding"] == [] and p["removing"] == [] for p in parts)
    # Metadata agrees once every broker applied it.
    wait_until(lambda: metadata_replicas(cluster, topic) == {0: ([1, 2], 2), 1: ([0, 2], 0)}, 20,
               what="Metadata with the new replica sets")
    # The removed replicas' logs are gone: broker 0 no longer hosts partition 0, broker 1 not 1.
    wait_log_dir_gone(cluster.brokers[0], topic, 0)
    wait_log_dir_gone(cluster.brokers[1], topic, 1)
    assert local_log_end(cluster.brokers[0], topic, 0) is None
    assert local_log_end(cluster.brokers[1], topic, 1) is None

    before = prod.total_acked()
    wait_until(lambda: prod.total_acked() > before + 300, 60, what="acknowledgements after the move")
    prod.finish()
    check_exactly_once_in_order(cluster.bootstrap, prod)
    for p, replicas in ((0, [2, 1]), (1, [0, 2])):
        brokers = [cluster.brokers[i] for i in replicas]
        wait_until(lambda: len({segment_bytes(b, topic, p) for b in brokers}) == 1, 30,
                   what=f"identical new replicas of partition {p}")
    # Moving back to the current replica list is a no-op.
    resp = admin.http_json("POST", "/api/v1/partitions/reassign",
                           {"partitions": [{"topic": topic, "partition": 0, "replicas": [2, 1]}]})
    assert resp["results"][0]["outcome"] == "no_change"


@pytest.mark.cluster_args(session_timeout_ms=60_000)
def test_reassignment_completes_across_a_metadata_quorum_leader_change(cluster):
    """The reassignment is in the replicated metadata, not in the broker that accepted it: it
    starts while the new replica is SIGSTOPped (so it cannot complete), the quorum leader is
    SIGKILLed as the new replica resumes, and the move completes under the next leader."""
    quorum_leader = cluster.brokers[0].http_json("GET", "/api/v1/cluster")["quorum"]["leader"]
    others = [b.node_id for b in cluster.brokers if b.node_id != quorum_leader]
    old, new = others
    topic = "moving-quorum"
    create_assigned(cluster, topic, [[old]], {})
    prod = NumberedProducer(cluster.bootstrap, topic, 1)
    prod.start()
    wait_until(lambda: prod.total_acked() > 300, 30, what="first acknowledgements")

    cluster.sigstop(new)
    admin = cluster.brokers[old]
    resp = admin.http_json("POST", "/api/v1/partitions/reassign",
                           {"partitions": [{"topic": topic, "partition": 0, "replicas": [new]}]})
    assert resp["results"][0]["outcome"] == "started"
    pending = admin.http_json("GET", "/api/v1/partitions/reassignments")["reassignments"]
    assert [(r["adding"], r["removing"], r["target_replicas"]) for r in pending] == [([new], [old], [new])]
    (part,) = cluster.partitions(topic)
    assert (part["adding"], part["removing"], part["leader"]) == ([new], [old], old)

    cluster.brokers[quorum_leader].kill()
    cluster.sigcont(new)
    wait_until(lambda: admin.http_json("GET", "/api/v1/cluster", timeout=5)["quorum"]["leader"] in (old, new), 30,
               what="a new metadata quorum leader")
    wait_no_reassignments(cluster)
    (part,) = cluster.partitions(topic)
    assert (part["replicas"], part["leader"]) == ([new], new)
    wait_log_dir_gone(cluster.brokers[old], topic, 0)
    before = prod.total_acked()
    wait_until(lambda: prod.total_acked() > before + 200, 60, what="acknowledgements after the move")
    prod.finish()
    check_exactly_once_in_order(cluster.brokers[new].bootstrap, prod)


def test_drain_moves_every_replica_and_leadership_off_a_broker(cluster):
    topic = "draining"
    create_assigned(cluster, topic, [[0, 1], [1, 2], [2, 0]], {"min.insync.replicas": "2"})
    prod = NumberedProducer(cluster.bootstrap, topic, 3)
    prod.start()
    wait_until(lambda: prod.total_acked() > 400, 30, what="first acknowledgements")

    admin = cluster.brokers[1]
    for path, status in (("/api/v1/brokers/9/drain", 404), ("/api/v1/brokers/x/drain", 400)):
        with pytest.raises(urllib.error.HTTPError) as e:
            admin.http_json("POST", path, {})
        assert e.value.code == status, path
    # Broker 0 holds partition 0 (leader) and partition 2; both replicas must go to the
    # only broker outside each replica set.
    status = admin.http_json("POST", "/api/v1/brokers/0/drain", {})
    assert status["draining"] is True and status["blocked"] == []
    assert sorted((s["partition"], tuple(s["target_replicas"])) for s in status["started"]) == [(0, (2, 1)), (2, (2, 1))]

    def drained():
        s = admin.http_json("GET", "/api/v1/brokers/0/drain", timeout=5)
        return s if s["done"] else None

    final = wait_until(drained, 90, interval=0.3, what="broker 0 drained")
    assert final["remaining"] == [] and final["leaderships"] == 0
    parts = cluster.partitions(topic)
    assert all(0 not in p["replicas"] and p["leader"] != 0 and len(p["replicas"]) == 2 for p in parts), parts
    wait_until(lambda: all(0 not in r and l != 0 for r, l in metadata_replicas(cluster, topic).values()), 20,
               what="Metadata without broker 0")
    for p in (0, 2):
        wait_log_dir_gone(cluster.brokers[0], topic, p)
    view = cluster.brokers[0].http_json("GET", f"/api/v1/partitions?topic={topic}")["partitions"]
    assert all(p["log_end_offset"] is None for p in view), "broker 0 still hosts a replica"
    # A draining broker gets no replica of a new topic.
    admin.http_json("POST", "/api/v1/topics", {"name": "after-drain", "partitions": 4, "replication_factor": 2})
    assert all(0 not in p["replicas"] for p in cluster.partitions("after-drain"))
    # More acknowledgements after the drain, then the exactly-once check.
    before = prod.total_acked()
    wait_until(lambda: prod.total_acked() > before + 300, 60, what="acknowledgements after the drain")
    prod.finish()
    check_exactly_once_in_order(cluster.bootstrap, prod)
    # Undrain: the mark is cleared (replicas do not come back by themselves).
    s = admin.http_json("DELETE", "/api/v1/brokers/0/drain")
    assert (s["draining"], s["done"]) == (False, False)
    assert cluster.brokers[0].running()


def test_drain_of_a_full_replica_set_moves_only_leadership(cluster):
    """Replication factor 3 on three brokers: no broker can take broker 0's replica, so the
    drain reports the partition as blocked, keeps the replica, and moves its leadership to
    another ISR member; preferred-leader election does not hand it back while 0 drains."""
    topic = "full"
    create_assigned(cluster, topic, [[0, 1, 2]], {"min.insync.replicas": "2"})
    admin = cluster.brokers[1]
    for query in ("?owner=two%20words", "?who=ops"):
        with pytest.raises(urllib.error.HTTPError) as e:
            admin.http_json("POST", f"/api/v1/brokers/0/drain{query}", {})
        assert e.value.code == 400, query
    # The caller that sets the mark owns it (the operator names itself so); asking again,
    # under any name, keeps the owner.
    status = admin.http_json("POST", "/api/v1/brokers/0/drain?owner=ops", {})
    assert status["owner"] == "ops"
    again = admin.http_json("POST", "/api/v1/brokers/0/drain?owner=weir-operator", {})
    assert again["owner"] == "ops"
    brokers = {b["id"]: b for b in admin.http_json("GET", "/api/v1/cluster")["brokers"]}
    assert brokers[0]["draining"] is True and brokers[0]["draining_owner"] == "ops", brokers
    assert status["started"] == []
    assert [(b["topic"], b["partition"]) for b in status["blocked"]] == [(topic, 0)]
    assert (status["done"], status["leaderships"]) == (False, 0)
    (p,) = cluster.partitions(topic)
    assert p["replicas"] == [0, 1, 2] and p["leader"] == 1
    resp = admin.http_json("POST", "/api/v1/partitions/elect-preferred", {"topic": topic})
    assert [r["outcome"] for r in resp["results"]] == ["draining"]
    cleared = admin.http_json("DELETE", "/api/v1/brokers/0/drain")
    assert cleared["draining"] is False and "owner" not in cleared, cleared
    resp = admin.http_json("POST", "/api/v1/partitions/elect-preferred", {"topic": topic})
    assert [r["outcome"] for r in resp["results"]] == ["elected"]



def one_replica_with_records(cluster, topic):
    """`topic` with one partition on broker 0 holding 2,000 records of 1 kB."""
    create_assigned(cluster, topic, [[0]], {})
    assert all(e is None for e, _ in produce(cluster.bootstrap, topic, [b"r" * 1_000] * 2_000, acks="1"))


def reassign_partition_0(admin, topic, replicas):
    """Start (or, with None, cancel) a reassignment of `topic`-0 through the admin API."""
    out = admin.http_json("POST", "/api/v1/partitions/reassign",
                          {"partitions": [{"topic": topic, "partition": 0, "replicas": replicas}]})  # fmt: skip
    assert out["results"][0]["outcome"] in ("started", "cancelled"), out

@pytest.mark.cluster_args(extra_args=("--replica-fetch-wait-max-ms", "5000"))
def test_a_move_cancelled_and_started_again_copies_every_record(cluster):
    """A follower's fetch asked before a cancel can be answered after the same move started
    again, once the follower's log was deleted and made anew, empty. Appending that answer
    would leave the records before its offset missing from the new replica. The leader holds a
    follower's fetch up to 5 s here, so the cancel and the new start fall inside one fetch."""
    topic = "again"
    admin = cluster.brokers[0]
    one_replica_with_records(cluster, topic)
    reassign = partial(reassign_partition_0, admin, topic)

    # Throttled, broker 1 copies its first second's budget (100 kB) and then waits in a fetch.
    admin.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 100_000})
    reassign([0, 1])
    wait_until(lambda: (local_log_end(cluster.brokers[1], topic, 0) or 0) > 0, 30, what="broker 1 copying")
    reassign(None)
    wait_log_dir_gone(cluster.brokers[1], topic, 0)
    admin.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 0})
    reassign([0, 1])
    wait_no_reassignments(cluster, 60)
    (p,) = cluster.partitions(topic)
    assert p["replicas"] == [0, 1] and sorted(p["isr"]) == [0, 1], p
    assert segment_bytes(cluster.brokers[1], topic, 0) == segment_bytes(cluster.brokers[0], topic, 0)


# Idle followers wait 20 s in a fetch here, so the lag limit must be longer (as Kafka asks),
# and a stopped broker must stay unfenced for the leader to consider it.
@pytest.mark.cluster_args(session_timeout_ms=60_000, lag_time_max_ms=60_000,
                         extra_args=("--replica-fetch-wait-max-ms", "20000"))  # fmt: skip
def test_a_fetch_asked_before_a_cancel_does_not_count_as_progress_after_it(cluster):
    """The leader's side of the case above. Broker 1, caught up (in the ISR) in a first move
    that cannot complete, waits in a fetch at the log end when the move is cancelled and its
    log deleted; then a move to broker 1 alone starts and broker 1 is stopped. If the leader
    took that waiting fetch's offset as broker 1's progress when it ends, broker 1 would join
    the ISR with an empty log and take the partition over without its records."""
    topic = "stale-progress"
    admin = cluster.brokers[0]
    one_replica_with_records(cluster, topic)
    reassign = partial(reassign_partition_0, admin, topic)

    # Broker 2 is held back (stopped, then by a throttle that lets nearly nothing through)
    # while broker 1 catches up, so the move stays in progress.
    reassign([0, 1, 2])
    cluster.sigstop(2)
    wait_until(lambda: 1 in cluster.partitions(topic)[0]["isr"], 30, what="broker 1 in the ISR")
    admin.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 1})
    cluster.sigcont(2)
    # Broker 1 is in a 20 s fetch at offset 2000 by now. Cancel, then move to broker 1 alone.
    reassign(None)
    wait_log_dir_gone(cluster.brokers[1], topic, 0)
    admin.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 0})
    reassign([1])
    wait_until(lambda: cluster.brokers[1].http_json("GET", f"/api/v1/partitions?topic={topic}")["partitions"][0]
               ["replicas"] == [1, 0], 10, what="broker 1 sees the new move")  # fmt: skip
    cluster.sigstop(1)
    # The waiting fetch ends within 20 s; give the leader time to act on it.
    time.sleep(22)
    (p,) = cluster.partitions(topic)
    assert p["isr"] == [0] and p["leader"] == 0, f"broker 1 joined the ISR without fetching: {p}"
    cluster.sigcont(1)
    wait_until(lambda: cluster.partitions(topic)[0]["replicas"] == [1], 60, what="the move to broker 1")
    got = consume_all(cluster.bootstrap, topic, 0, 2_000)
    assert [o for o, _ in got] == list(range(2_000))


# Followers fetch at most 16 KiB per partition here: a throttled fetch is served whole while
# the budget is positive, so with the default 1 MiB the first one could copy the whole log and
# the move finish before the kill.
@pytest.mark.cluster_args(extra_args=("--replica-fetch-max-bytes", "16384"))
def test_a_move_off_the_leader_completes_when_the_leader_is_killed_during_it(cluster):
    """Partition 0 moves from [0, 1] to [2, 1] under an idempotent acks=all stream, slowed by
    the throttle so that broker 0 still leads while broker 2 catches up; broker 0 is then
    SIGKILLed. Leadership goes to broker 1 (in the ISR), broker 2 copies from it, the move
    completes without broker 0, and every acknowledged message is there exactly once."""
    topic = "leader-killed"
    create_assigned(cluster, topic, [[0, 1]], {"min.insync.replicas": "1"})
    admin = cluster.brokers[2]
    prod = NumberedProducer(cluster.bootstrap, topic, 1)
    prod.start()
    wait_until(lambda: prod.total_acked() > 5000, 30, what="first acknowledgements")
    # At most 10 kB saved up plus 10 kB/s: far less than the log (about 80 kB) holds by now.
    admin.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 10_000})
    reassign_partition_0(admin, topic, [2, 1])
    time.sleep(0.3)
    p = cluster.partitions(topic)[0]
    assert p["leader"] == 0 and p["adding"] == [2], f"the move should still be running: {p}"
    cluster.brokers[0].kill()
    admin.http_json("PUT", "/api/v1/replication/throttle", {"bytes_per_sec": 0})
    wait_no_reassignments(cluster, 90)
    p = cluster.partitions(topic)[0]
    assert p["replicas"] == [2, 1] and sorted(p["isr"]) == [1, 2] and p["leader"] in (1, 2), p
    before = prod.total_acked()
    wait_until(lambda: prod.total_acked() > before + 300, 60, what="acknowledgements after the move")
    prod.finish()
    check_exactly_once_in_order(cluster.bootstrap, prod)
    wait_until(lambda: segment_bytes(cluster.brokers[2], topic, 0) == segment_bytes(cluster.brokers[1], topic, 0),
               30, what="identical replicas on brokers 1 and 2")  # fmt: skip
