#!/usr/bin/env python3
"""Ferry's benchmarks: each runs Ferry and a baseline side by side, in one run, on the
same machine, and prints the ratio. No network, no Docker. Usage: bench/run.sh [name...]

  steps    100 sequential `true` steps vs the same 100 commands forked by one `sh`
  startup  `ferry run` of a one-step pipeline vs `sh -c true`
  logs     a step printing 100 MB vs the same command redirected to a file; the store's
           growth; `ferry runs` / `ferry logs` / the next run before and after; `ferry logs
           --tail 10` vs `tail -n 10` of the same size of file
  logs-shm the same with both writing to tmpfs, without the disk's drift
  containers  20 container steps each `true` vs 20 `docker run --rm IMAGE true`
  images   `build_image` of a small context (build + push to the local registry), first
           (cold layer cache) and second (cached) time, vs `docker build` + `docker push`
  memory   peak RSS of `ferry run` in all of the above (reported with each)
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

FERRY = os.environ.get("FERRY_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "target"), "release", "ferry"
)


def run(cmd, cwd=None, env=None, stdout=subprocess.DEVNULL):
    """Runs a command; returns (seconds, peak RSS in KiB of the process tree's largest)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    if proc.stderr:
        proc.stderr.close()
    return elapsed, usage.ru_maxrss


def median_time(cmd, reps, **kw):
    times, rss = [], 0
    for _ in range(reps):
        t, m = run(cmd, **kw)
        times.append(t)
        rss = max(rss, m)
    return statistics.median(times), rss


class Repo:
    """A scratch git repository with a pipeline, its store and work dirs in /tmp."""

    def __init__(self, pipeline, base=None):
        self.tmp = tempfile.mkdtemp(prefix="ferry-bench-", dir=base)
        self.dir = os.path.join(self.tmp, "repo")
        os.makedirs(self.dir)
        self.env = dict(os.environ, FERRY_DATA_DIR=os.path.join(self.tmp, "data"),
                        FERRY_WORK_DIR=os.path.join(self.tmp, "work"), NO_COLOR="1")
        git = ["git", "-C", self.dir, "-c", "user.name=b", "-c", "user.email=b@b"]
        subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
        with open(os.path.join(self.dir, ".ferry.yml"), "w") as f:
            f.write(pipeline)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-qm", "bench"], check=True)

    def ferry(self, *args, stdout=subprocess.DEVNULL):
        return run([FERRY, *args], cwd=self.dir, env=self.env, stdout=stdout)

    def ferry_median(self, reps, *args):
        return median_time([FERRY, *args], reps, cwd=self.dir, env=self.env)

    def data_size(self):
        total = 0
        for root, _, files in os.walk(os.path.join(self.tmp, "data")):
            for f in files:
                total += os.path.getsize(os.path.join(root, f))
        return total

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def ms(s):
    return f"{s * 1000:.1f} ms"


def bench_startup():
    repo = Repo("jobs:\n  one:\n    run: 'true'\n")
    repo.ferry("run", "--quiet")  # warm the store (first run creates it)
    base, _ = median_time(["sh", "-c", "true"], 30)
    ferry, rss = repo.ferry_median(30, "run", "--quiet")
    repo.close()
    print(f"startup   ferry run (1 step) {ms(ferry)}   sh -c true {ms(base)}   "
          f"ratio {ferry / base:.1f}x   goal < 15 ms: {'met' if ferry < 0.015 else 'NOT met'}   peak RSS {rss / 1024:.1f} MiB")
    return rss


def bench_steps():
    steps = "".join("      - run: 'true'\n" for _ in range(100))
    repo = Repo("jobs:\n  many:\n    steps:\n" + steps)
    one = Repo("jobs:\n  one:\n    steps:\n      - run: 'true'\n")
    script = "; ".join(["/bin/true"] * 100)
    repo.ferry("run", "--quiet")
    one.ferry("run", "--quiet")
    base, _ = median_time(["sh", "-c", script], 15)
    ferry, rss = repo.ferry_median(15, "run", "--quiet")
    ferry1, _ = one.ferry_median(15, "run", "--quiet")
    repo.close()
    one.close()
    per_step = (ferry - ferry1) / 99
    base_per = base / 100
    overhead = per_step - base_per
    print(f"steps     100 steps {ms(ferry)}   sh with 100 forks {ms(base)}   ratio {ferry / base:.2f}x   "
          f"per step {per_step * 1000:.3f} ms vs {base_per * 1000:.3f} ms -> overhead {overhead * 1000:.3f} ms/step "
          f"(goal <= 0.5 ms: {'met' if overhead <= 0.0005 else 'NOT met'})   peak RSS {rss / 1024:.1f} MiB")
    return rss


def bench_logs():
    size = int(os.environ.get("FERRY_BENCH_LOG_BYTES", 100_000_000))
    cmd = f"yes | head -c {size}"
    repo = Repo(f"jobs:\n  loud:\n    run: {cmd}\n")
    small = Repo("jobs:\n  quiet:\n    run: echo hi\n")
    out = os.path.join(repo.tmp, "baseline.log")
    # Later commands, timed before the big logs exist and after.
    before_runs, _ = median_time([FERRY, "runs"], 10, cwd=repo.dir, env=repo.env)
    size_before = repo.data_size()
    base_times, ferry_times, rss = [], [], 0
    reps = 11
    for i in range(reps):
        # Each side writes a new file, as a log would be, and starts with no dirty pages
        # left by the other: otherwise writeback of earlier reps lands on whoever is next.
        os.sync()
        t, _ = run(["sh", "-c", f"{cmd} > {out}.{i}"])
        base_times.append(t)
        os.sync()
        t, m = repo.ferry("run", "--quiet")
        ferry_times.append(t)
        rss = max(rss, m)
    base, ferry = statistics.median(base_times), statistics.median(ferry_times)
    # Disk speed drifts on a shared machine: the median of each pair's ratio is steadier
    # than the ratio of medians.
    pair_ratio = statistics.median(f / b for f, b in zip(ferry_times, base_times))
    growth = (repo.data_size() - size_before) / reps
    after_runs, _ = median_time([FERRY, "runs"], 10, cwd=repo.dir, env=repo.env)
    logs_time, _ = run([FERRY, "logs", "1", "loud"], cwd=repo.dir, env=repo.env)
    cat_time, _ = run(["cat", f"{out}.0"])
    # The end of a big log: read back from the end, as `tail` does.
    tail_time, _ = median_time([FERRY, "logs", "1", "loud", "--tail", "10"], 10,
                               cwd=repo.dir, env=repo.env)
    coreutils_tail, _ = median_time(["tail", "-n", "10", f"{out}.0"], 10)
    # The next run of a small pipeline in the same store, before and after.
    t_small, _ = median_time([FERRY, "run", "--quiet"], 10, cwd=small.dir, env=small.env)
    small.env["FERRY_DATA_DIR"] = repo.env["FERRY_DATA_DIR"]
    t_small_after, _ = median_time([FERRY, "run", "--quiet"], 10, cwd=small.dir, env=small.env)
    os.sync()
    verbose, _ = repo.ferry("run")
    repo.close()
    small.close()
    print(f"logs      {size / 1e6:.0f} MB: ferry run --quiet {ms(ferry)}   redirect to file {ms(base)}   "
          f"ratio {pair_ratio:.2f}x (median of {reps} paired runs; goal <= 1.2x)   "
          f"with live output to /dev/null {ms(verbose)} ({verbose / base:.2f}x)")
    print(f"          store growth per run {growth / 1e6:.1f} MB for a {size / 1e6:.0f} MB log "
          f"({growth / size:.3f}x)   peak RSS {rss / 1024:.1f} MiB (goal <= 30 MiB)")
    print(f"          ferry runs: {ms(before_runs)} before, {ms(after_runs)} after   "
          f"ferry logs (whole log): {ms(logs_time)} vs cat {ms(cat_time)}   "
          f"next small run: {ms(t_small)} in a fresh store, {ms(t_small_after)} in the big one")
    print(f"          ferry logs --tail 10: {ms(tail_time)} vs tail -n 10 {ms(coreutils_tail)} "
          f"({tail_time / coreutils_tail:.1f}x; both include process start)")
    return rss


def bench_logs_memory():
    """The same comparison with both sides writing to tmpfs: no disk, so the ratio shows
    Ferry's own cost (start-up, the extra pipe hop, indexing) without the disk's drift."""
    if not os.path.isdir("/dev/shm"):
        return 0
    size = int(os.environ.get("FERRY_BENCH_LOG_BYTES", 100_000_000))
    cmd = f"yes | head -c {size}"
    repo = Repo(f"jobs:\n  loud:\n    run: {cmd}\n", base="/dev/shm")
    out = os.path.join(repo.tmp, "baseline.log")
    base_times, ferry_times, rss = [], [], 0
    for _ in range(11):
        t, _ = run(["sh", "-c", f"{cmd} > {out}"])
        base_times.append(t)
        t, m = repo.ferry("run", "--quiet")
        ferry_times.append(t)
        rss = max(rss, m)
        shutil.rmtree(os.path.join(repo.tmp, "data", "logs"), ignore_errors=True)
    repo.close()
    base, ferry = statistics.median(base_times), statistics.median(ferry_times)
    ratio = statistics.median(f / b for f, b in zip(ferry_times, base_times))
    print(f"logs-shm  {size / 1e6:.0f} MB on tmpfs: ferry run --quiet {ms(ferry)}   redirect to file {ms(base)}   "
          f"ratio {ratio:.2f}x (median of 11 paired runs; goal <= 1.2x)   peak RSS {rss / 1024:.1f} MiB")
    return rss


def bench_containers():
    """20 container steps each `true` against 20 `docker run --rm IMAGE true`."""
    image = os.environ.get("FERRY_BENCH_IMAGE", "ferry-test/busybox:latest")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        print(f"containers skipped: image {image} not found (scripts/test.sh builds it; or set FERRY_BENCH_IMAGE)")
        return 0
    steps = "".join("      - run: 'true'\n" for _ in range(20))
    repo = Repo(f"jobs:\n  boxed:\n    image: {image}\n    steps:\n" + steps)
    repo.ferry("run", "--quiet")
    base_times, ferry_times, rss = [], [], 0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(20):
            subprocess.run(["docker", "run", "--rm", image, "true"], check=True, stdout=subprocess.DEVNULL)
        base_times.append(time.perf_counter() - start)
        t, m = repo.ferry("run", "--quiet")
        ferry_times.append(t)
        rss = max(rss, m)
    repo.close()
    base, ferry = statistics.median(base_times), statistics.median(ferry_times)
    print(f"containers 20 container steps {ms(ferry)}   20 x docker run --rm {ms(base)}   ratio {ferry / base:.2f}x "
          f"(goal <= 1.2x)   peak RSS {rss / 1024:.1f} MiB")
    return rss


def bench_images():
    """build_image + push of a small context vs `docker build` + `docker push`."""
    image = os.environ.get("FERRY_BENCH_IMAGE", "ferry-test/busybox:latest")
    registry = os.environ.get("FERRY_BENCH_REGISTRY", "127.0.0.1:5000")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        print(f"images skipped: image {image} not found (scripts/test.sh builds it)")
        return 0
    if subprocess.run(["curl", "-fsS", f"http://{registry}/v2/"], capture_output=True).returncode != 0:
        print(f"images skipped: no registry at {registry} (set FERRY_BENCH_REGISTRY)")
        return 0
    tag = f"{os.getpid()}"
    ferry_name = f"{registry}/ferry-bench/ferry-{tag}"
    base_name = f"{registry}/ferry-bench/docker-{tag}"
    repo = Repo(f"jobs:\n  package:\n    build_image: {{ name: {ferry_name}, context: app }}\n")
    ctx = os.path.join(repo.dir, "app")
    base_ctx = os.path.join(repo.tmp, "base-ctx")
    for d in (ctx, base_ctx):
        os.makedirs(os.path.join(d, "data"))
        for i in range(200):  # ~2 MB of small files
            with open(os.path.join(d, "data", f"f{i}"), "wb") as f:
                f.write(os.urandom(10_000))

    def dockerfile(nonce):
        # Different first layers for Ferry and the baseline: neither reuses the other's cache.
        for who, d in (("ferry", ctx), ("docker", base_ctx)):
            with open(os.path.join(d, "Dockerfile"), "w") as f:
                f.write(f"FROM {image}\nRUN echo {who}-{nonce} > /nonce && for i in $(seq 1 100); do echo $i > /n$i; done\n"
                        "COPY data /data\nRUN ls /data | wc -l > /count\n")

    def docker_cli(n, labelled=True):
        env = dict(os.environ, DOCKER_BUILDKIT="0")  # the classic builder, as Ferry uses
        # The same job as Ferry's: label the image with the commit and the run.
        labels = ["--label", "org.opencontainers.image.revision=0",
                  "--label", f"run={n}-{time.time_ns()}"] if labelled else []
        start = time.perf_counter()
        subprocess.run(["docker", "build", "-q", *labels, "-t", f"{base_name}:{n}", base_ctx], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        subprocess.run(["docker", "push", "-q", f"{base_name}:{n}"], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    cold_f, cold_b, warm_f, warm_b, warm_plain, rss = [], [], [], [], [], 0
    for round_ in range(3):
        dockerfile(f"{tag}-{round_}-{time.time_ns()}")  # a new first layer: nothing cached
        t, m = repo.ferry("run", "--quiet")
        cold_f.append(t)
        rss = max(rss, m)
        cold_b.append(docker_cli(f"cold{round_}"))
        t, m = repo.ferry("run", "--quiet")  # the same context again: every layer cached
        warm_f.append(t)
        warm_b.append(docker_cli(f"warm{round_}"))
        warm_plain.append(docker_cli(f"plain{round_}", labelled=False))
    repo.close()
    # Only the images the benchmark made; the base image stays.
    listed = subprocess.run(["docker", "images", "-q", "--filter", f"reference={registry}/ferry-bench/*"],
                            capture_output=True, text=True).stdout.split()
    if listed:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(listed))], capture_output=True)
    cf, cb = statistics.median(cold_f), statistics.median(cold_b)
    wf, wb = statistics.median(warm_f), statistics.median(warm_b)
    print(f"images    build+push, cold cache: ferry run {ms(cf)}   docker build+push {ms(cb)}   ratio {cf / cb:.2f}x")
    wp = statistics.median(warm_plain)
    print(f"images    build+push, cached:     ferry run {ms(wf)}   docker build+push {ms(wb)}   ratio {wf / wb:.2f}x"
          f"   peak RSS {rss / 1024:.1f} MiB")
    print(f"images    (docker build+push without the run's labels, so fully cached: {ms(wp)}; ratio {wf / wp:.2f}x)")
    return rss


def main():
    if not os.path.exists(FERRY):
        sys.exit(f"{FERRY} not found: build with `cargo build --release -p ferry-cli` or set FERRY_BIN")
    names = sys.argv[1:] or ["startup", "steps", "logs", "logs-shm", "containers", "images"]
    print(f"ferry binary: {FERRY}; machine: {os.cpu_count()} CPUs")
    peaks = []
    for name in names:
        peaks.append({"startup": bench_startup, "steps": bench_steps, "logs": bench_logs,
                      "logs-shm": bench_logs_memory, "containers": bench_containers,
                      "images": bench_images}[name]())
    print(f"memory    peak RSS of ferry run across these: {max(peaks) / 1024:.1f} MiB (goal <= 30 MiB)")


if __name__ == "__main__":
    main()
