"""kcat (librdkafka as packaged by Debian) against a real weir-broker: metadata, produce and
consume with every codec, offsets, offsets by timestamp, an oversize message, and garbage
frames on raw sockets next to a working client."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from weir_harness import REPO, create_topic_ready, kcat, recv_exact

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")

LINES = 100_000
NL = b"\n"


@pytest.fixture(scope="module")
def lines_file(tmp_path_factory):
    """100,000 distinct lines of varying length (so compression has something to do)."""
    path = tmp_path_factory.mktemp("kcat") / "lines.txt"
    rnd = random.Random(7)
    with open(path, "w") as f:
        for i in range(LINES):
            f.write(f"line-{i:06d} {'x' * rnd.randrange(0, 40)} {rnd.getrandbits(64):016x}\n")
    return path


def end_offset(broker, topic: str, partition: int = 0) -> int:
    out = kcat("-Q", "-t", f"{topic}:{partition}:-1", bootstrap=broker.bootstrap, timeout=30).stdout.decode()
    # "topic [0] offset N"
    return int(out.strip().rsplit(" ", 1)[1])


def consume_all(broker, topic: str, *extra: str, timeout: float = 90) -> bytes:
    return kcat("-C", "-t", topic, "-e", "-q", *extra, bootstrap=broker.bootstrap, timeout=timeout).stdout


def test_metadata_lists_broker_and_topics(broker, topic_name):
    kcat("-P", "-t", topic_name, bootstrap=broker.bootstrap, input=b"hello\n")
    out = kcat("-L", bootstrap=broker.bootstrap, timeout=30).stdout.decode()
    assert f"broker 0 at 127.0.0.1:{broker.kafka_port}" in out, out
    assert f'topic "{topic_name}" with 1 partitions' in out, out

    md = json.loads(kcat("-L", "-J", "-t", topic_name, bootstrap=broker.bootstrap, timeout=30).stdout)
    assert [(b["id"], b["name"]) for b in md["brokers"]] == [(0, f"127.0.0.1:{broker.kafka_port}")]
    (t,) = md["topics"]
    assert t["topic"] == topic_name
    assert [(p["partition"], p["leader"], p["replicas"], p["isrs"]) for p in t["partitions"]] == [
        (0, 0, [{"id": 0}], [{"id": 0}])
    ]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_100k_lines(broker, topic_name, lines_file, codec):
    create_topic_ready(broker.bootstrap, topic_name)
    kcat("-P", "-t", topic_name, "-z", codec, "-l", str(lines_file), bootstrap=broker.bootstrap, timeout=90)
    expected = lines_file.read_bytes()
    got = consume_all(broker, topic_name, "-o", "beginning")
    assert len(got) == len(expected) and hashlib.sha256(got).digest() == hashlib.sha256(expected).digest(), (
        f"{codec}: consumed {got.count(NL)} lines / {len(got)} bytes, produced {LINES} / {len(expected)}"
    )
    assert end_offset(broker, topic_name) == LINES

    # From an absolute offset: the last 10 lines, and offsets as the broker numbered them.
    tail = consume_all(broker, topic_name, "-o", str(LINES - 10))
    assert tail.splitlines() == expected.splitlines()[-10:]
    numbered = consume_all(broker, topic_name, "-o", str(LINES - 3), "-f", "%o %s\n")
    assert numbered.splitlines() == [
        b"%d %s" % (LINES - 3 + i, line) for i, line in enumerate(expected.splitlines()[-3:])
    ]
    # Relative to the end.
    assert consume_all(broker, topic_name, "-o", "-5").splitlines() == expected.splitlines()[-5:]


def test_keys_headers_and_null_values(broker, topic_name):
    kcat(
        "-P", "-t", topic_name, "-K", ":", "-Z", "-H", "h1=a", "-H", "h2=b=c",
        bootstrap=broker.bootstrap, input=b"k1:v1\nk2:\nk3:v3\n:no-key\n",
    )  # fmt: skip
    out = consume_all(broker, topic_name, "-o", "beginning", "-Z", "-f", "%o|%k|%s|%h|%S\n")
    assert out.decode().splitlines() == [
        "0|k1|v1|h1=a,h2=b=c|2",
        "1|k2|NULL|h1=a,h2=b=c|-1",  # -Z: an empty value is sent as null (a tombstone)
        "2|k3|v3|h1=a,h2=b=c|2",
        "3|NULL|no-key|h1=a,h2=b=c|6",
    ]


def test_acks_zero_produce(broker, topic_name):
    """acks=0: the broker sends no Produce response at all; the data still lands."""
    lines = b"".join(b"fire-and-forget-%d\n" % i for i in range(1000))
    create_topic_ready(broker.bootstrap, topic_name)  # acks=0 to a log not created yet is lost
    kcat("-P", "-t", topic_name, "-X", "acks=0", bootstrap=broker.bootstrap, input=lines)

    def landed():
        return end_offset(broker, topic_name) == 1000

    deadline = time.monotonic() + 10
    while not landed() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert consume_all(broker, topic_name, "-o", "beginning") == lines


def test_consume_with_tiny_fetch_limits(broker, topic_name, lines_file):
    """Fetch limits far below the batch size still make progress (KIP-74: the first batch
    is returned whole), and nothing is skipped or repeated."""
    create_topic_ready(broker.bootstrap, topic_name)
    kcat("-P", "-t", topic_name, "-X", "batch.size=200000", "-l", str(lines_file), bootstrap=broker.bootstrap)
    got = consume_all(
        broker, topic_name, "-o", "beginning",
        "-X", "fetch.max.bytes=1000", "-X", "message.max.bytes=1000", "-X", "max.partition.fetch.bytes=500",
    )  # fmt: skip
    assert got == lines_file.read_bytes()


def test_consume_past_the_end(broker, topic_name):
    kcat("-P", "-t", topic_name, bootstrap=broker.bootstrap, input=b"a\nb\nc\n")
    # OFFSET_OUT_OF_RANGE, then auto.offset.reset decides where to go.
    assert consume_all(broker, topic_name, "-o", "10", "-X", "auto.offset.reset=earliest") == b"a\nb\nc\n"
    assert consume_all(broker, topic_name, "-o", "10", "-X", "auto.offset.reset=latest") == b""
    assert consume_all(broker, topic_name, "-o", "3") == b""  # exactly at the end: nothing, no error


def test_offset_for_timestamp(broker, topic_name):
    first = b"".join(b"early-%d\n" % i for i in range(1000))
    second = b"".join(b"late-%d\n" % i for i in range(1000))
    kcat("-P", "-t", topic_name, bootstrap=broker.bootstrap, input=first)
    time.sleep(1.0)
    middle = int(time.time() * 1000)
    time.sleep(0.3)
    kcat("-P", "-t", topic_name, bootstrap=broker.bootstrap, input=second)

    def query(ts):
        out = kcat("-Q", "-t", f"{topic_name}:0:{ts}", bootstrap=broker.bootstrap, timeout=30).stdout.decode()
        return int(out.strip().rsplit(" ", 1)[1])

    assert query(middle) == 1000
    assert query(0) == 0
    assert query(-2) == 0  # earliest
    assert query(-1) == 2000  # latest
    assert query(middle + 3_600_000) == -1  # nothing that recent

    # The record at the answer really is the first one at or after the timestamp.
    out = consume_all(broker, topic_name, "-o", "999", "-c", "2", "-f", "%o %T %s\n").decode().splitlines()
    (o1, t1, v1), (o2, t2, v2) = (line.split(" ") for line in out)
    assert (o1, v1, o2, v2) == ("999", "early-999", "1000", "late-0")
    assert int(t1) < middle <= int(t2)

    # Consuming from a timestamp starts at the same place.
    from_ts = consume_all(broker, topic_name, "-o", f"s@{middle}")
    assert from_ts == second


def test_oversize_message_refused_and_broker_keeps_working(broker, topic_name, tmp_path):
    kcat("-P", "-t", topic_name, bootstrap=broker.bootstrap, input=b"before\n")
    big = tmp_path / "big.bin"
    # 2 MB of incompressible text, one message (no delimiter splitting: the file is one message).
    big.write_bytes(random.Random(1).randbytes(1_500_000).hex().encode()[:2_000_000])
    proc = kcat(
        "-P", "-t", topic_name, "-X", "message.max.bytes=10000000", str(big),
        bootstrap=broker.bootstrap, timeout=60, check=False,
    )  # fmt: skip
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, f"kcat accepted a 2 MB message: {err}"
    assert "Broker: Message size too large" in err, err

    assert broker.running()
    kcat("-P", "-t", topic_name, bootstrap=broker.bootstrap, input=b"after\n")
    assert consume_all(broker, topic_name, "-o", "beginning") == b"before\nafter\n"
    assert end_offset(broker, topic_name) == 2
    other = topic_name + "-other"
    kcat("-P", "-t", other, bootstrap=broker.bootstrap, input=b"a\nb\n")
    assert consume_all(broker, other, "-o", "beginning") == b"a\nb\n"


def _garbage_frames() -> dict[str, bytes]:
    rnd = random.Random(42)
    frames = {
        # A plausible size followed by random bytes (fixed seed: an unknown API key).
        "random-bytes": struct.pack(">i", 64) + rnd.randbytes(64),
        "random-bytes-no-size": rnd.randbytes(512),
        "oversize-length-prefix": struct.pack(">i", 0x7FFF_FFFF) + b"abc",
        "200MB-length-prefix": struct.pack(">i", 200 * 1024 * 1024) + b"\0" * 16,
        "negative-length-prefix": struct.pack(">i", -5),
        "unknown-api-key": struct.pack(">i", 12) + struct.pack(">hhih", 9999, 0, 1, -1) + b"\0\0",
        "unadvertised-api-key": struct.pack(">i", 10) + struct.pack(">hhih", 10, 0, 1, -1),  # FindCoordinator
        "unsupported-version": struct.pack(">i", 14) + struct.pack(">hhih", 3, 99, 1, -1) + b"\0\0\0\0",
        "header-too-short": struct.pack(">i", 2) + b"\0\0",
        "truncated-body": struct.pack(">i", 12) + struct.pack(">hhih", 3, 1, 1, -1) + b"\0\0",
        "produce-garbage-records": struct.pack(">i", 40)
        + struct.pack(">hhih", 0, 3, 1, -1)
        + struct.pack(">hhi", -1, 1, 5000)
        + rnd.randbytes(28),
    }
    return frames


def _closed_by_broker(sock: socket.socket, timeout: float = 10.0) -> str:
    """'closed' if the broker closes the connection within timeout, else what happened."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return "closed"
    except socket.timeout:
        return "still open"
    return "closed" if data == b"" else f"answered {data[:32].hex()}"


def test_garbage_frames_close_only_their_connection(broker, topic_name, lines_file):
    """Garbage on raw sockets closes those connections; a kcat producer and consumer that are
    mid-stream at the same time are unaffected, and data already written does not change."""
    bs = broker.bootstrap
    settled = topic_name + "-settled"
    create_topic_ready(bs, settled)
    kcat("-P", "-t", settled, "-z", "lz4", "-l", str(lines_file), bootstrap=bs, timeout=90)
    settled_before = consume_all(broker, settled, "-o", "beginning")
    assert settled_before == lines_file.read_bytes()

    live = topic_name + "-live"
    payload = lines_file.read_bytes().splitlines(keepends=True)
    half = len(payload) // 2
    create_topic_ready(bs, live)  # exists before the consumer starts
    producer = subprocess.Popen(
        ["kcat", "-b", bs, "-P", "-t", live, "-X", "linger.ms=5"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    consumer = subprocess.Popen(
        ["kcat", "-b", bs, "-C", "-t", live, "-o", "beginning", "-c", str(len(payload)), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    consumer_out: list[tuple[bytes, bytes]] = []  # (stdout, stderr)
    reader = threading.Thread(target=lambda: consumer_out.append(consumer.communicate(timeout=120)), daemon=True)
    reader.start()
    try:
        producer.stdin.write(b"".join(payload[:half]))
        producer.stdin.flush()
        time.sleep(0.5)

        # A well-formed connection opened before the garbage stays usable after it.
        bystander = socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10)
        results = {}
        for name, frame in _garbage_frames().items():
            s = socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10)
            try:
                s.sendall(frame)
                results[name] = _closed_by_broker(s)
            finally:
                s.close()
        # A frame cut off mid-way by the client: the broker just drops the connection.
        s = socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10)
        s.sendall(struct.pack(">i", 100) + b"\0\x03\0\x01")
        s.close()

        producer.stdin.write(b"".join(payload[half:]))
        producer.stdin.close()
        assert producer.wait(90) == 0, producer.stderr.read().decode(errors="replace")
        reader.join(120)
        assert not reader.is_alive(), "kcat consumer did not finish"
        assert consumer.returncode == 0, consumer_out[0][1].decode(errors="replace")

        bystander.sendall(struct.pack(">i", 10) + struct.pack(">hhih", 18, 0, 77, -1))
        bystander.settimeout(10)
        size = struct.unpack(">i", recv_exact(bystander, 4))[0]
        answer = recv_exact(bystander, size)
        bystander.close()
    finally:
        for p in (producer, consumer):
            if p.poll() is None:
                p.kill()
                p.wait(10)

    assert results == {name: "closed" for name in results}, results
    assert struct.unpack_from(">ih", answer) == (77, 0), "ApiVersions on the bystander connection failed"
    assert consumer_out and consumer_out[0][0] == b"".join(payload), (
        f"concurrent consumer got {consumer_out[0][0].count(NL) if consumer_out else 0} lines"
    )
    assert consume_all(broker, live, "-o", "beginning") == b"".join(payload)
    assert consume_all(broker, settled, "-o", "beginning") == settled_before
    assert end_offset(broker, settled) == LINES
    assert broker.running()
    log = broker.log_text()
    for needle in ("unknown API key 9999", "larger than socket.request.max.bytes", "negative frame size"):
        assert needle in log, f"broker log has no '{needle}'"
    assert "panicked" not in log


def test_api_versions_unsupported_version_answers_v0(broker):
    """KIP-511: an ApiVersions request of a version the broker does not know is answered with
    UNSUPPORTED_VERSION (35) in a v0 body listing the ranges, not a closed connection."""
    frame = struct.pack(">hhih", 18, 99, 5, -1) + b"\0"  # header v2: empty tagged fields
    with socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        s.settimeout(10)
        body = recv_exact(s, struct.unpack(">i", recv_exact(s, 4))[0])
    corr, error_code, count = struct.unpack_from(">ihi", body)
    assert (corr, error_code) == (5, 35)
    keys = {struct.unpack_from(">hhh", body, 10 + 6 * i)[0] for i in range(count)}
    assert 18 in keys and 3 in keys


def _advertised_api_versions(broker) -> dict[int, tuple[int, int]]:
    frame = struct.pack(">hhih", 18, 0, 11, -1)  # ApiVersions v0, header v1
    with socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        s.settimeout(10)
        body = recv_exact(s, struct.unpack(">i", recv_exact(s, 4))[0])
    corr, error_code, count = struct.unpack_from(">ihi", body)
    assert (corr, error_code) == (11, 0)
    out = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", body, 10 + 6 * i)
        out[key] = (lo, hi)
    return out


def _documented_api_versions() -> dict[int, tuple[str, int, int]]:
    """The "APIs served" table of docs/compatibility.md: key -> (name, lowest, highest)."""
    doc = (REPO / "docs" / "compatibility.md").read_text()
    section = doc.split("## APIs served", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            lo, hi = re.split(r"\s*[–-]\s*", cells[2])
            out[int(cells[0])] = (cells[1], int(lo), int(hi))
    return out


def test_api_versions_match_this_document(broker):
    """ApiVersions advertises exactly the APIs and ranges of docs/compatibility.md."""
    advertised = _advertised_api_versions(broker)
    documented = _documented_api_versions()
    assert documented, "no table found under '## APIs served' in docs/compatibility.md"
    assert advertised == {k: (lo, hi) for k, (_, lo, hi) in documented.items()}, (
        "ApiVersions and docs/compatibility.md disagree: update the table\n"
        f"advertised only (key: versions): { {k: advertised[k] for k in sorted(set(advertised) - set(documented))} }\n"
        f"documented only: {sorted(set(documented) - set(advertised))}\n"
        f"different ranges: "
        f"{ {k: (advertised[k], documented[k][1:]) for k in set(advertised) & set(documented) if advertised[k] != documented[k][1:]} }"
    )
