#!/usr/bin/env python3
"""Benchmarks of `ferry serve`, each against a baseline in the same run:

  latency  webhook request -> the first step's process starts, p50/p99 over 200
           deliveries; baseline: Python spawning the same `sh` command directly
  memory   resident size of an idle `ferry serve`; baseline: an idle
           `python3 -m http.server`; then its size after every 100 of 1,000 runs
           (FERRY_BENCH_RUNS), which must level off
  intake   signed push webhooks accepted per second (bounded: three bursts of 1,000
           deliveries from 8 threads on loopback, the median); baseline: the same
           requests to a trivial Python server
  list     GET /api/v1/runs (one page) with 100,000 runs stored, p50 over 200
           requests; baseline: the same query with Python's sqlite3 on the same file
  deliver  a successful run -> its release live in `sandbox` (process target), minus the
           verification window, p50 over 20 releases; baseline: copying the release's
           files and starting the process from a script
  metrics  GET /metrics with 100,000 runs and 50 watched environments stored, p50 over
           200 scrapes, and the server's resident size before and after 1,000 scrapes;
           baseline: the count of queued and running runs with Python's sqlite3 on the
           same file
  notify   a failed run -> its `run.failed` webhook received by a local receiver, p50
           over 30 runs (from the run's recorded end); baseline: Python POSTing the same
           JSON to the same receiver
  watch    the CPU a server spends over 30 s with 50 live environments under a health
           watch at a 1 s interval (an http probe each), against the same server and
           environments with `watch: false`
  traces   webhook -> first step with traces exported over OTLP/HTTP to a local
           receiver, against the same server with traces off, alternately (3 x 100
           deliveries each)
  sandbox  a host job of 100 `true` steps and one of 1 step, per-step cost from the
           jobs' recorded times (median of 7 runs each), with the host-job sandbox on
           and off (`--host-sandbox`), alternately; the difference is the sandbox's cost

Usage: bench/run.sh serve   (or FERRY_BIN=... python3 bench/serve.py [name...])
"""

import hashlib
import hmac
import http.client
import http.server
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

FERRY = os.environ.get("FERRY_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "ferry")
SECRET = "bench-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(*args, cwd=None):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


class Server:
    def __init__(self, tmp, pipeline, extra=()):
        self.tmp = tmp
        self.extra = list(extra)
        # A root server runs host steps as a uid of each job's own: the marks directory
        # the steps write (--sandbox-write) must be one those uids may reach and write.
        os.chmod(tmp, 0o711)
        marks = os.path.join(tmp, "marks")
        os.makedirs(marks, exist_ok=True)
        os.chmod(marks, 0o777)
        self.bare = os.path.join(tmp, "origin.git")
        work = os.path.join(tmp, "work-tree")
        os.makedirs(work)
        git("init", "-q", "--bare", "-b", "main", self.bare)
        git("init", "-q", "-b", "main", cwd=work)
        with open(os.path.join(work, ".ferry.yml"), "w") as f:
            f.write(pipeline)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "bench", cwd=work)
        git("push", "-q", self.bare, "main", cwd=work)
        self.sha = git("rev-parse", "HEAD", cwd=work)
        self.data = os.path.join(tmp, "data")
        self.start()

    def start(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [FERRY, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data, "--max-runs", "4",
             # The steps' marks go beside the data directory: writable in the sandbox.
             "--sandbox-write", os.path.join(os.path.dirname(self.data), "marks"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.token = getattr(self, "token", None)
        while True:
            line = self.proc.stderr.readline()
            if not line:
                sys.exit("ferry serve did not start")
            if line.strip().startswith("ferry_"):
                self.token = line.strip()
            if line.startswith("ferry: serving"):
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def call(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=json.dumps(body) if isinstance(body, dict) else body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def add_repo(self):
        status, body = self.call("POST", "/api/v1/repos", {"name": "app", "url": self.bare, "webhook_secret": SECRET})
        assert status == 201, body

    def push_body(self):
        return json.dumps({"ref": "refs/heads/main", "after": self.sha, "head_commit": {"id": self.sha, "message": "bench"}}).encode()


def signed_headers(body):
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": f"sha256={sig}"}


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def finish(tmp, report):
    """Removes a benchmark's scratch directory, then prints its report line."""
    shutil.rmtree(tmp, ignore_errors=True)
    print(report)


def trigger_latencies(tmp, extra=(), n=200):
    """Webhook -> first step's process, in ms, for `n` deliveries to a fresh server."""
    marks = os.path.join(tmp, "marks")
    s = Server(tmp, f"jobs:\n  first:\n    run: date +%s%N > {marks}/$FERRY_RUN_ID\n", extra)
    s.add_repo()
    body = s.push_body()
    lat = []
    for _ in range(n):
        before = set(os.listdir(marks))
        sent = time.time_ns()
        status, _ = s.call("POST", "/api/v1/hooks/github/app", body, signed_headers(body))
        assert status == 202, status
        deadline = time.time() + 30
        while time.time() < deadline:
            new = set(os.listdir(marks)) - before
            if new:
                path = os.path.join(marks, new.pop())
                time.sleep(0.001)
                with open(path) as f:
                    text = f.read().strip()
                if text:
                    lat.append((int(text) - sent) / 1e6)
                    break
            time.sleep(0.0005)
    s.stop()
    return lat


def bench_latency():
    tmp = tempfile.mkdtemp(prefix="ferry-bench-serve-")
    marks = os.path.join(tmp, "marks")
    lat = trigger_latencies(tmp)
    # Baseline: spawning the same step directly.
    base = []
    for i in range(200):
        t = time.time_ns()
        subprocess.run(["sh", "-c", f"date +%s%N > {marks}/base"], check=True)
        with open(f"{marks}/base") as f:
            base.append((int(f.read().strip()) - t) / 1e6)
    finish(tmp, f"latency   webhook -> first step: p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms "
                f"({len(lat)} deliveries)   direct spawn: p50 {pct(base, 0.5):.2f} ms   goal p50 < 20 ms: "
                f"{'met' if pct(lat, 0.5) < 20 else 'NOT met'}")


class Traces(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that accepts every export (and counts its bytes)."""
    received = 0

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        Traces.received += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def bench_traces():
    """Trigger latency with traces exported to a local OTLP receiver, against the same
    server without, alternately (three rounds of 100 deliveries each)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Traces)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    on, off = [], []
    for _ in range(3):
        for extra, out in (((), off), (("--otlp-endpoint", endpoint), on)):
            tmp = tempfile.mkdtemp(prefix="ferry-bench-serve-")
            out.extend(trigger_latencies(tmp, extra, n=100))
            shutil.rmtree(tmp, ignore_errors=True)
    srv.shutdown()
    assert Traces.received > 0, "no trace reached the receiver"
    print(f"traces    webhook -> first step with traces on: p50 {pct(on, 0.5):.1f} ms, p99 {pct(on, 0.99):.1f} ms   "
          f"off: p50 {pct(off, 0.5):.1f} ms, p99 {pct(off, 0.99):.1f} ms   ({Traces.received} bytes of OTLP received)   "
          f"goal p50 < 20 ms: {'met' if pct(on, 0.5) < 20 else 'NOT met'}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def unfinished(s):
    """How many runs are queued or running (at most 200 of each are counted)."""
    n = 0
    for status in ("queued", "running"):
        code, body = s.call("GET", f"/api/v1/runs?status={status}&limit=200")
        assert code == 200, body
        n += len(json.loads(body)["runs"])
    return n


def bench_memory():
    tmp = tempfile.mkdtemp(prefix="ferry-bench-serve-")
    s = Server(tmp, "jobs:\n  a:\n    run: 'echo one line of output'\n  b:\n    needs: a\n    run: seq 1 2000\n")
    s.add_repo()
    s.call("GET", "/api/v1/runs")
    time.sleep(1.0)
    ferry = rss_kib(s.proc.pid)
    # Then 1,000 runs (two jobs each), 100 at a time, with the resident size after each
    # hundred: it must level off, not grow with the runs stored. Bounded: 10 minutes.
    runs = int(os.environ.get("FERRY_BENCH_RUNS", 1000))
    samples, done, deadline = [], 0, time.time() + 600
    while done < runs and time.time() < deadline:
        for _ in range(min(100, runs - done)):
            code, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
            assert code == 201, body
        done += min(100, runs - done)
        while unfinished(s) and time.time() < deadline:
            time.sleep(0.05)
        samples.append((done, rss_kib(s.proc.pid)))
    s.stop()
    half = [kib for n, kib in samples if n >= runs // 2]
    growth = (max(half) - min(half)) / 1024 if half else float("nan")
    port = free_port()
    py = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    time.sleep(1.0)
    base = rss_kib(py.pid)
    py.terminate()
    py.wait()
    trace = "  ".join(f"{n}: {kib / 1024:.1f}" for n, kib in samples)
    finish(tmp, f"memory    idle ferry serve {ferry / 1024:.1f} MiB   idle python3 -m http.server {base / 1024:.1f} MiB   "
                f"ratio {ferry / base:.2f}x   goal < 25 MiB: {'met' if ferry / 1024 < 25 else 'NOT met'}\n"
                f"          after N runs (MiB): {trace}\n"
                f"          second half of the runs: {growth:.1f} MiB between its lowest and highest   "
                f"goal: steady (< 2 MiB): {'met' if growth < 2 else 'NOT met'}")


class Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a):
        pass


def blast(port, path, body, total=1000, threads=8):
    done = []
    lock = threading.Lock()

    def worker(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(n):
            h = signed_headers(body)
            h["Content-Type"] = "application/json"
            c.request("POST", path, body=body, headers=h)
            r = c.getresponse()
            r.read()
            with lock:
                done.append(r.status)
        c.close()

    start = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(total // threads,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return len(done) / (time.perf_counter() - start), done


def bench_intake():
    tmp = tempfile.mkdtemp(prefix="ferry-bench-serve-")
    # Accepted deliveries are stored and answered; the intake worker then plans them
    # (and `on:` declines these pushes), so the runs themselves are not measured.
    s = Server(tmp, "on:\n  push: { branches: [release] }\njobs:\n  a:\n    run: 'true'\n")
    s.add_repo()
    body = s.push_body()
    # Three bursts (a burst is about a second: one alone is at the mercy of the
    # machine's phase), the median reported.
    # Each burst starts once the intake worker has handled the last one (its queue,
    # the `intake` table, is empty): a burst arriving at an idle server.
    rates = []
    for _ in range(3):
        rate, statuses = blast(s.port, "/api/v1/hooks/github/app", body)
        assert all(st == 202 for st in statuses), set(statuses)
        rates.append(rate)
        db = sqlite3.connect(os.path.join(s.data, "ferry.db"))
        for _ in range(600):
            if db.execute("SELECT COUNT(*) FROM intake").fetchone()[0] == 0:
                break
            time.sleep(0.1)
        db.close()
    rate = statistics.median(rates)
    s.stop()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base, _ = blast(srv.server_address[1], "/", body)
    srv.shutdown()
    finish(tmp, f"intake    signed push webhooks: median {rate:.0f}/s ({', '.join(f'{r:.0f}' for r in rates)})   trivial Python server: {base:.0f}/s   "
                f"ratio {rate / base:.2f}x   goal > 1000/s: {'met' if rate > 1000 else 'NOT met'}")


def server_with_runs(n=100_000):
    """A stopped server whose store holds `n` finished runs of one repository."""
    tmp = tempfile.mkdtemp(prefix="ferry-bench-serve-")
    s = Server(tmp, "jobs:\n  a:\n    run: 'true'\n")
    s.add_repo()
    s.stop()
    db = sqlite3.connect(os.path.join(s.data, "ferry.db"))
    repo = db.execute("SELECT id FROM repositories").fetchone()[0]
    now = int(time.time() * 1000)
    rows = [(f"{now + i:013x}-{uuid.uuid4()}", repo, i + 1, "push", "refs/heads/main", "main", None, "0" * 40, 0,
             "a", "m", "success", "{}", now + i) for i in range(n)]
    db.executemany("INSERT INTO runs (id, repository_id, number, event, git_ref, branch, tag, commit_sha, dirty, author, message, status, plan, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()
    return tmp, s


def bench_list():
    tmp, s = server_with_runs()
    s.start()
    times = []
    for _ in range(200):
        t = time.perf_counter()
        status, _ = s.call("GET", "/api/v1/runs?limit=50")
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200
    s.stop()
    db = sqlite3.connect(os.path.join(s.data, "ferry.db"))
    base = []
    for _ in range(200):
        t = time.perf_counter()
        db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 50").fetchall()
        base.append((time.perf_counter() - t) * 1000)
    db.close()
    finish(tmp, f"list      one page of 100,000 runs: p50 {pct(times, 0.5):.2f} ms (p99 {pct(times, 0.99):.2f})   "
                f"sqlite3 query alone: p50 {pct(base, 0.5):.2f} ms   goal p50 < 20 ms: {'met' if pct(times, 0.5) < 20 else 'NOT met'}")


def seed_environments(s, n=50):
    """`n` live deployments, each with a watched environment's health, in the stopped
    server's store (what /metrics reads at each scrape)."""
    db = sqlite3.connect(os.path.join(s.data, "ferry.db"))
    repo, run = db.execute("SELECT repository_id, id FROM runs ORDER BY number LIMIT 1").fetchone()
    now = int(time.time() * 1000)
    release = str(uuid.uuid4())
    db.execute("INSERT INTO releases (id, repository_id, name, run_id, run_number, commit_sha, git_ref, author, "
               "plan_hash, ferry_version, delivery, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               (release, repo, "r1", run, 1, "0" * 40, "refs/heads/main", "a", "h", "0", "{}", now))
    for i in range(n):
        dep = str(uuid.uuid4())
        db.execute("INSERT INTO deployments (id, repository_id, environment, number, release_id, kind, status, "
                   "created_at, started_at, finished_at, live_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (dep, repo, f"env{i}", 1, release, "promotion", "live", now, now, now, now))
        db.execute("INSERT INTO environment_health (repository_id, environment, deployment_id, state, since) "
                   "VALUES (?,?,?,?,?)", (repo, f"env{i}", dep, ["healthy", "degraded", "down"][i % 3], now))
    db.commit()
    db.close()


def bench_metrics():
    tmp, s = server_with_runs()
    seed_environments(s)
    s.start()
    rss_before = rss_kib(s.proc.pid) / 1024
    times = []
    for i in range(1000):
        t = time.perf_counter()
        status, body = s.call("GET", "/metrics")
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200, body
        if i == 99:
            rss_100 = rss_kib(s.proc.pid) / 1024
    rss_after = rss_kib(s.proc.pid) / 1024
    s.stop()
    db = sqlite3.connect(os.path.join(s.data, "ferry.db"))
    base = []
    for _ in range(200):
        t = time.perf_counter()
        db.execute("SELECT status, COUNT(*) FROM runs WHERE status IN ('queued', 'running') GROUP BY status").fetchall()
        base.append((time.perf_counter() - t) * 1000)
    db.close()
    p50 = pct(times[:200], 0.5)
    assert body.count(b"ferry_environment_health{") == 150, "the 50 environments' health"
    finish(tmp, f"metrics   GET /metrics with 100,000 runs, 50 environments: p50 {p50:.2f} ms (p99 {pct(times, 0.99):.2f}, 1,000 scrapes)   "
                f"sqlite3 count alone: p50 {pct(base, 0.5):.2f} ms   goal p50 < 10 ms: {'met' if p50 < 10 else 'NOT met'}\n"
                f"          RSS {rss_before:.1f} MiB before, {rss_100:.1f} after 100 scrapes, {rss_after:.1f} after 1,000   "
                f"goal: no growth after the first 100 (< 1 MiB): {'met' if rss_after - rss_100 < 1 else 'NOT met'}")


def bench_deliver():
    tmp = tempfile.mkdtemp(prefix="ferry-bench-deliver-")
    pipeline = """jobs:
  build:
    run: mkdir -p app && for i in $(seq 1 20); do head -c 10000 /dev/urandom > app/f$i; done && echo 'exec sleep 300' > app/run.sh
    artifacts: [app]
release: { artifacts: [build] }
environments:
  sandbox: { auto: true }
deploy:
  target: { process: { command: sh app/run.sh } }
  verify: { command: "true", for: 1ms }
"""
    s = Server(tmp, pipeline)
    s.add_repo()
    lat = []
    for i in range(20):
        status, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
        assert status == 201, body
        run_id = json.loads(body)["run"]["id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            _, body = s.call("GET", f"/api/v1/runs/{run_id}")
            detail = json.loads(body)
            release = detail.get("release")
            if release:
                _, body = s.call("GET", "/api/v1/repos/app/deployments?environment=sandbox")
                deps = [d for d in json.loads(body)["deployments"] if d["release"] == release["name"]]
                if deps and deps[0]["status"] == "live":
                    d = deps[0]
                    _, log = s.call("GET", f"/api/v1/repos/app/deployments/sandbox.{d['number']}/log")
                    stamps = {}
                    for line in log.decode().splitlines():
                        stamp, _, text = line.partition(" ")
                        t = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0" + stamp[19:-1])
                        if text.startswith("verifying"):
                            stamps["verifying"] = t
                        if text == "verified":
                            stamps["verified"] = t
                    window = (stamps["verified"] - stamps["verifying"]) * 1000
                    total = d["finished_at"] - detail["run"]["finished_at"]
                    lat.append(total - window)
                    break
            time.sleep(0.02)
        else:
            sys.exit("a release did not go live")
    s.stop()
    # Baseline: what a script would do: copy the files, start the process.
    src = os.path.join(tmp, "src")
    os.makedirs(os.path.join(src, "app"))
    for i in range(20):
        with open(os.path.join(src, "app", f"f{i}"), "wb") as f:
            f.write(os.urandom(10000))
    with open(os.path.join(src, "app", "run.sh"), "w") as f:
        f.write("exec sleep 300\n")
    base = []
    for i in range(20):
        dest = os.path.join(tmp, f"copy{i}")
        t = time.perf_counter()
        shutil.copytree(src, dest)
        p = subprocess.Popen(["sh", "app/run.sh"], cwd=dest)
        base.append((time.perf_counter() - t) * 1000)
        p.kill()
        p.wait()
    f50, b50 = pct(lat, 0.5), pct(base, 0.5)
    finish(tmp, f"deliver   run success -> live in sandbox (minus verification): p50 {f50:.0f} ms, max {max(lat):.0f} ms "
                f"({len(lat)} releases)   copy + start by script: p50 {b50:.1f} ms   goal < 200 ms: "
                f"{'met' if f50 < 200 else 'NOT met'}")


def job_ms(pipeline, runs=7):
    """Median duration (ms, as the server recorded it) of the single job of `pipeline`
    over `runs` runs started by signed push deliveries."""
    tmp = tempfile.mkdtemp(prefix="ferry-bench-sandbox-")
    s = Server(tmp, pipeline)
    s.add_repo()
    took = []
    try:
        for number in range(1, runs + 1):
            body = s.push_body()
            status, _ = s.call("POST", "/api/v1/hooks/github/app", body, signed_headers(body))
            assert status == 202, status
            deadline = time.time() + 60
            while time.time() < deadline:
                _, page = s.call("GET", "/api/v1/runs?limit=1")
                runs_ = json.loads(page).get("runs") or []
                if runs_ and runs_[0]["number"] == number and runs_[0]["status"] in ("success", "failed"):
                    _, detail = s.call("GET", f"/api/v1/runs/{runs_[0]['id']}")
                    job = json.loads(detail)["jobs"][0]
                    assert runs_[0]["status"] == "success", detail
                    took.append(job["finished_at"] - job["started_at"])
                    break
                time.sleep(0.02)
    finally:
        s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return statistics.median(took)


def bench_sandbox():
    many = "jobs:\n  many:\n    steps:\n" + "".join("      - run: 'true'\n" for _ in range(100))
    one = "jobs:\n  one:\n    steps:\n      - run: 'true'\n"
    per = {"on": [], "off": []}
    for _ in range(2):
        for mode in ("on", "off"):
            os.environ["FERRY_HOST_SANDBOX"] = mode
            per[mode].append((job_ms(many) - job_ms(one)) / 99)
    os.environ.pop("FERRY_HOST_SANDBOX", None)
    on, off = statistics.median(per["on"]), statistics.median(per["off"])
    print(f"sandbox   per host step (server side): sandbox on {on:.3f} ms   off {off:.3f} ms   "
          f"-> the sandbox costs {on - off:+.3f} ms per step")


class Receiver(http.server.BaseHTTPRequestHandler):
    """Keeps when each POST arrived, and its body."""
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.got.append((time.time(), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def bench_notify():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    tmp = tempfile.mkdtemp(prefix="ferry-bench-notify-")
    s = Server(tmp, f"jobs:\n  a:\n    run: 'false'\nnotify:\n  - webhook: http://127.0.0.1:{port}/hook\n")
    s.add_repo()
    lat = []
    for _ in range(30):
        Receiver.got.clear()
        status, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
        assert status == 201, body
        run_id = json.loads(body)["run"]["id"]
        deadline = time.time() + 30
        while not Receiver.got and time.time() < deadline:
            time.sleep(0.002)
        assert Receiver.got, "no notification"
        received, payload = Receiver.got[0]
        assert json.loads(payload)["facts"]["run_id"] == run_id
        _, detail = s.call("GET", f"/api/v1/runs/{run_id}")
        lat.append(received * 1000 - json.loads(detail)["run"]["finished_at"])
    s.stop()
    base = []
    for _ in range(30):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        t = time.perf_counter()
        c.request("POST", "/hook", body=payload, headers={"Content-Type": "application/json"})
        c.getresponse().read()
        base.append((time.perf_counter() - t) * 1000)
        c.close()
    srv.shutdown()
    f50 = pct(lat, 0.5)
    finish(tmp, f"notify    run failed -> webhook received: p50 {f50:.1f} ms, max {max(lat):.1f} ms (30 runs)   "
                f"Python POST of the same JSON: p50 {pct(base, 0.5):.2f} ms   goal p50 < 50 ms: "
                f"{'met' if f50 < 50 else 'NOT met'}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def watched_server(watch, health_port, n=50):
    tmp = tempfile.mkdtemp(prefix="ferry-bench-watch-")
    envs = "".join(f"  env{i}: {{ auto: true }}\n" for i in range(n))
    pipeline = f"""jobs:
  build:
    run: mkdir -p app && echo 'exec sleep 600' > app/run.sh
    artifacts: [app]
release: {{ artifacts: [build] }}
environments:
{envs}deploy:
  target: {{ process: {{ command: sh app/run.sh }} }}
  verify: {{ http: "http://127.0.0.1:{health_port}/ok", for: 1ms }}
  watch: {watch}
"""
    s = Server(tmp, pipeline)
    s.add_repo()
    status, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
    assert status == 201, body
    deadline = time.time() + 180
    while time.time() < deadline:
        _, body = s.call("GET", "/api/v1/repos/app/environments")
        live = sum(1 for e in json.loads(body).get("environments", []) if e.get("live"))
        if live == n:
            break
        time.sleep(0.5)
    else:
        sys.exit(f"only {live} of {n} environments went live")
    return tmp, s


def bench_watch():
    # An app's health endpoint as most servers answer: HTTP/1.1, the connection kept
    # (FERRY_BENCH_WATCH_CLOSE=1: a new connection for every probe, as HTTP/1.0).
    close = os.environ.get("FERRY_BENCH_WATCH_CLOSE") == "1"

    class Ok(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0" if close else "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    hz = os.sysconf("SC_CLK_TCK")
    seconds = 30
    use = {}
    for watch in ("false", "{ interval: 1s }"):
        tmp, s = watched_server(watch, srv.server_address[1])
        time.sleep(3)  # settle
        before = cpu_ticks(s.proc.pid)
        time.sleep(seconds)
        use[watch] = (cpu_ticks(s.proc.pid) - before) / hz / seconds * 100
        s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    srv.shutdown()
    on, off = use["{ interval: 1s }"], use["false"]
    how = "a new connection per probe" if close else "connections kept"
    print(f"watch     50 live environments, 30 s ({how}): watched every 1 s {on:.2f}% of one CPU   unwatched {off:.2f}%   "
          f"-> the watch costs {on - off:.2f}%   goal < 2%: {'met' if on - off < 2 else 'NOT met'}")


def main():
    if not os.path.exists(FERRY):
        sys.exit(f"{FERRY} not found: build with `cargo build --release -p ferry-cli` or set FERRY_BIN")
    names = sys.argv[1:] or ["latency", "memory", "intake", "list", "deliver"]
    for n in names:
        {"latency": bench_latency, "memory": bench_memory, "intake": bench_intake, "list": bench_list,
         "deliver": bench_deliver, "sandbox": bench_sandbox, "metrics": bench_metrics,
         "notify": bench_notify, "watch": bench_watch, "traces": bench_traces}[n]()


if __name__ == "__main__":
    main()
