"""A full disk under the data directory (a tmpfs of a few MiB, mounted for the test).

- Producers lose nothing they were told was written.
- Once a write to the logs fails, the broker stops without a clean shutdown (non-zero exit),
  as Kafka halts when its last log directory fails, instead of running on with logs whose
  files no longer match what it holds in memory.
- With room again it starts, recovers, and serves every acknowledged message exactly once,
  in order.
- Once the metadata store (RocksDB under the data directory) cannot write, the broker also
  shuts down with a non-zero exit, as Kafka does when its metadata log directory fails,
  instead of running on with a dead quorum member and healthy-looking probes.

Mounting needs root and mount(8); elsewhere the test is skipped and says so.
"""

from __future__ import annotations

import concurrent.futures
import subprocess

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from weir_harness import Broker, fill_file_system, kcat, small_file_system, stop_and_remove, wait_until

TOPIC = "filled"
PAYLOAD = b"x" * 1000


def fill(bootstrap: str) -> tuple[list[int], dict[str, int]]:
    """Produce numbered messages (the number is the key) until deliveries fail; the numbers
    acknowledged, and the failures by error name."""
    acked: list[int] = []
    failed: dict[str, int] = {}

    def delivered(err, msg):
        if err is None:
            acked.append(int(msg.key()))
        else:
            failed[err.name()] = failed.get(err.name(), 0) + 1

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 8000})
    n = 0
    # 120 MB at most: far more than the file system holds.
    while not failed and n < 120_000:
        for _ in range(2000):
            p.produce(TOPIC, PAYLOAD, key=str(n).encode(), on_delivery=delivered)
            n += 1
            p.poll(0)
        assert p.flush(60) == 0, "deliveries still pending after 60 s"
    return acked, failed


def read_back(b: Broker) -> list[int]:
    """The keys of the topic from its start; checks the offsets are contiguous from 0."""
    out = kcat("-C", "-t", TOPIC, "-o", "beginning", "-e", "-q", "-f", "%o %k\\n", bootstrap=b.bootstrap).stdout
    rows = [line.split() for line in out.decode().splitlines() if line.strip()]
    assert [int(o) for o, _ in rows] == list(range(len(rows))), "offsets are not contiguous from 0"
    return [int(k) for _, k in rows]


def test_a_full_disk_stops_the_broker_and_loses_nothing_acknowledged():
    # Smaller than RocksDB's WAL preallocation (1.1 times its 64 MiB write buffer), which then
    # does not happen: the metadata store needs new space for its writes, as the logs do.
    root, fs = small_file_system("weir-e2e-diskfull-", 48)
    b = Broker(root / "broker-0")
    b.data_dir = fs / "data"  # the broker's own log stays outside, on the real disk
    try:
        b.start()
        # Not through a consumer group (create_topic_ready uses one): that would create
        # __consumer_offsets, a metadata write that could then race with the filling.
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 1)], operation_timeout=10)[TOPIC].result(20)

        acked, failed = fill(b.bootstrap)
        print(f"acknowledged {len(acked)}, failed {failed}")
        assert len(acked) > 20_000, "the file system filled with something else than the produced messages"
        assert set(failed) <= {"_MSG_TIMED_OUT", "KAFKA_STORAGE_ERROR"}, failed
        wait_until(lambda: not b.running(), 20, what="the broker's exit after a log write failed")
        assert b.proc.returncode not in (0, None), f"exit {b.proc.returncode}\n{b.tail()}"
        log = b.log_text()
        assert "the data directory failed" in log, b.tail()
        assert "clean shutdown complete" not in log, b.tail()
        assert "the metadata store failed" not in log, b.tail()

        # Some room again (still less than RocksDB would preallocate): it recovers the log, and
        # everything acknowledged is there, once, in order.
        r = subprocess.run(["mount", "-o", "remount,size=64m", str(fs)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        b.start()
        this_start = b.log_since_last_start()
        assert "clean_shutdown=false" in this_start, "the restart did not recover the logs"
        keys = read_back(b)
        assert keys == sorted(set(keys)), "a message is duplicated or out of order"
        missing = set(acked) - set(keys)
        assert not missing, f"{len(missing)} acknowledged messages are gone, e.g. {sorted(missing)[:5]}"

        # Full again, by another file: metadata changes now fail in the metadata store, and the
        # broker must not run on without it. Config changes write nothing under the logs (a new
        # topic would: its directory, which fails first and is the case above).
        fill_file_system(fs / "filler")
        for i in range(200):
            if not b.running():
                break
            entry = ConfigEntry("retention.ms", str(86_400_000 + i), incremental_operation=AlterConfigOpType.SET)
            futures = admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, TOPIC,
                                                                      incremental_configs=[entry])])  # fmt: skip
            try:
                for f in futures.values():
                    f.result(10)
            except (KafkaException, concurrent.futures.TimeoutError):
                pass
        wait_until(lambda: not b.running(), 20, what="the broker's exit after its metadata store failed")
        assert b.proc.returncode not in (0, None), f"exit {b.proc.returncode}\n{b.tail()}"
        this_start = b.log_since_last_start()
        assert "the metadata store failed" in this_start, b.tail()
        # It stopped for the metadata store, not for the data directory. Closing the logs
        # afterwards may still fail on the full disk (a high-watermark checkpoint), which is
        # logged, but the exit names the first cause.
        assert "the data directory failed; stopping" not in this_start, b.tail()
        assert "weir-broker failed: the metadata store failed" in this_start, b.tail()

        # And once more with room: nothing acknowledged is lost.
        (fs / "filler").unlink()
        b.start()
        assert read_back(b) == keys
    finally:
        try:
            if b.running():
                b.stop()
        finally:
            subprocess.run(["umount", str(fs)], capture_output=True)
            stop_and_remove(b, root)
