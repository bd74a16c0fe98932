"""A cluster of real weir-broker processes on 127.0.0.1, 127.0.0.2, 127.0.0.3 for the
replication tests: every broker is a raft voter, with its own ports, data dir and log file.
Built on e2e/clients/weir_harness.py (the same binary lookup, readiness check and log
handling)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients"))

from weir_harness import Broker, all_threads_stopped, free_ports, wait_until  # noqa: E402

IPS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


class ClusterBroker(Broker):
    def __init__(self, workdir: Path, node_id: int, host: str, extra_args: list[str]):
        super().__init__(workdir, node_id=node_id)
        self.host = host
        self.kafka_port, self.http_port, self.raft_port, self.amqp_port = free_ports(4, host)
        self.voters = ""
        self.extra_args = extra_args
        self.stopped = False

    def args(self) -> list[str]:
        return super().args() + ["--voters", self.voters] + self.extra_args

    def http_json(self, method: str, path: str, body: dict | None = None, timeout: float = 20.0):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.host}:{self.http_port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return json.loads(text) if text else None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/metrics", timeout=5) as r:
            return r.read().decode()


class Cluster:
    def __init__(self, root: Path, n: int = 3, session_timeout_ms: int = 3000, lag_time_max_ms: int = 3000,
                 extra_args: tuple[str, ...] = (), racks: tuple[str, ...] = ()):  # fmt: skip
        extra = [
            "--broker-session-timeout-ms", str(session_timeout_ms),
            "--replica-lag-time-max-ms", str(lag_time_max_ms),
            *extra_args,
        ]  # fmt: skip
        rack = lambda i: ["--rack", racks[i]] if i < len(racks) else []  # noqa: E731
        self.brokers = [ClusterBroker(root / f"broker-{i}", i, IPS[i], extra + rack(i)) for i in range(n)]
        voters = ",".join(f"{b.node_id}@{b.host}:{b.raft_port}" for b in self.brokers)
        for b in self.brokers:
            b.voters = voters

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def start(self) -> "Cluster":
        # Start all processes first, without Broker.start's readiness wait: the quorum forms only
        # once a majority is up, so a voter alone cannot be ready.
        for b in self.brokers:
            b.spawn()
        for b in self.brokers:
            b.wait_ready(90)
        return self

    def restart(self, i: int) -> None:
        b = self.brokers[i]
        b.spawn()
        b.wait_ready(90)

    def any_running(self) -> ClusterBroker:
        """A broker whose process runs and is not SIGSTOPped by the test."""
        return next(b for b in self.brokers if b.running() and not b.stopped)

    def partitions(self, topic: str) -> list[dict]:
        """Leader, ISR, replicas of every partition of `topic` from the admin API of a live broker."""
        view = self.any_running().http_json("GET", f"/api/v1/partitions?topic={topic}", timeout=5)
        return sorted(view["partitions"], key=lambda p: p["partition"])

    def sigstop(self, i: int) -> None:
        """SIGSTOP broker `i` and wait until every thread of it has stopped. The signal is
        asynchronous: on a busy VM a thread can run on for milliseconds after kill() returns,
        long enough for a follower to fetch one more batch (seen once in test_pipelining)."""
        self.brokers[i].stopped = True
        pid = self.brokers[i].proc.pid
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: all_threads_stopped(pid), 5, interval=0.001, what=f"broker {i} stopped")

    def sigcont(self, i: int) -> None:
        os.kill(self.brokers[i].proc.pid, signal.SIGCONT)
        self.brokers[i].stopped = False

    def wait_isr(self, topic: str, partition: int, size: int, timeout: float = 60.0) -> dict:
        """The partition once every live broker's metadata shows an ISR of `size`. Asking one
        broker is not enough: a broker just resumed from SIGSTOP still serves its old image."""

        def check():
            views = []
            for b in self.brokers:
                if not b.running() or b.stopped:
                    continue
                try:
                    view = b.http_json("GET", f"/api/v1/partitions?topic={topic}", timeout=5)
                except OSError:
                    return None
                views.append(next((p for p in view["partitions"] if p["partition"] == partition), None))
            ok = views and all(p is not None and len(p["isr"]) == size and p["leader"] is not None for p in views)
            return views[0] if ok else None

        return wait_until(check, timeout, interval=0.2, what=f"{topic}/{partition} ISR of size {size}")

    def stop_all(self) -> None:
        for b in self.brokers:
            if b.running():
                b.kill()
