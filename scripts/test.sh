#!/usr/bin/env bash
# Installs what Ferry's tests need and runs the whole suite: formatting, lints, tests.
# Usage: ./scripts/test.sh   (as root on Debian/Ubuntu it installs missing packages)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# 1. System packages the tests use: git for real repositories, a POSIX shell, procps,
#    util-linux's `script` for a pseudo-terminal, PostgreSQL for the store suite, and a
#    Docker engine, an OCI registry and busybox for the container executor,
#    Prometheus' `promtool` to check the metrics' format, and Chromium with its
#    WebDriver for the web UI's browser tests.
missing=()
command -v git >/dev/null || missing+=(git)
command -v curl >/dev/null || missing+=(curl)
command -v sh >/dev/null || missing+=(dash)
command -v ps >/dev/null || missing+=(procps)
command -v script >/dev/null || missing+=(bsdutils)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-registry >/dev/null || missing+=(docker-registry)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v promtool >/dev/null || missing+=(prometheus)
# The web UI's browser tests: Chromium, driven through chromedriver (WebDriver).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# The e-mail notification tests' SMTP sink (Debian's Python, not another one on PATH).
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
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
# Every clone has its own paths, so incremental state from one never serves another:
# without this, a shared target directory grows by gigabytes a run until the disk fills.
export CARGO_INCREMENTAL=0

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
fi
export FERRY_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres"

# 4. A Docker engine (started here if none runs), a registry on 127.0.0.1, and a base
#    image built locally: FROM scratch plus busybox (nothing is pulled from anywhere).
started=()   # background services this script started, stopped again at the end
cleanup() {
  local status=$?
  set +e   # a stopped service's own exit status must not become the suite's
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if declare -F stop_pg >/dev/null; then stop_pg; fi
  exit "$status"
}
trap cleanup EXIT
if ! docker version >/dev/null 2>&1; then
  log "starting dockerd"
  dockerd >/var/tmp/ferry-test-dockerd.log 2>&1 &
  dockerd_pid=$!
  started+=("$dockerd_pid")
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
fi
docker version >/dev/null || { echo "Docker did not start (see /var/tmp/ferry-test-dockerd.log)" >&2; exit 1; }
reg_port=${FERRY_TEST_REGISTRY_PORT:-5000}
if ! curl -fsS "http://127.0.0.1:$reg_port/v2/" >/dev/null 2>&1; then
  log "starting a registry on 127.0.0.1:$reg_port"
  reg_dir=/var/tmp/ferry-test-registry-$reg_port
  mkdir -p "$reg_dir"
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\n' "$reg_dir" "$reg_port" > "$reg_dir/config.yml"
  docker-registry serve "$reg_dir/config.yml" >"$reg_dir/log" 2>&1 &
  reg_pid=$!
  started+=("$reg_pid")
  for _ in $(seq 1 40); do curl -fsS "http://127.0.0.1:$reg_port/v2/" >/dev/null 2>&1 && break; sleep 0.25; done
fi
log "building the base test image"
img_dir=$(mktemp -d)
cp /bin/busybox "$img_dir/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\nCMD ["/bin/sh"]\n' > "$img_dir/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t ferry-test/busybox:latest "$img_dir" >/dev/null
rm -rf "$img_dir"
docker tag ferry-test/busybox:latest "127.0.0.1:$reg_port/ferry-test/busybox:latest"
docker push -q "127.0.0.1:$reg_port/ferry-test/busybox:latest" >/dev/null
# The swarm target's tests deploy stacks on a single-node swarm of the test engine.
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  log "making the Docker engine a single-node swarm"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
export FERRY_TEST_IMAGE=ferry-test/busybox:latest
export FERRY_TEST_REGISTRY="127.0.0.1:$reg_port"
# The browser tests drive Debian's Chromium through its chromedriver.
export FERRY_TEST_CHROMEDRIVER="$(command -v chromedriver)"
export FERRY_TEST_CHROMIUM="$(command -v chromium)"
# Terraform is not a Debian package (nor on PyPI or npm): the provisioning tests use the
# one the machine has (/usr/local/bin/terraform on Ferry's CI machines), else say so.
if command -v terraform >/dev/null; then
  export FERRY_TEST_TERRAFORM="$(command -v terraform)"
else
  echo "terraform is not installed: the Terraform tests are skipped (FERRY_SKIP_TERRAFORM=1)" >&2
  export FERRY_SKIP_TERRAFORM=1
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# 5. The tests, with cargo-nextest: each test in a process of its own, every failure
#    reported, and no test running longer than 5 minutes (.config/nextest.toml).
if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest is missing: installing it (cargo install cargo-nextest --locked)"
  cargo install cargo-nextest --locked
fi
log "cargo nextest run"
cargo nextest run --workspace --locked

# nextest does not run doc tests. Ferry has none today; once a doc comment holds a code
# block, run them too.
if grep -rqE '^[[:space:]]*//[/!].*```' crates/*/src; then
  log "cargo test --doc"
  cargo test --workspace --doc --locked
fi

log "all tests passed"
