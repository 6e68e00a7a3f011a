"""Benchmarks: our tools side by side with what an admin would run by hand.

Each registered bench times our way and a baseline in the same run,
interleaved (ours first on even runs, baseline first on odd ones) so machine
drift and cache warm-up hit both sides alike, and reports the medians.
Results go to bench/results.json as [{name, ours_s, baseline, baseline_s, ratio}].

    .venv/bin/python bench/run.py [--runs N] [--only NAME] [--out PATH]

To add a bench, decorate `fn(ctx: Ctx) -> dict` with `@bench("name")` and
return `compare(...)`; clusters come from `ctx.slot()` and are always torn down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
GNT_STORAGE = os.path.join(VENV_BIN, "gnt-storage")
MANUAL_BOOTSTRAP = os.path.join(REPO, "bench", "manual-bootstrap.sh")
SCRATCH = "/tmp/ganeti-ceph-bench"
PORT_BASE = 14300  # tests use 13300; each cluster slot takes 100 ports
PORT_SPAN = 100

Result = dict[str, object]


class BenchError(Exception):
    """A measured command failed; the bench is reported as failed."""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def clean_env() -> dict[str, str]:
    """Same minimal environment for both sides: no CEPH_ARGS, CEPH_CONF or the like leaking in."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": os.environ.get("HOME", "/root")}


def time_cmd(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300.0) -> float:
    """Wall-clock seconds of one process, start to exit; raise BenchError unless it exits 0.

    The child gets its own process group so that on timeout or Ctrl-C we can
    kill it and everything it spawned (daemons detach themselves; see kill_cluster).
    """
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=clean_env() if env is None else env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        _killpg(proc)
        raise
    took = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n    ".join(out.decode(errors="replace").strip().splitlines()[-15:])
        raise BenchError(f"{os.path.basename(argv[0])} exited {proc.returncode}:\n    {tail}")
    return took


def _killpg(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_quiet(argv: list[str], timeout: float = 120.0) -> None:
    """Run an untimed helper (set-up, tear-down); failures are logged, not raised."""
    try:
        res = subprocess.run(argv, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        log(f"{' '.join(argv)} timed out")
        return
    if res.returncode != 0:
        log(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()[-300:]}")


def median_of(n: int, fn: Callable[[], float]) -> float:
    """Median of n calls of fn (each returning seconds)."""
    return statistics.median(fn() for _ in range(n))


def compare(name: str, baseline: str, runs: int, ours: Callable[[], float], base: Callable[[], float]) -> Result:
    """Interleave n runs of each side, log each sample, return the medians as a result row."""
    samples: dict[str, list[float]] = {"ours": [], baseline: []}
    for i in range(runs):
        order = [("ours", ours), (baseline, base)]
        for side, fn in order if i % 2 == 0 else reversed(order):
            took = fn()
            samples[side].append(took)
            log(f"{name} run {i + 1}/{runs}: {side:<18} {took:8.3f} s")
    ours_s, base_s = statistics.median(samples["ours"]), statistics.median(samples[baseline])
    return {"name": name, "ours_s": round(ours_s, 3), "baseline": baseline, "baseline_s": round(base_s, 3),
            "ratio": round(ours_s / base_s, 3)}


# -- clusters: scratch slots and a tear-down that cannot miss a daemon ---------

def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def pids_using(conf: str) -> list[int]:
    """Live processes with `conf` as an argument: a cluster's daemons and any tool still talking to it.

    Scanning /proc rather than trusting pid files also catches a daemon killed
    mid-start before it wrote one. Zombies are skipped (PID 1 here never reaps).
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if conf.encode() in args and _proc_state(int(entry)) not in (None, "Z"):
            found.append(int(entry))
    return found


def kill_cluster(root: str, timeout: float = 30.0) -> None:
    """SIGKILL every process using root/ceph.conf, wait until gone, then remove root."""
    conf = os.path.join(root, "ceph.conf")
    deadline = time.monotonic() + timeout
    while pids := pids_using(conf):
        if time.monotonic() > deadline:
            raise BenchError(f"processes {pids} using {conf} would not die")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Ctx:
    """What a bench gets: its run count and scratch cluster slots (dir + port range)."""

    runs: int
    slots: list[str] = field(default_factory=list)

    def slot(self, name: str) -> tuple[str, int]:
        """A fresh dir under SCRATCH and a base port of its own; remains of an earlier run are wiped."""
        root = os.path.join(SCRATCH, name)
        if root not in self.slots:
            self.slots.append(root)
        kill_cluster(root)
        return root, PORT_BASE + PORT_SPAN * self.slots.index(root)

    def teardown(self) -> None:
        for root in self.slots:
            kill_cluster(root)


# -- the registry ---------------------------------------------------------------

@dataclass(frozen=True)
class Bench:
    name: str
    fn: Callable[[Ctx], Result]
    runs: int


BENCHES: list[Bench] = []


def bench(name: str, runs: int = 3) -> Callable[[Callable[[Ctx], Result]], Callable[[Ctx], Result]]:
    """Register fn as bench `name`, with `runs` samples per side unless --runs says otherwise."""
    def register(fn: Callable[[Ctx], Result]) -> Callable[[Ctx], Result]:
        BENCHES.append(Bench(name, fn, runs))
        return fn
    return register


@bench("local-cluster-up", runs=3)
def local_cluster_up(ctx: Ctx) -> Result:
    """The whole `gnt-storage local-cluster up` process until it returns at HEALTH_OK, versus the
    same cluster brought up by hand, step by step with the stock CLI (bench/manual-bootstrap.sh)."""
    ours_dir, ours_port = ctx.slot("local-cluster-up-ours")
    base_dir, base_port = ctx.slot("local-cluster-up-manual")

    def ours() -> float:
        try:
            return time_cmd([GNT_STORAGE, "local-cluster", "up", "--dir", ours_dir, "--port", str(ours_port)])
        finally:
            run_quiet([GNT_STORAGE, "local-cluster", "down", "--dir", ours_dir])
            kill_cluster(ours_dir)

    def manual() -> float:
        try:
            return time_cmd([MANUAL_BOOTSTRAP, base_dir, str(base_port)])
        finally:
            kill_cluster(base_dir)

    return compare("local-cluster-up", "manual-bootstrap", ctx.runs, ours, manual)


# -- main ---------------------------------------------------------------------

def table(results: list[Result]) -> str:
    head = f"{'name':<24} {'ours_s':>9}  {'baseline':<20} {'baseline_s':>10} {'ratio':>7}"
    rows = [f"{r['name']:<24} {r['ours_s']:>9.3f}  {r['baseline']:<20} {r['baseline_s']:>10.3f} {r['ratio']:>7.3f}"
            for r in results]
    return "\n".join([head, "-" * len(head), *rows])


def write_results(path: str, results: list[Result], merge: bool) -> None:
    """Write results; with --only, keep the other benches' rows from the previous file."""
    if merge and os.path.exists(path):
        with open(path) as fh:
            old = {r["name"]: r for r in json.load(fh)}
        old.update({r["name"]: r for r in results})
        order = [b.name for b in BENCHES]
        results = sorted(old.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(results, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help="samples per side (default: per bench, 3 for local-cluster-up)")
    parser.add_argument("--only", choices=[b.name for b in BENCHES], help="run only this bench")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results.json"), help="results file")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally below still stops every cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: list[Result] = []
    failed: list[str] = []
    for b in BENCHES:
        if args.only and b.name != args.only:
            continue
        ctx = Ctx(runs=args.runs or b.runs)
        log(f"{b.name}: {ctx.runs} runs per side")
        try:
            results.append(b.fn(ctx))
        except BenchError as exc:
            log(f"{b.name} FAILED: {exc}")
            failed.append(b.name)
        except KeyboardInterrupt:
            log("interrupted; stopping clusters")
            return 130
        finally:
            ctx.teardown()
    if results:
        write_results(args.out, results, merge=bool(args.only))
        print(table(results), file=sys.stderr)
        log(f"wrote {args.out}")
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
