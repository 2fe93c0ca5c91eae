#!/usr/bin/env bash
# Installs what Ferry's tests need and runs the whole suite: formatting, lints, tests.
# Usage: ./scripts/test.sh   (as root on Debian/Ubuntu it installs missing packages)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# 1. System packages the tests use: git for real repositories, a POSIX shell, procps,
#    util-linux's `script` for a pseudo-terminal, PostgreSQL for the store suite.
missing=()
command -v git >/dev/null || missing+=(git)
command -v sh >/dev/null || missing+=(dash)
command -v ps >/dev/null || missing+=(procps)
command -v script >/dev/null || missing+=(bsdutils)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "please install: ${missing[*]}" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

# 2. A shared target directory outside the clone makes repeated runs fast; any
#    writable place works on a brand-new machine.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if mkdir -p /var/cache/ferry-target 2>/dev/null && [ -w /var/cache/ferry-target ]; then
    export CARGO_TARGET_DIR=/var/cache/ferry-target
  else
    export CARGO_TARGET_DIR="$PWD/target"
  fi
fi

# 3. A PostgreSQL server of the tests' own, on 127.0.0.1, for the store suite.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
pg_port=${FERRY_TEST_PG_PORT:-55432}
pg_data=${FERRY_TEST_PG_DATA:-/var/tmp/ferry-test-pg-$pg_port}
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi   # PostgreSQL refuses root
if ! "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
  log "starting PostgreSQL on 127.0.0.1:$pg_port"
  rm -rf "$pg_data"
  mkdir -p "$pg_data"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$pg_data"; fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_data" -A trust -U postgres --no-sync >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -o \
    "-p $pg_port -c listen_addresses=127.0.0.1 -k $pg_data -c fsync=off -c max_connections=300" start >/dev/null
  stop_pg() { "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null 2>&1 || true; }
  trap stop_pg EXIT
fi
export FERRY_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
cargo test --workspace --locked

log "all tests passed"
