#!/usr/bin/env bash
# Make sure RabbitMQ (with the shovel and management plugins) and PostgreSQL are installed and running on localhost.
# Installs them through apt when missing and starts them when stopped; exits non-zero if it cannot,
# so tests fail loudly instead of skipping.
set -euo pipefail

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "need root to install $* (apt-get install -y $*)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- RabbitMQ ------------------------------------------------------------------------------------
if ! command -v rabbitmqctl >/dev/null; then
  echo "installing rabbitmq-server" >&2
  apt_install rabbitmq-server
fi
if ! rabbitmqctl -q status >/dev/null 2>&1; then
  echo "starting RabbitMQ" >&2
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 90); do
    rabbitmqctl -q await_startup >/dev/null 2>&1 && break
    sleep 1
  done
fi
rabbitmqctl -q await_startup >/dev/null
# The shovel carries messages between the countries; `broker topology` administers the node, and
# gateways read their link's state, through the management HTTP API (and its shovel status page).
wanted_plugins="rabbitmq_shovel rabbitmq_management rabbitmq_shovel_management"
enabled_plugins=$(rabbitmq-plugins -q list -e -m 2>/dev/null || true)
for plugin in $wanted_plugins; do
  if ! grep -qx "$plugin" <<<"$enabled_plugins"; then
    rabbitmq-plugins -q enable "$plugin" >/dev/null
  fi
done
# A plugin enabled just now opens its HTTP listener a few seconds later: wait for it, so the first
# test does not meet a refused connection.
for _ in $(seq 1 60); do
  (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null && break
  sleep 1
done
(exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null || { echo "RabbitMQ management API not listening on 15672" >&2; exit 1; }

# --- PostgreSQL ----------------------------------------------------------------------------------
if ! command -v pg_ctlcluster >/dev/null; then
  echo "installing postgresql" >&2
  apt_install postgresql
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL" >&2
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -q -h 127.0.0.1 -p 5432
# A fresh Debian cluster uses password auth on TCP: give postgres the password the tests use
# (where auth is `trust`, as on the development machines, this changes nothing that matters).
if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null; then
  runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 || true
  runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 ||
    runuser -u postgres -- createdb test >/dev/null 2>&1 || true
fi

# --- the HTTP API's documented examples (docs/http-api.md) run with curl and jq ---------------------
missing_tools=""
for tool in curl jq; do
  command -v "$tool" >/dev/null || missing_tools="$missing_tools $tool"
done
if [ -n "$missing_tools" ]; then
  echo "installing$missing_tools" >&2
  # shellcheck disable=SC2086 # one word per tool
  apt_install $missing_tools
fi
