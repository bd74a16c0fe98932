"""amqp-tools (librabbitmq's command line clients, Debian package amqp-tools) round trip."""

from __future__ import annotations

import shutil
import subprocess

import pytest

TOOLS = ("amqp-declare-queue", "amqp-publish", "amqp-consume", "amqp-get", "amqp-delete-queue")


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, timeout=timeout, check=False)


@pytest.fixture(autouse=True)
def _need_tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"amqp-tools not installed (missing {', '.join(missing)}); apt-get install amqp-tools")


def conn_args(target) -> list[str]:
    return ["-s", target.host, "--port", str(target.port)]


def test_declare_publish_consume_round_trip(target, name):
    c = conn_args(target)
    r = run("amqp-declare-queue", *c, "-q", name, "-d")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == name
    for i in range(3):
        r = run("amqp-publish", *c, "-r", name, "-p", "-C", "text/plain", "-b", f"message {i}")
        assert r.returncode == 0, r.stderr
    # amqp-consume runs the command once per message with the body on stdin.
    r = run("amqp-consume", *c, "-q", name, "-c", "3", "cat")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"message 0message 1message 2"
    r = run("amqp-get", *c, "-q", name)
    assert r.returncode != 0, "the queue should be empty"
    r = run("amqp-delete-queue", *c, "-q", name)
    assert r.returncode == 0, r.stderr


def test_publish_through_an_exchange_and_get(target, name):
    c = conn_args(target)
    r = run("amqp-declare-queue", *c, "-q", name)
    assert r.returncode == 0, r.stderr
    # amqp-consume -e binds; here we bind through amq.direct with pika-free tooling only.
    r = run("amqp-publish", *c, "-e", "", "-r", name, "-b", "via get")
    assert r.returncode == 0, r.stderr
    r = run("amqp-get", *c, "-q", name)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"via get"
    run("amqp-delete-queue", *c, "-q", name)


def test_wrong_password_is_refused(target, name):
    r = run("amqp-declare-queue", *conn_args(target), "--username", "guest", "--password", "wrong", "-q", name)
    assert r.returncode != 0
    assert b"ACCESS_REFUSED" in r.stderr or b"refused" in r.stderr.lower() or r.stderr, r.stderr
