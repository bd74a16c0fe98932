"""Fixtures of the AMQP client tests.

By default every test session starts a real weir-broker (e2e/clients/weir_harness.py) on
127.0.0.1 with its own ports and data dir. With AMQP_TARGET=HOST:PORT the same tests run
against another broker instead (RabbitMQ: see run_against_rabbitmq.sh), which proves the
expectations are RabbitMQ's and not only ours.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients"))

from weir_harness import ALL_BROKERS, Broker  # noqa: E402


class Target:
    """Where the AMQP server under test listens, and whether it is Weir (which we can restart)."""

    def __init__(self, host: str, port: int, broker: Broker | None):
        self.host, self.port, self.broker = host, port, broker

    @property
    def is_weir(self) -> bool:
        return self.broker is not None


def _start_weir(prefix: str):
    root = Path(tempfile.mkdtemp(prefix=prefix))
    b = Broker(root / "broker-0")
    b.start()
    return b, root


def _stop_weir(b: Broker, root: Path) -> None:
    try:
        if b.running():
            code = b.stop()
            if code != 0:
                print(f"\nweir-broker exited {code} at teardown\n{b.tail()}")
    finally:
        if b.running():
            b.kill()
        if os.environ.get("WEIR_TEST_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def target():
    spec = os.environ.get("AMQP_TARGET")
    if spec:
        host, port = spec.rsplit(":", 1)
        yield Target(host, int(port), None)
        return
    b, root = _start_weir("weir-e2e-amqp-")
    try:
        yield Target(b.host, b.amqp_port, b)
    finally:
        _stop_weir(b, root)


@pytest.fixture()
def own_weir():
    """A Weir broker of this test's own (for restart / SIGKILL tests). Skipped against others."""
    if os.environ.get("AMQP_TARGET"):
        pytest.skip("needs a Weir broker it can restart (AMQP_TARGET points elsewhere)")
    b, root = _start_weir("weir-e2e-amqp-own-")
    try:
        yield b
    finally:
        _stop_weir(b, root)


@pytest.fixture()
def name(request):
    """A queue/exchange name unique to this test run."""
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in ALL_BROKERS:
            state = "running" if b.running() else f"exited {b.proc.returncode if b.proc else '-'}"
            rep.sections.append((f"weir-broker ({state}) log", b.tail(60)))
