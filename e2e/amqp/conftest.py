"""Fixtures of the AMQP client tests.

By default every test session starts a real weir-broker (e2e/clients/weir_harness.py) on
127.0.0.1 with its own ports and data dir. With AMQP_TARGET=HOST:PORT the same tests run
against another broker instead (RabbitMQ: see run_against_rabbitmq.sh), which proves the
expectations are RabbitMQ's and not only ours.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients"))

from weir_harness import Broker, attach_broker_logs, stop_and_remove, unique_name  # noqa: E402


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
        stop_and_remove(b, root)


@pytest.fixture()
def own_weir():
    """A Weir broker of this test's own (for restart / SIGKILL tests). Skipped against others."""
    if os.environ.get("AMQP_TARGET"):
        pytest.skip("needs a Weir broker it can restart (AMQP_TARGET points elsewhere)")
    b, root = _start_weir("weir-e2e-amqp-own-")
    try:
        yield b
    finally:
        stop_and_remove(b, root)


@pytest.fixture()
def name(request):
    """A queue/exchange name unique to this test run."""
    return unique_name(request.node.name, 60)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    attach_broker_logs(outcome.get_result())
