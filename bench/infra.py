#!/usr/bin/env python3
"""Benchmarks of provisioning (issue 14), each against a baseline in the same run:

  terraform  a release's Terraform planned and applied by `ferry serve` for an
             automatic environment (the deployment's start -> "terraform: applied" in
             its log: materializing the release, the sandbox, credentials, init, plan,
             the sealed plan stored, apply, outputs read), p50 over 15 releases that
             each change every resource; baseline: `terraform plan -out` and `apply`
             of the same module by hand (local state, initialized: `init` is timed on
             its own and shown beside) for the same 15 changes
  swarm      a release's compose file deployed as a Swarm stack by `ferry serve` (the
             deployment's start -> every task of the new spec running, as its log says:
             materializing the release, loading the compose file, configs and secrets,
             the service updated through the Engine API, the rolling update of 2
             replicas), p50 over the releases after the first; baseline: `docker stack
             deploy` of the same compose file with the same image digest by hand, until
             the engine says every task runs the new digest (polled every 20 ms).
             Needs a swarm (`docker swarm init --advertise-addr 127.0.0.1`), the
             registry on 127.0.0.1:5000 and the base image (scripts/test.sh makes both)

Usage: bench/run.sh infra [terraform] [swarm]   (or FERRY_BIN=... FERRY_TERRAFORM=... python3 bench/infra.py [name...])
       FERRY_BENCH_PHASES=1 prints each deployment's log marks; FERRY_BENCH_EXTRA adds
       `ferry serve` flags (e.g. "--deploy-sandbox off")
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from serve import Server, finish, git, pct  # noqa: E402

TERRAFORM = os.environ.get("FERRY_TERRAFORM") or "/usr/local/bin/terraform"
RELEASES = int(os.environ.get("FERRY_BENCH_RELEASES", "15"))

MODULE = """variable "rev" {
  type    = string
  default = "0"
}
resource "terraform_data" "a" { input = "a-${var.rev}" }
resource "terraform_data" "b" { input = "b-${var.rev}" }
resource "terraform_data" "c" { input = "c-${var.rev}" }
resource "terraform_data" "d" { input = "d-${var.rev}" }
resource "terraform_data" "e" { input = "e-${var.rev}" }
output "url" { value = "http://127.0.0.1/${terraform_data.a.output}" }
"""

PIPELINE = """jobs:
  build:
    run: mkdir -p out && cat rev > out/rev
    artifacts: [out]
release: { artifacts: [build] }
environments:
  sandbox:
    auto: true
    infra: { dir: infra, vars: { rev: "${{ release.id }}" } }
deploy:
  target: { script: { run: "true" } }
"""


def stamp(line):
    """The time of a deployment log line (its RFC 3339 prefix), in seconds."""
    s = line.split(" ", 1)[0]
    t = time.mktime(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return t + float("0" + s[19:-1])


def bench_terraform():
    tmp = tempfile.mkdtemp(prefix="ferry-bench-infra-")
    os.environ["FERRY_TERRAFORM"] = TERRAFORM
    s = Server(tmp, PIPELINE, extra=os.environ.get("FERRY_BENCH_EXTRA", "").split())
    work = os.path.join(tmp, "work-tree")
    os.makedirs(os.path.join(work, "infra"))
    with open(os.path.join(work, "infra", "main.tf"), "w") as f:
        f.write(MODULE)
    s.add_repo()
    # The baseline: the same module and the same changes by hand, local state, in a
    # working copy initialized once (as a user's is). Each release is measured right
    # after Ferry's, so that the machine's drift in speed weighs on both alike.
    hand = os.path.join(tmp, "by-hand")
    os.makedirs(hand)
    with open(os.path.join(hand, "main.tf"), "w") as f:
        f.write(MODULE)
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0")

    def by_hand(i):
        timed = []
        for args in (["init", "-input=false", "-no-color"],
                     ["plan", "-input=false", "-no-color", "-out=p", f"-var=rev=r{i}"],
                     ["apply", "-input=false", "-no-color", "p"]):
            t = time.perf_counter()
            subprocess.run([TERRAFORM, *args], cwd=hand, env=env, check=True, capture_output=True)
            timed.append((time.perf_counter() - t) * 1000)
        return timed

    took, base, with_init = [], [], []
    for i in range(1, RELEASES + 1):
        with open(os.path.join(work, "rev"), "w") as f:
            f.write(f"{i}\n")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"rev {i}", cwd=work)
        git("push", "-q", s.bare, "main", cwd=work)
        status, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
        assert status == 201, body
        deadline = time.time() + 120
        while time.time() < deadline:
            _, body = s.call("GET", "/api/v1/repos/app/deployments?environment=sandbox")
            deps = json.loads(body)["deployments"]
            if deps and deps[0]["number"] == i and deps[0]["status"] in ("live", "failed"):
                d = deps[0]
                assert d["status"] == "live", d
                _, log = s.call("GET", f"/api/v1/repos/app/deployments/sandbox.{i}/log")
                lines = log.decode().splitlines()
                applied = [stamp(x) for x in lines if "terraform: applied" in x]
                assert applied, log.decode()
                took.append(applied[-1] * 1000 - d["started_at"])
                if os.environ.get("FERRY_BENCH_PHASES"):
                    marks = [(round(stamp(x) * 1000 - d["started_at"]), x.split(" ", 1)[1][:40])
                             for x in lines if x[:4].isdigit()]
                    print(marks)
                break
            time.sleep(0.02)
        else:
            sys.exit("a release did not go live")
        timed = by_hand(i)
        base.append(timed[1] + timed[2])
        with_init.append(sum(timed))
    s.stop()
    f50, b50, i50 = statistics.median(took), statistics.median(base), statistics.median(with_init)
    # The goal is against `plan` + `apply` by hand; `init` + `plan` + `apply` is shown too.
    ratio = f50 / b50
    finish(tmp, f"terraform deployment start -> applied: p50 {f50:.0f} ms, max {max(took):.0f} ms "
                f"({len(took)} releases)   plan + apply by hand: p50 {b50:.0f} ms   "
                f"ratio {ratio:.2f}x   goal <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}   "
                f"(init + plan + apply by hand: p50 {i50:.0f} ms, ratio {f50 / i50:.2f}x)")


SWARM_PIPELINE = """jobs:
  image:
    run: |
      mkdir -p ctx/www && cat rev > ctx/www/healthz
      printf 'FROM BASE\\nCOPY www /www\\n' > ctx/Dockerfile
    build_image: { name: NAME, context: ctx }
release: { images: [image] }
environments:
  sandbox: { auto: true }
deploy:
  target: { swarm: { compose: compose.yml, stack: benchferry } }
"""

SWARM_COMPOSE = """services:
  web:
    image: IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
    configs: [{ source: conf, target: /etc/app.conf }]
    deploy: { replicas: 2 }
configs:
  conf: { file: ./conf.txt }
"""


class Engine(http.client.HTTPConnection):
    """The Docker Engine API on its Unix socket."""

    def __init__(self):
        super().__init__("localhost", timeout=30)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect("/var/run/docker.sock")


def engine_get(path):
    c = Engine()
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return json.loads(body)


def tasks_running(service, digest, replicas):
    """Whether every replica of `service` is a running task of `digest`, and none other runs."""
    filters = urllib.parse.quote(json.dumps({"service": [service], "desired-state": ["running"]}))
    tasks = engine_get(f"/tasks?filters={filters}")
    new = [t for t in tasks if digest in t["Spec"]["ContainerSpec"]["Image"]]
    return (len(new) >= replicas and len(tasks) == len(new)
            and all(t["Status"]["State"] == "running" for t in new))


def bench_swarm():
    base = os.environ.get("FERRY_BENCH_IMAGE", "ferry-test/busybox:latest")
    registry = os.environ.get("FERRY_BENCH_REGISTRY", "127.0.0.1:5000")
    name = f"{registry}/ferry-bench/stacked-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="ferry-bench-swarm-")
    s = Server(tmp, SWARM_PIPELINE.replace("BASE", base).replace("NAME", name))
    work = os.path.join(tmp, "work-tree")
    with open(os.path.join(work, "compose.yml"), "w") as f:
        f.write(SWARM_COMPOSE.replace("IMAGE", name + ":latest"))
    s.add_repo()
    took, digests = [], []
    try:
        for i in range(1, RELEASES + 1):
            for file in ("rev", "conf.txt"):
                with open(os.path.join(work, file), "w") as f:
                    f.write(f"ok {i}\n")
            git("add", "-A", cwd=work)
            git("commit", "-q", "-m", f"rev {i}", cwd=work)
            git("push", "-q", s.bare, "main", cwd=work)
            status, body = s.call("POST", "/api/v1/repos/app/runs", {"ref": "main"})
            assert status == 201, body
            deadline = time.time() + 300
            while time.time() < deadline:
                _, body = s.call("GET", "/api/v1/repos/app/deployments?environment=sandbox")
                deps = json.loads(body)["deployments"]
                if deps and deps[0]["number"] == i and deps[0]["status"] in ("live", "failed"):
                    d = deps[0]
                    _, log = s.call("GET", f"/api/v1/repos/app/deployments/sandbox.{i}/log")
                    assert d["status"] == "live", (d, log.decode())
                    lines = log.decode().splitlines()
                    running = [stamp(x) for x in lines if ": running" in x]
                    assert running, log.decode()
                    if i > 1:
                        took.append(running[-1] * 1000 - d["started_at"])
                    _, body = s.call("GET", "/api/v1/repos/app/environments")
                    env = [e for e in json.loads(body)["environments"] if e["name"] == "sandbox"][0]
                    digests.append(env["live"]["images"][0]["digest"])
                    if os.environ.get("FERRY_BENCH_PHASES"):
                        print([(round(stamp(x) * 1000 - d["started_at"]), x.split(" ", 1)[1][:50])
                               for x in lines if x[:4].isdigit()])
                    break
                time.sleep(0.02)
            else:
                sys.exit("a release did not go live")
        s.stop()
        # Baseline: the same compose file, each release's digest, by hand.
        hand = os.path.join(tmp, "hand.yml")
        base_ms = []
        for i, digest in enumerate(digests, start=1):
            with open(hand, "w") as f:
                # Swarm's configs are immutable: by hand, each new content needs a new
                # name (Ferry names them by content itself).
                f.write(SWARM_COMPOSE.replace("IMAGE", f"{name}@{digest}")
                        .replace("file: ./conf.txt", f"file: ./conf.txt, name: benchhand_conf_{i}"))
            with open(os.path.join(tmp, "conf.txt"), "w") as f:
                f.write(f"ok {i}\n")
            t = time.perf_counter()
            subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "--detach=true",
                            "-c", hand, "benchhand"], check=True, capture_output=True)
            deadline = time.time() + 300
            while not tasks_running("benchhand_web", digest, 2):
                if time.time() > deadline:
                    sys.exit("the stack deployed by hand did not run")
                time.sleep(0.02)
            if i > 1:
                base_ms.append((time.perf_counter() - t) * 1000)
    finally:
        for stack in ("benchferry", "benchhand"):
            subprocess.run(["docker", "stack", "rm", stack], capture_output=True)
    f50, b50 = statistics.median(took), statistics.median(base_ms)
    ratio = f50 / b50
    finish(tmp, f"swarm deployment start -> all tasks running: p50 {f50:.0f} ms, max {max(took):.0f} ms "
                f"({len(took)} updates)   docker stack deploy by hand: p50 {b50:.0f} ms   "
                f"ratio {ratio:.2f}x   goal <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}")


BENCHES = {"terraform": bench_terraform, "swarm": bench_swarm}

if __name__ == "__main__":
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[0]}")
    for name in sys.argv[1:] or list(BENCHES):
        BENCHES[name]()
