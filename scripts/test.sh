#!/usr/bin/env bash
# Installs what Ferry's tests need and runs the whole suite: formatting, lints, tests.
# Usage: ./scripts/test.sh   (as root on Debian/Ubuntu it installs missing packages)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# 1. System packages the tests use (real git repositories, a POSIX shell, procps).
missing=()
command -v git >/dev/null || missing+=(git)
command -v sh >/dev/null || missing+=(dash)
command -v ps >/dev/null || missing+=(procps)
command -v script >/dev/null || missing+=(bsdutils)
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

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
cargo test --workspace --locked

log "all tests passed"
