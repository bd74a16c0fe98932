"""Start and stop a real weir-broker process for the client tests, plus small helpers.

Everything here is bounded in time: every wait has a deadline and fails with the last state
it saw, every subprocess has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every Broker made in this process, so a failed test can show their log tails.
ALL_BROKERS: list["Broker"] = []


def broker_binary() -> Path:
    """The weir-broker binary: $WEIR_BROKER_BIN, else the usual cargo target dirs."""
    env = os.environ.get("WEIR_BROKER_BIN")
    if env:
        return Path(env)
    target = os.environ.get("CARGO_TARGET_DIR", "/var/cache/weir-target")
    for candidate in (Path(target) / "debug" / "weir-broker", REPO / "target" / "debug" / "weir-broker"):
        if candidate.exists():
            return candidate
    return Path(target) / "debug" / "weir-broker"


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that were free on host a moment ago (all bound at once, then closed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def kafka_roundtrip(host: str, port: int, frame: bytes, timeout: float = 5.0) -> bytes:
    """Send one size-prefixed request frame on a fresh connection, return the response frame."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        return recv_exact(s, size)


def metadata_v1_frame(correlation_id: int, client_id: bytes = b"weir-e2e") -> bytes:
    """Metadata v1 request for all topics (null topic array), request header v1."""
    header = struct.pack(">hhih", 3, 1, correlation_id, len(client_id)) + client_id
    return header + struct.pack(">i", -1)


def metadata_brokers(host: str, port: int, timeout: float = 5.0) -> list[tuple[int, str, int]]:
    """(node_id, host, port) of every broker in a Metadata v1 answer."""
    resp = kafka_roundtrip(host, port, metadata_v1_frame(4242), timeout)
    corr, count = struct.unpack_from(">ii", resp, 0)
    if corr != 4242:
        raise AssertionError(f"metadata answer has correlation id {corr}, expected 4242")
    pos, out = 8, []
    for _ in range(count):
        node_id, hlen = struct.unpack_from(">ih", resp, pos)
        pos += 6
        bhost = resp[pos : pos + hlen].decode()
        pos += hlen
        (bport, rlen) = struct.unpack_from(">ih", resp, pos)
        pos += 6 + max(rlen, 0)
        out.append((node_id, bhost, bport))
    return out


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL the broker when the test process dies, so a pytest
    that is killed (or ended by pytest-timeout) leaves no broker behind (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# The broker's own default filter: openraft's INFO lines (every vote, every election timeout)
# would fill the log tails that a failed test reports. WEIR_TEST_RUST_LOG overrides it.
TEST_RUST_LOG = "info,openraft=warn"

class Broker:
    """One weir-broker process on 127.0.0.1 with its own data dir, ports and log file.

    A restart reuses the data dir and the ports and appends to the log after a
    `===== start #k =====` line.
    """

    def __init__(self, workdir: Path, node_id: int = 0, binary: Path | None = None):
        self.binary = Path(binary or broker_binary())
        if not self.binary.exists():
            raise FileNotFoundError(
                f"weir-broker binary not found at {self.binary}: build it with "
                "`cargo build -p weir-broker --bin weir-broker` or set WEIR_BROKER_BIN"
            )
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "broker.log"
        self.node_id = node_id
        self.host = "127.0.0.1"
        self.kafka_port, self.http_port, self.raft_port, self.amqp_port = free_ports(4, self.host)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        ALL_BROKERS.append(self)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    def args(self) -> list[str]:
        h = self.host
        return [
            str(self.binary),
            "--node-id", str(self.node_id),
            "--data-dir", str(self.data_dir),
            "--kafka-listen", f"{h}:{self.kafka_port}",
            "--http-listen", f"{h}:{self.http_port}",
            "--raft-listen", f"{h}:{self.raft_port}",
            "--amqp-listen", f"{h}:{self.amqp_port}",
        ]  # fmt: skip

    def start(self, ready_timeout: float = 60.0) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.spawn()
        self.wait_ready(ready_timeout)
        return self

    def spawn(self) -> None:
        """Start the process, its output appended to the log after a start marker, without
        waiting for it to be ready (a metadata voter alone cannot be)."""
        self.starts += 1
        env = dict(os.environ)
        env["RUST_LOG"] = os.environ.get("WEIR_TEST_RUST_LOG", TEST_RUST_LOG)
        with open(self.log_path, "ab") as log:
            log.write(f"===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.args(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self, timeout: float) -> None:
        """Until GET /readyz is 200 and a Metadata request lists this broker."""
        deadline = time.monotonic() + timeout
        last = "nothing tried yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weir-broker exited with {self.proc.returncode} before it was ready\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/readyz", timeout=2) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError as e:
                status = None
                last = f"/readyz: {e}"
            if status == 200:
                try:
                    brokers = metadata_brokers(self.host, self.kafka_port, timeout=3)
                    if any(b[0] == self.node_id and b[2] == self.kafka_port for b in brokers):
                        return
                    last = f"metadata lists brokers {brokers}"
                except (OSError, ConnectionError, struct.error) as e:
                    last = f"metadata: {e!r}"
            elif status is not None:
                last = f"/readyz answered {status}"
            time.sleep(0.1)
        raise TimeoutError(f"weir-broker not ready after {timeout}s (last: {last})\n{self.tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send sig and wait for the exit; returns the exit code (negative: killed by a signal)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise TimeoutError(f"weir-broker ignored signal {sig} for {timeout}s\n{self.tail()}")
        return self.proc.returncode

    def kill(self) -> int:
        return self.stop(signal.SIGKILL, timeout=10)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"(no log at {self.log_path}: {e})"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_since_last_start(self) -> str:
        """The log written by the latest start (after its `===== start #k =====` line)."""
        return self.log_text().rsplit("===== start #", 1)[-1]


def kcat(*args: str, bootstrap: str, timeout: float = 60.0, input: bytes | None = None, check: bool = True):
    """Run kcat against the broker; returns the CompletedProcess (stdout/stderr as bytes)."""
    cmd = ["kcat", "-b", bootstrap, *args]
    proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\nstderr: {proc.stderr.decode(errors='replace')[-3000:]}"
        )
    return proc


def all_threads_stopped(pid: int) -> bool:
    """Every thread of `pid` in state T (stopped), from /proc/PID/task/*/stat. SIGSTOP is
    asynchronous: a thread may run on (and send one more request) after the signal is sent."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            # The state follows the parenthesised command name, which may hold spaces.
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # a thread that exited meanwhile
        if state not in ("T", "t"):
            return False
    return True


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll predicate() until it returns a truthy value or timeout passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last: {last!r})")


def create_topic_ready(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None,
                       timeout: float = 20.0) -> None:
    """CreateTopics, then wait until every partition answers ListOffsets, i.e. the leader's
    log exists. Tests that are about something else start from a ready topic; producing
    right after creation is tested on its own (test_confluent_kafka.py::
    test_produce_right_after_create_topics_keeps_order)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=10).values()
    future.result(timeout)
    deadline = time.monotonic() + timeout
    for p in range(partitions):
        while True:
            # A new client per try: librdkafka does not refresh the metadata of a partition it
            # saw without a leader for a client that has not assigned it.
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "weir-e2e-ready"})
            try:
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=2, cached=False)
                break
            except KafkaException as e:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}/{p} not ready after {timeout}s: {e}") from e
                time.sleep(0.05)
            finally:
                consumer.close()


def group_consumer_config(bootstrap: str, group: str, client_id: str, **extra) -> dict:
    """librdkafka settings of a subscribing group member with manual commits and a short
    (6 s, the group minimum) session, so that membership tests do not wait long."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": client_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    conf.update(extra)
    return conf


def unique_name(test_name: str, max_base: int) -> str:
    """A name unique to this run, built from a test's name: characters valid for Kafka topics
    and AMQP names only, the base cut at max_base, plus a random suffix."""
    import uuid

    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in test_name)[:max_base]
    return f"{base}-{uuid.uuid4().hex[:8]}"


def attach_broker_logs(report) -> None:
    """On a failed test, add the tail of every broker's log made in this process to the report
    (the suites' pytest_runtest_makereport hooks call this)."""
    if not report.failed:
        return
    for b in ALL_BROKERS:
        if not b.log_path.exists():
            continue  # an earlier test's broker, whose temp dir is gone
        state = "running" if b.running() else f"exited {b.proc.returncode if b.proc else '-'}"
        report.sections.append((f"weir-broker {b.node_id} {b.bootstrap} ({state}) log", b.tail(150)))


def remove_test_dir(root: Path) -> None:
    """Delete a test's temp dir, or keep it (and say where) when WEIR_TEST_KEEP=1."""
    import shutil

    if os.environ.get("WEIR_TEST_KEEP") != "1":
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"\nkept {root}")


def stop_and_remove(broker: "Broker", root: Path) -> None:
    """Stop a test's broker (SIGTERM, then SIGKILL if needed; a non-zero exit is printed with
    its log tail) and remove its temp dir."""
    try:
        if broker.running():
            code = broker.stop()
            if code != 0:
                print(f"\nweir-broker exited {code} at teardown\n{broker.tail()}")
    finally:
        if broker.running():
            broker.kill()
        remove_test_dir(root)


@contextlib.contextmanager
def running_broker(prefix: str, broker_class: type[Broker] = Broker):
    """A started broker (of `broker_class`, for one with extra arguments) in a new temp dir
    named by `prefix`; stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    b = broker_class(root / "broker-0")
    try:
        b.start()
        yield b
    finally:
        stop_and_remove(b, root)


def small_file_system(prefix: str, size_mib: int) -> tuple[Path, Path]:
    """A new temp dir (`root`, returned first) holding `root/fs`, a tmpfs of `size_mib` MiB
    for a full-disk test. Where it cannot be mounted (needs root and mount(8)) the dir is
    removed and the test skipped, saying why. The caller unmounts it."""
    import pytest

    root = Path(tempfile.mkdtemp(prefix=prefix))
    fs = root / "fs"
    fs.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(fs)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        err = None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")
    except (OSError, subprocess.TimeoutExpired) as e:
        err = str(e)
    if err is not None:
        remove_test_dir(root)
        pytest.skip(f"cannot mount a tmpfs for a full-disk test (needs root and mount(8)): {err}")
    return root, fs


def fill_file_system(path: Path) -> None:
    """Write the file `path` until its file system has no byte left."""
    # Unbuffered: a buffered file would try its unwritten bytes again at close, and fail.
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 64 << 10, 4 << 10, 512):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
