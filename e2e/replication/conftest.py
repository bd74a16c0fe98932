"""Fixtures of the replication tests: a fresh three-broker cluster per test (the tests kill
and stop brokers). On a failed test the tail of every broker's log is added to the report;
WEIR_TEST_KEEP=1 keeps the temp dirs."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

from cluster import Cluster
from weir_harness import attach_broker_logs, remove_test_dir


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
        remove_test_dir(root)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    attach_broker_logs(outcome.get_result())
