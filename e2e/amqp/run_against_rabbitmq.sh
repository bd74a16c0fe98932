#!/usr/bin/env bash
# Run the AMQP client tests (pika, amqp-tools) against Debian's rabbitmq-server instead of
# Weir, to prove that the tests expect what RabbitMQ does. Starts a private RabbitMQ node
# on a free loopback port with its own data dir, and stops it afterwards. Skips (exit 0)
# when rabbitmq-server is not installed.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "SKIP: rabbitmq-server is not installed (apt-get install rabbitmq-server)"
  exit 0
fi

work="$(mktemp -d /tmp/weir-rabbitmq-XXXXXX)"
read -r port dist_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
')
echo "[]." > "$work/enabled_plugins"
# As root, rabbitmq-server switches to the rabbitmq user, which must own the node's files.
if [ "$(id -u)" -eq 0 ] && id rabbitmq >/dev/null 2>&1; then
  chown -R rabbitmq:rabbitmq "$work"
fi

export RABBITMQ_NODE_PORT="$port" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT="$dist_port"
export RABBITMQ_NODENAME="weir-test-$$@localhost" RABBITMQ_MNESIA_BASE="$work/mnesia" RABBITMQ_LOG_BASE="$work/log"
export RABBITMQ_ENABLED_PLUGINS_FILE="$work/enabled_plugins" RABBITMQ_PID_FILE="$work/pid" HOME="$work"

setsid rabbitmq-server >"$work/server.out" 2>&1 &
server_pid=$!
stop_server() {
  # Ask the node itself first: Debian's wrapper re-executes it as the rabbitmq user, and the
  # beam outlived the group kill below (nodes were left running after CI runs).
  timeout 60 rabbitmqctl -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true
  # The whole process group of the node we started (the wrapper, beam, its helpers).
  kill -TERM -- "-$server_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$server_pid" 2>/dev/null || true
  [ "${WEIR_TEST_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap stop_server EXIT

deadline=$((SECONDS + 90))
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
  if ! kill -0 "$server_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "rabbitmq-server did not start:"; tail -30 "$work/server.out"; exit 1
  fi
  sleep 0.5
done
echo "== RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?') on 127.0.0.1:$port"
AMQP_TARGET="127.0.0.1:$port" python3 -m pytest -q . "$@"
