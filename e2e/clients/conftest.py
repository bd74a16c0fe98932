"""Fixtures of the client compatibility tests: a real weir-broker on 127.0.0.1.

- `broker`: one broker for the whole session (temp data dir, own ports, log in a file);
  tests use their own topic names, so they do not depend on each other.
- `fresh_broker`: a broker of its own for a test that kills or restarts it.
- On a failed test the tail of every broker's log is added to the report.
- WEIR_BROKER_BIN picks the binary; WEIR_TEST_KEEP=1 keeps the temp dirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from weir_harness import ALL_BROKERS, Broker


def _tmp_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def _cleanup(broker: Broker, root: Path) -> None:
    try:
        if broker.running():
            code = broker.stop()
            if code != 0:
                print(f"\nweir-broker exited {code} at teardown\n{broker.tail()}")
    finally:
        if broker.running():
            broker.kill()
        if os.environ.get("WEIR_TEST_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"\nkept {root}")


@contextlib.contextmanager
def _running_broker(prefix: str):
    root = _tmp_root(prefix)
    b = Broker(root / "broker-0")
    try:
        b.start()
        yield b
    finally:
        _cleanup(b, root)


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
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in request.node.name)[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in ALL_BROKERS:
            state = "running" if b.running() else f"exited {b.proc.returncode if b.proc else '-'}"
            rep.sections.append((f"weir-broker {b.bootstrap} ({state}) log", b.tail(60)))
