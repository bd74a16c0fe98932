"""Fixtures of the client compatibility tests: a real weir-broker on 127.0.0.1.

- `broker`: one broker for the whole session (temp data dir, own ports, log in a file);
  tests use their own topic names, so they do not depend on each other.
- `fresh_broker`: a broker of its own for a test that kills or restarts it.
- On a failed test the tail of every broker's log is added to the report.
- WEIR_BROKER_BIN picks the binary; WEIR_TEST_KEEP=1 keeps the temp dirs.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest

from weir_harness import Broker, attach_broker_logs, stop_and_remove, unique_name


def _tmp_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextlib.contextmanager
def _running_broker(prefix: str):
    root = _tmp_root(prefix)
    b = Broker(root / "broker-0")
    try:
        b.start()
        yield b
    finally:
        stop_and_remove(b, root)


@pytest.fixture(scope="session")
def broker():
    with _running_broker("weir-e2e-clients-") as b:
        yield b


@pytest.fixture()
def fresh_broker():
    with _running_broker("weir-e2e-clients-own-") as b:
        yield b


@pytest.fixture()
def topic_name(request):
    """A topic name unique to this test (valid Kafka characters only)."""
    return unique_name(request.node.name, 80)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    attach_broker_logs(outcome.get_result())
