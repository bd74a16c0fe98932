"""Fixtures of the replication tests: a fresh three-broker cluster per test (the tests kill
and stop brokers). On a failed test the tail of every broker's log is added to the report;
WEIR_TEST_KEEP=1 keeps the temp dirs."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from cluster import Cluster
from weir_harness import ALL_BROKERS


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster_args(**kw): arguments of Cluster() for this test")


@pytest.fixture()
def cluster(request):
    root = Path(tempfile.mkdtemp(prefix="weir-e2e-repl-"))
    marker = request.node.get_closest_marker("cluster_args")
    c = Cluster(root, **(marker.kwargs if marker else {}))
    try:
        c.start()
        yield c
    finally:
        for b in c.brokers:
            if b.proc is not None and b.proc.poll() is None:
                try:
                    os.kill(b.proc.pid, signal.SIGCONT)  # in case a test left it stopped
                except OSError:
                    pass
        c.stop_all()
        if os.environ.get("WEIR_TEST_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"\nkept {root}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in ALL_BROKERS:
            state = "running" if b.running() else f"exited {b.proc.returncode if b.proc else '-'}"
            rep.sections.append((f"weir-broker {b.node_id} {b.bootstrap} ({state}) log", b.tail(60)))
