"""The bench harness: timing, side-by-side comparison, scratch clusters, the registry.

bench/run.py is the entry point; benches live there and in modules it
imports (bench/provider.py). A bench is `fn(ctx: Ctx) -> Result`,
registered with `@bench("name")`, returning `compare(...)`. Clusters come
from `ctx.slot()` (torn down after the bench) or, when several benches
share one, from `ctx.shared` (torn down at the end of the run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run as bench/run.py: the project's packages (ganeti_ceph, testbed) too

from ganeti_ceph import procs  # noqa: E402

VENV_BIN = os.path.join(REPO, ".venv", "bin")
GNT_STORAGE = os.path.join(VENV_BIN, "gnt-storage")
# Beside the test bed's dir and 1000 ports above the tests' cluster port, so that runs given other
# GANETI_TESTBED_DIR / GANETI_CEPH_TEST_PORT values never meet (defaults: /tmp/ganeti-ceph-bench, 14300).
SCRATCH = os.environ.get("GANETI_TESTBED_DIR", "/tmp/ganeti-ceph").rstrip("/") + "-bench"
PORT_BASE = int(os.environ.get("GANETI_CEPH_TEST_PORT", "13300")) + 1000  # each cluster slot takes 100 ports
PORT_SPAN = 100
SHARED_PORT_BASE = PORT_BASE + 10 * PORT_SPAN  # slots that live across benches: their own ports

T = TypeVar("T")

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


def compare(name: str, baseline: str, runs: int, ours: Callable[[], float], base: Callable[[], float],
            base_runs: int | None = None) -> Result:
    """Interleave n runs of each side, log each sample, return the medians as a result row.

    base_runs < runs samples a slow baseline only in the first base_runs rounds.
    """
    samples: dict[str, list[float]] = {"ours": [], baseline: []}
    for i in range(runs):
        order = [("ours", ours), (baseline, base)]
        if base_runs is not None and i >= base_runs:
            order = order[:1]
        for side, fn in order if i % 2 == 0 else reversed(order):
            took = fn()
            samples[side].append(took)
            log(f"{name} run {i + 1}/{runs}: {side:<18} {took:8.3f} s")
    ours_s, base_s = statistics.median(samples["ours"]), statistics.median(samples[baseline])
    return {"name": name, "ours_s": round(ours_s, 3), "baseline": baseline, "baseline_s": round(base_s, 3),
            "ratio": round(ours_s / base_s, 3)}


# -- clusters: scratch slots and a tear-down that cannot miss a daemon ---------

def pids_using(conf: str) -> list[int]:
    """Live processes with `conf` as an argument: a cluster's daemons and any tool still talking to it.

    Scanning /proc rather than trusting pid files also catches a daemon killed
    mid-start before it wrote one.
    """
    return [pid for pid in procs.find(arg=conf) if pid != os.getpid()]


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
class Slots:
    """Scratch cluster slots: a dir under SCRATCH and a range of ports each; all killed by teardown."""

    port_base: int = PORT_BASE
    roots: list[str] = field(default_factory=list)

    def slot(self, name: str) -> tuple[str, int]:
        """A fresh dir under SCRATCH and a base port of its own; remains of an earlier run are wiped."""
        root = os.path.join(SCRATCH, name)
        if root not in self.roots:
            self.roots.append(root)
        kill_cluster(root)
        return root, self.port_base + PORT_SPAN * self.roots.index(root)

    def teardown(self) -> None:
        for root in self.roots:
            kill_cluster(root)


class Shared:
    """Fixtures several benches use (one cluster for many), made on first use, closed at the end of the run.

    A fixture that failed to come up fails every bench asking for it, without a second try.
    """

    def __init__(self) -> None:
        self.slots = Slots(SHARED_PORT_BASE)
        self._made: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []

    def get(self, name: str, make: Callable[[Shared], T]) -> T:
        if name not in self._made:
            try:
                self._made[name] = make(self)
            except BenchError as exc:
                self._made[name] = BenchError(f"{name} did not come up: {exc}")
        value = self._made[name]
        if isinstance(value, BenchError):
            raise value
        return value

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run fn at close (last registered first); what fn raises is logged, not raised."""
        self._closers.append(fn)

    def close(self) -> None:
        try:
            while self._closers:
                fn = self._closers.pop()
                try:
                    fn()
                except Exception as exc:
                    log(f"clean-up step failed: {exc}")
        finally:
            self.slots.teardown()


@dataclass
class Ctx:
    """What a bench gets: its run count, scratch cluster slots of its own, and the run's shared fixtures."""

    runs: int
    shared: Shared = field(default_factory=Shared)
    slots: Slots = field(default_factory=Slots)

    def slot(self, name: str) -> tuple[str, int]:
        return self.slots.slot(name)

    def teardown(self) -> None:
        self.slots.teardown()


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
