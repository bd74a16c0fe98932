"""Fixtures of the client compatibility tests: a real weir-broker on 127.0.0.1.

- `broker`: one broker for the whole session (temp data dir, own ports, log in a file);
  tests use their own topic names, so they do not depend on each other.
- `fresh_broker`: a broker of its own for a test that kills or restarts it.
- On a failed test the tail of every broker's log is added to the report.
- WEIR_BROKER_BIN picks the binary; WEIR_TEST_KEEP=1 keeps the temp dirs.
"""

from __future__ import annotations

import pytest

from weir_harness import attach_broker_logs, running_broker, unique_name


@pytest.fixture(scope="session")
def broker():
    with running_broker("weir-e2e-clients-") as b:
        yield b


@pytest.fixture()
def fresh_broker():
    with running_broker("weir-e2e-clients-own-") as b:
        yield b


@pytest.fixture()
def topic_name(request):
    """A topic name unique to this test (valid Kafka characters only)."""
    return unique_name(request.node.name, 80)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    attach_broker_logs(outcome.get_result())
