#!/usr/bin/env python3
"""Benchmarks of the web UI, each against a baseline in the same run:

  render  server time to answer the run page and the environments board with 100,000
          runs stored, p50 over 200 requests each (a signed-in session); baseline: the
          JSON API's answer of the same data (GET /api/v1/runs/{id}, …/environments)
  assets  the JavaScript and CSS every page loads, gzip-compressed (goal < 50 KB)
  biglog  in Chromium (headless, through chromedriver): a job's page whose log is
          100 MB: when its last lines are painted after navigation (first contentful
          paint, median of 10 navigations), and the renderer's resident memory after
          the page and five earlier windows are loaded; baseline: the log's last 1,000
          lines as plain text from the API, in the same browser
  live    a step printing 10 MB/s for 10 s (100-byte lines) followed live on its job's
          page: how long after the step's end its last line is on the page, and the
          renderer's memory then; baseline: the step's own duration

Usage: FERRY_BIN=... python3 bench/ui.py [render|assets|biglog|live ...]
(needs `chromium` and `chromium-driver` for biglog and live, as scripts/test.sh installs)
"""

import gzip
import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve as sv  # noqa: E402  (the `ferry serve` harness)

CHROMEDRIVER = os.environ.get("FERRY_TEST_CHROMEDRIVER") or shutil.which("chromedriver")
CHROMIUM = os.environ.get("FERRY_TEST_CHROMIUM") or shutil.which("chromium")


def sign_in(s):
    """A web session of the server's admin: its cookie."""
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    body = urllib.parse.urlencode({"token": s.token, "next": "/"})
    c.request("POST", "/ui/sign-in", body, {"Content-Type": "application/x-www-form-urlencoded",
                                            "Sec-Fetch-Site": "same-origin"})
    r = c.getresponse()
    r.read()
    cookie = r.getheader("Set-Cookie").split(";")[0]
    c.close()
    return cookie


def timed_gets(s, path, headers, n=200):
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t) * 1000)
        assert r.status == 200, (path, r.status, body[:300])
    c.close()
    return times, body


DELIVERY = """jobs:
  lint: { run: 'true' }
  build:
    needs: [lint]
    run: mkdir -p app && echo 'exec sleep 300' > app/run.sh
    artifacts: [app]
  test:
    needs: [build]
    matrix: { db: [15, 16, 17] }
    run: 'true'
  package: { needs: [test], run: 'true' }
release: { artifacts: [build] }
environments:
  sandbox: { auto: true }
  staging: { after: sandbox, auto: true }
  production: { after: staging, approval: { required: 1 } }
deploy:
  target: { process: { command: sh app/run.sh } }
  verify: { command: "true", for: 1ms }
"""


def wait_json(s, path, done, what, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        status, body = s.call("GET", path)
        if status == 200 and done(json.loads(body)):
            return json.loads(body)
        time.sleep(0.1)
    sys.exit(f"gave up waiting for {what}")


def bench_render():
    tmp = tempfile.mkdtemp(prefix="ferry-bench-ui-")
    s = sv.Server(tmp, DELIVERY)
    s.add_repo()
    s.stop()
    # 100,000 finished runs beside the real one.
    db = sqlite3.connect(os.path.join(s.data, "ferry.db"))
    repo = db.execute("SELECT id FROM repositories").fetchone()[0]
    now = int(time.time() * 1000) - 10_000_000
    rows = [(f"{now + i:013x}-{uuid.uuid4()}", repo, i + 1, "push", "refs/heads/main", "main", None, "0" * 40, 0,
             "a", "m", "success", "{}", now + i) for i in range(100_000)]
    db.executemany("INSERT INTO runs (id, repository_id, number, event, git_ref, branch, tag, commit_sha, dirty, author, "
                   "message, status, plan, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()
    s.start()
    status, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
    assert status == 201, body
    run_id = json.loads(body)["run"]["id"]
    wait_json(s, f"/api/v1/runs/{run_id}", lambda d: d["run"]["status"] == "success", "the run")
    wait_json(s, "/api/v1/repos/app/deployments?environment=production",
              lambda d: d["deployments"] and d["deployments"][0]["status"] == "awaiting_approval", "production to wait")
    cookie = {"Cookie": sign_in(s)}
    bearer = {"Authorization": f"Bearer {s.token}"}
    run_page, html = timed_gets(s, f"/ui/runs/{run_id}", cookie)
    assert b'class="node n-success"' in html
    board, html = timed_gets(s, "/ui/repos/app/environments", cookie)
    assert b"production#1" in html
    run_api, _ = timed_gets(s, f"/api/v1/runs/{run_id}", bearer)
    board_api, _ = timed_gets(s, "/api/v1/repos/app/environments", bearer)
    s.stop()
    r50, b50 = pct(run_page), pct(board)
    sv.finish(tmp, f"render    run page p50 {r50:.2f} ms (p99 {pct(run_page, .99):.2f}), environments board p50 {b50:.2f} ms "
                   f"(p99 {pct(board, .99):.2f}), 100,000 runs stored   JSON API of the same: run p50 {pct(run_api):.2f} ms, "
                   f"environments p50 {pct(board_api):.2f} ms   goal p50 < 5 ms: {'met' if max(r50, b50) < 5 else 'NOT met'}")


def pct(values, p=0.5):
    return sv.pct(values, p)


def bench_assets():
    # The assets as the server embeds them: fetched from a running server's page.
    tmp = tempfile.mkdtemp(prefix="ferry-bench-ui-")
    s = sv.Server(tmp, "jobs:\n  a:\n    run: 'true'\n")
    cookie = {"Cookie": sign_in(s)}
    _, html = timed_gets(s, "/", cookie, n=1)
    total_raw, total_gz, parts = 0, 0, []
    for href in re.findall(rb'(?:href|src)="(/ui/assets/[^"]+)"', html):
        _, body = timed_gets(s, href.decode(), {}, n=1)
        gz = len(gzip.compress(body, 9))
        total_raw += len(body)
        total_gz += gz
        parts.append(f"{href.decode().rsplit('/', 1)[1]} {len(body) / 1024:.1f} KiB ({gz / 1024:.1f} gz)")
    s.stop()
    sv.finish(tmp, f"assets    {', '.join(parts)}: {total_gz / 1024:.1f} KiB compressed in all   "
                   f"goal < 50 KB: {'met' if total_gz < 50_000 else 'NOT met'}")


class Chrome:
    """Chromium through chromedriver's WebDriver endpoint (plain HTTP, stdlib only)."""

    def __init__(self):
        if not (CHROMEDRIVER and CHROMIUM):
            sys.exit("chromium and chromium-driver are needed (scripts/test.sh installs them)")
        self.port = sv.free_port()
        self.profile = tempfile.mkdtemp(prefix="ferry-bench-chrome-")
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": CHROMIUM, "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1280,1000", "--js-flags=--expose-gc",
            f"--user-data-dir={self.profile}"]}}}}
        deadline = time.time() + 30
        while True:
            try:
                self.session = self.call("POST", "/session", caps)["sessionId"]
                break
            except (ConnectionError, OSError):
                if time.time() > deadline:
                    sys.exit("chromedriver did not start")
                time.sleep(0.1)

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        c.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"})
        r = c.getresponse()
        data = json.loads(r.read() or b"{}")
        c.close()
        if r.status != 200:
            raise RuntimeError(f"webdriver {path}: {data}")
        return data.get("value", data)

    def s(self, path, body=None, method="POST"):
        return self.call(method, f"/session/{self.session}{path}", body)

    def goto(self, url):
        self.s("/url", {"url": url})

    def js(self, script, *args):
        return self.s("/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        v = self.s("/element", {"using": "css selector", "value": css})
        return next(iter(v.values()))

    def sign_in(self, base, token):
        self.goto(f"{base}/ui/sign-in")
        el = self.find("#token")
        self.s(f"/element/{el}/value", {"text": token})
        self.s(f"/element/{self.find('form button[type=submit]')}/click", {})

    def renderers(self):
        """Chromium's renderer processes (the pages' own processes): (pid, PSS in MiB),
        PSS counting shared pages by share, so that processes do not count the same
        library many times."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                if b"--type=renderer" not in cmd or os.getsid(int(pid)) != os.getsid(self.driver.pid):
                    continue
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    pss = next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
                found.append((int(pid), pss / 1024))
            except (OSError, ValueError, StopIteration):
                continue
        return found

    def tab_mib(self):
        """The memory of the page's tab: the largest renderer's PSS, in MiB."""
        return max((pss for _, pss in self.renderers()), default=0.0)

    def close(self):
        try:
            self.s("", method="DELETE")
        except Exception:
            pass
        try:
            os.killpg(self.driver.pid, 9)
        except OSError:
            pass
        self.driver.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def paint_ms(chrome):
    """When the page's first contentful paint came, in ms after navigation started."""
    deadline = time.time() + 10
    while time.time() < deadline:
        v = chrome.js("const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null")
        if v is not None:
            return v
        time.sleep(0.02)
    return float("nan")


BIG = "line %07.0f of a log that is one hundred megabytes long, padded so that each line holds 100 bytes."


def bench_biglog():
    tmp = tempfile.mkdtemp(prefix="ferry-bench-ui-")
    s = sv.Server(tmp, f"jobs:\n  spew:\n    run: seq -f '{BIG}' 1 1000000\n")
    s.add_repo()
    status, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
    assert status == 201, body
    run_id = json.loads(body)["run"]["id"]
    d = wait_json(s, f"/api/v1/runs/{run_id}", lambda d: d["run"]["status"] == "success", "the run", 300)
    job = d["jobs"][0]
    assert job["log_bytes"] >= 100_000_000, job["log_bytes"]
    base = f"http://127.0.0.1:{s.port}"
    page = f"{base}/ui/runs/{run_id}/jobs/{job['id']}"
    chrome = Chrome()
    try:
        chrome.sign_in(base, s.token)
        time.sleep(0.5)
        chrome.goto("about:blank")
        blank = chrome.tab_mib()
        fcp, dcl, base_fcp = [], [], []
        for _ in range(10):
            chrome.goto("about:blank")
            chrome.goto(page)
            fcp.append(paint_ms(chrome))
            dcl.append(chrome.js("return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
            assert chrome.js("return !!document.getElementById('L1000000')"), "the last line"
            chrome.goto("about:blank")
            chrome.goto(f"{base}/api/v1/runs/{run_id}/jobs/spew/log?tail=1000")
            base_fcp.append(paint_ms(chrome))
        chrome.goto(page)
        first = chrome.tab_mib()
        for i in range(5):
            chrome.js("document.getElementById('log-earlier').click()")
            want = f"L{1000000 - 1000 * (i + 1)}"
            deadline = time.time() + 10
            while not chrome.js(f"return !!document.getElementById('{want}')"):
                assert time.time() < deadline, want
                time.sleep(0.05)
        shown = chrome.js("return document.querySelectorAll('#log-lines .l').length")
        heap = chrome.js("return performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null")
        right_after = chrome.tab_mib()
        # What the tab keeps once the browser has collected what the windows left, on
        # its own (10 s idle), and when asked to (gc()).
        time.sleep(10)
        idle = chrome.tab_mib()
        chrome.js("window.gc && window.gc()")
        time.sleep(2)
        rss = chrome.tab_mib()
        count = len(chrome.renderers())
    finally:
        chrome.close()
        s.stop()
    f50 = statistics.median(fcp)
    sv.finish(tmp, f"biglog    100 MB log, last lines painted p50 {f50:.0f} ms after navigation (max {max(fcp):.0f}; "
                   f"DOMContentLoaded p50 {statistics.median(dcl):.0f} ms)   plain-text tail from the API: p50 "
                   f"{statistics.median(base_fcp):.0f} ms   goal < 300 ms: {'met' if f50 < 300 else 'NOT met'}\n"
                   f"          the tab's renderer {first:.0f} MiB (PSS) with the page as opened; after 5 earlier windows ({shown} lines in the page) {rss:.0f} MiB (PSS; {right_after:.0f} right after, {idle:.0f} 10 s later, then collected; "
                   f"{count} renderers; about:blank's: {blank:.0f} MiB), JS heap {heap or 0:.1f} MiB   goal tab < 100 MB: "
                   f"{'met' if max(first, rss) < 100 else 'NOT met'}")


def bench_live():
    tmp = tempfile.mkdtemp(prefix="ferry-bench-ui-")
    # 10 MB/s: 100 KB (1,000 lines of 100 bytes) every 10 ms, for 10 s, then a last line.
    gen = ("import sys, time\n"
           "line = ('x' * 88 + '\\n')\n"
           "start = time.time()\n"
           "for i in range(1000):\n"
           "    sys.stdout.write(''.join(f'{i * 1000 + j:010d}' + line for j in range(1000)))\n"
           "    sys.stdout.flush()\n"
           "    delay = start + (i + 1) * 0.01 - time.time()\n"
           "    if delay > 0: time.sleep(delay)\n"
           "print('the end after', round(time.time() - start, 2), 's', flush=True)\n")
    os.makedirs(os.path.join(tmp, "gen"), exist_ok=True)
    with open(os.path.join(tmp, "gen", "gen.py"), "w") as f:
        f.write(gen)
    os.chmod(os.path.join(tmp, "gen"), 0o755)
    os.chmod(os.path.join(tmp, "gen", "gen.py"), 0o644)
    s = sv.Server(tmp, f"jobs:\n  spew:\n    run: sleep 2; /usr/bin/python3 {tmp}/gen/gen.py\n",
                  extra=["--sandbox-read", os.path.join(tmp, "gen")])
    s.add_repo()
    base = f"http://127.0.0.1:{s.port}"
    chrome = Chrome()
    try:
        chrome.sign_in(base, s.token)
        status, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
        assert status == 201, body
        run_id = json.loads(body)["run"]["id"]
        d = wait_json(s, f"/api/v1/runs/{run_id}", lambda d: d["jobs"] and d["jobs"][0]["status"] == "running", "the job")
        chrome.goto(f"{base}/ui/runs/{run_id}/jobs/{d['jobs'][0]['id']}")
        seen_at = None
        peak = 0
        deadline = time.time() + 120
        while time.time() < deadline:
            last = chrome.js("const l = document.getElementById('log-lines').lastElementChild;"
                             "return l ? [l.id, l.textContent] : null")
            peak = max(peak, chrome.tab_mib())
            if last and "the end after" in last[1]:
                seen_at = time.time() * 1000
                break
            time.sleep(0.05)
        assert seen_at, "the last line never showed"
        d = wait_json(s, f"/api/v1/runs/{run_id}", lambda d: d["run"]["status"] == "success", "the run")
        job = d["jobs"][0]
        step = d["jobs"][0]
        took = (step["finished_at"] - step["started_at"]) / 1000
        lag = seen_at - job["finished_at"]
        number = int(last[0][1:])
        shown = chrome.js("return document.querySelectorAll('#log-lines .l').length")
    finally:
        chrome.close()
        s.stop()
    rate = 100.0 / max(took - 2, 0.001)
    sv.finish(tmp, f"live      a step printing {rate:.1f} MB/s for 10 s: its last line (line {number:,}) on the page "
                   f"{lag:.0f} ms after the job ended; {shown} lines kept in the page; the tab's renderer peak {peak:.0f} MiB (PSS)   "
                   f"goal: keeps up at 10 MB/s (last line within 1 s): {'met' if lag < 1000 and number == 1_000_001 else 'NOT met'}")


def main():
    if not os.path.exists(sv.FERRY):
        sys.exit(f"{sv.FERRY} not found: build with `cargo build --release -p ferry-cli` or set FERRY_BIN")
    names = sys.argv[1:] or ["render", "assets", "biglog", "live"]
    for n in names:
        {"render": bench_render, "assets": bench_assets, "biglog": bench_biglog, "live": bench_live}[n]()


if __name__ == "__main__":
    main()
