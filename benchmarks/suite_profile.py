"""Where a test run's CPU goes, and where the CPUs stand idle: runs pytest with the given
arguments in a child process, reads every process's CPU time from /proc twice a second (grouped
by kind: the pytest process, Ray's workers by what they run, Ray's daemons, servers) and the
machine's idle time each second, and joins the idle time to the test that was running.

    .venv/bin/python benchmarks/suite_profile.py tests/deploy tests/test_bad_input.py
    .venv/bin/python benchmarks/suite_profile.py            # the whole suite (about 40 min)

Linux only (/proc). Run it alone: another job's CPU would be counted as the suite's. The module
is also the pytest plugin that writes each test's start and end (loaded with -p in the child).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMES_ENV = "SUITE_PROFILE_TIMES"
HZ = os.sysconf("SC_CLK_TCK")
DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env",
           "moto", "mlflow")


# --- the plugin, in the pytest child -----------------------------------------------------------
def _mark(kind: str, nodeid: str) -> None:
    with open(os.environ[TIMES_ENV], "a") as f:
        f.write(f"{time.time():.3f} {kind} {nodeid}\n")


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    if TIMES_ENV in os.environ:
        _mark("start", nodeid)


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    if TIMES_ENV in os.environ:
        _mark("end", nodeid)


# --- the sampler, in this process ----------------------------------------------------------------
def _kind(pid: int, pytest_pid: int) -> str | None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    if pid == pytest_pid:
        return "pytest"
    if comm.startswith("ray::"):
        return comm  # what a Ray worker runs (a task, an actor's class, IDLE)
    if "default_worker.py" in cmd:
        return "ray worker starting"
    for name in DAEMONS:
        if name in cmd:
            return name
    return "other: " + comm


def _ticks(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[11]) + int(fields[12]), stat[stat.find("(") + 1:stat.rfind(")")]


def _machine() -> tuple[int, int]:
    """(all, idle) CPU ticks of the machine so far."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values), values[3]


def main(args: list[str]) -> None:
    times = Path(tempfile.mkstemp(suffix=".txt")[1])
    env = {**os.environ, TIMES_ENV: str(times),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    before = {int(d): t for d in os.listdir("/proc") if d.isdigit() and (t := _ticks(int(d)))}
    started, (all0, idle0) = time.time(), _machine()
    child = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "suite_profile", "-q", *args],
                             cwd=REPO, env=env)
    seen: dict[int, list] = {}  # pid -> [kind, ticks counted, comm]
    cpu: collections.Counter[str] = collections.Counter()
    idle_at: list[tuple[float, float]] = []
    last_all, last_idle, last_second = all0, idle0, time.time()
    while child.poll() is None:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            now = _ticks(pid)
            if now is None:
                continue
            ticks, comm = now
            entry = seen.get(pid)
            if entry is None or entry[2] != comm:  # new, or a worker that took on a task
                kind = _kind(pid, child.pid)
                if kind is None:
                    continue
                base = entry[1] if entry else before.get(pid, (0, ""))[0]
                entry = seen[pid] = [kind, base, comm]
            cpu[entry[0]] += ticks - entry[1]
            entry[1] = ticks
        if time.time() - last_second >= 1.0:
            total, idle = _machine()
            idle_at.append((time.time(), (idle - last_idle) / max(total - last_all, 1)))
            last_all, last_idle, last_second = total, idle, time.time()
        time.sleep(0.5)
    wall = time.time() - started
    total, idle = _machine()
    n_cpus = os.cpu_count() or 1
    print(f"\n{wall:.0f} s, {n_cpus} CPUs idle {(idle - idle0) / max(total - all0, 1):.1%} of the time")
    print("CPU-seconds by process kind:")
    for kind, ticks in cpu.most_common(20):
        if ticks > 0:
            print(f"  {ticks / HZ:8.1f}  {kind}")

    opened, rows = {}, []
    for line in times.read_text().splitlines():
        at, what, node = line.split(" ", 2)
        if what == "start":
            opened[node] = float(at)
        elif node in opened:
            begin, end = opened.pop(node), float(at)
            share = [v for t, v in idle_at if begin <= t <= end]
            mean = sum(share) / len(share) if share else 0.0
            rows.append((mean * (end - begin) * n_cpus, end - begin, mean, node))
    times.unlink()
    print("Idle CPU-seconds by test (the machine's idle time while the test ran):")
    for idle_s, seconds, mean, node in sorted(rows, reverse=True)[:20]:
        print(f"  {idle_s:7.1f}  {seconds:7.1f} s  {mean:4.0%}  {node}")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
