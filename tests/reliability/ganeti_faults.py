"""Tools of the Ganeti fault scenarios (test_ganeti_faults.py): a writer that logs what was acknowledged,
link cuts, job times, fences and leak counts, all read from the real bed.

The fake hypervisor has no guest, so the writer stands in for one: it runs
inside the primary node and writes 4 KiB blocks to the instance's disk
(the loop device of its fuse-loop mapping), each block's content derived
from (run, sequence number); a block counts as acknowledged once its
fdatasync returned and its number is in the node's log. Verification reads
the blocks back from Ceph itself (librbd, admin key, read-only): what is
there is what any next primary would see.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from ganeti_ceph import procs
from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed import netns, nodefs
from testbed.ganeti import Testbed
from tests.ganeti import checks

BLOCK = 4096
WRITER = """
import hashlib, os, sys
dev, log, run, start, count, stop = sys.argv[1:7]
fd = os.open(dev, os.O_RDWR)
out = open(log, "a")
for seq in range(int(start), int(start) + int(count)):
    if os.path.exists(stop):
        break
    os.pwrite(fd, hashlib.sha256(f"{run}:{seq}".encode()).digest() * 128, seq * 4096)
    os.fdatasync(fd)
    out.write(f"{seq}\\n")
    out.flush()
    os.fsync(out.fileno())
"""
OPEN_PREFIX = "ganeti.open."
EXTSTORAGE_LOGS = "/var/log/ganeti/extstorage"


def block(run: str, seq: int) -> bytes:
    return hashlib.sha256(f"{run}:{seq}".encode()).digest() * (BLOCK // 32)


@dataclass
class Writer:
    """One writer run on node `index`: its log lives in the node's /srv (host: <node dir>/srv)."""

    tb: Testbed
    index: int
    run: str
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> str:
        return self.tb.nodes[self.index].path("srv", f"writer-{self.run}.log")

    @property
    def stop_file(self) -> str:
        return self.tb.nodes[self.index].path("srv", f"writer-{self.run}.stop")

    def start(self, device: str, count: int) -> None:
        """Write `count` blocks to `device` in the background (stop with `stop`)."""
        for path in (self.log, self.stop_file):
            if os.path.exists(path):
                os.unlink(path)
        srv = f"/srv/writer-{self.run}"
        self.proc = subprocess.Popen([*self.tb.enter_argv(self.index), "python3", "-c", WRITER, device,
                                      f"{srv}.log", self.run, "0", str(count), f"{srv}.stop"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=netns.node_env())

    def wait(self, timeout: float) -> None:
        """Until the writer ended by itself (all blocks acknowledged)."""
        assert self.proc, "writer not started"
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"writer failed: {err.decode()[-500:]}"

    def wait_acked(self, n: int, timeout: float = 30) -> None:
        checks.wait_for(f"{n} acknowledged writes", lambda: len(self.acked()) >= n, timeout)

    def stop(self) -> None:
        """Ask the writer to stop, and kill it if it hangs in I/O (a cut or fenced disk)."""
        with open(self.stop_file, "w"):
            pass
        if self.proc is None:
            return
        try:
            self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):  # in D state until its I/O fails: let it be
                self.proc.communicate(timeout=30)

    def pids(self) -> list[int]:
        """Host pids of this writer's python inside the node."""
        ns = netns.pidns(self.tb.holder(self.index).pid) or ""
        return [p for p in netns.members(ns) if WRITER in procs.cmdline(p) and self.run in procs.cmdline(p)]

    def acked(self) -> list[int]:
        try:
            with open(self.log) as fh:
                return [int(line) for line in fh.read().split("\n")[:-1]]  # a torn last line is not an ack
        except OSError:
            return []


def lost(admin: Config, pool: str, volume: str, run: str, acked: list[int]) -> list[int]:
    """Acknowledged blocks that do not read back from Ceph exactly as written."""
    import rbd

    with Session(admin) as s, s.ioctx(pool) as io, rbd.Image(io, volume, read_only=True) as img:
        return [seq for seq in acked if img.read(seq * BLOCK, BLOCK) != block(run, seq)]


def digest(admin: Config, pool: str, volume: str, nblocks: int) -> str:
    """A hash of the first `nblocks` blocks as Ceph has them."""
    import rbd

    with Session(admin) as s, s.ioctx(pool) as io, rbd.Image(io, volume, read_only=True) as img:
        return hashlib.sha256(img.read(0, nblocks * BLOCK)).hexdigest()


# -- cuts ----------------------------------------------------------------------------------

def cut_ceph(tb: Testbed, index: int, cut: bool = True) -> None:
    """Node `index` loses (or regains) its route to Ceph only; Ganeti's node-to-node traffic goes on.
    (This kernel has no netfilter: a blackhole route drops what the node sends to Ceph's address.)"""
    tb.run(index, ["ip", "route", "add" if cut else "del", "blackhole", f"{tb.host_addr}/32"], check=cut)


def cut_link(tb: Testbed, index: int, cut: bool = True) -> None:
    """Node `index`'s only link (to Ceph and to the other nodes) goes down (or up) at the host end; the
    node keeps running: its processes, rbd-fuse sessions and pending I/O stay as they were."""
    netns.sh(["ip", "link", "set", f"{tb.veth_prefix}{index}", "down" if cut else "up"])


# -- Ganeti jobs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    id: int
    status: str
    summary: str
    seconds: float
    result: str


def jobs(tb: Testbed, since: int = 0) -> list[Job]:
    """Every finished job with an id above `since`: status, how long its opcodes ran once they held their locks
    (exec to end: the wait for another job's locks is Ganeti's queue, not ours), result. Read from the
    master's queue files: `gnt-job list` with a separator fails on list fields (opexec) in Ganeti 3.0."""
    queue = tb.nodes[0].path("var-lib-ganeti", "queue")
    found = []
    for name in os.listdir(queue):
        if not (name.startswith("job-") and name[4:].isdigit() and int(name[4:]) > since):
            continue
        with open(os.path.join(queue, name)) as fh:
            ops = json.load(fh)["ops"]
        statuses = {op["status"] for op in ops}
        if statuses - {"success", "error", "canceled"}:
            continue  # still queued or running
        status = next((s for s in ("error", "canceled") if s in statuses), "success")
        spans = [_ts(op["end_timestamp"]) - _ts(op["exec_timestamp"]) for op in ops
                 if op.get("exec_timestamp") and op.get("end_timestamp")]
        summary = ",".join(op["input"]["OP_ID"].removeprefix("OP_") for op in ops)
        result = json.dumps([op["result"] for op in ops])
        found.append(Job(int(name[4:]), status, summary, max(spans, default=0.0), result))
    return sorted(found, key=lambda j: j.id)


def _ts(pair: list[int]) -> float:
    return pair[0] + pair[1] / 1e6


def last_job(tb: Testbed) -> int:
    queue = tb.nodes[0].path("var-lib-ganeti", "queue")
    return max((int(n[4:]) for n in os.listdir(queue) if n.startswith("job-") and n[4:].isdigit()), default=0)


def unclean(job: Job) -> str:
    """Why a failed job's message is not one clean line from us ("" if it is)."""
    if "Traceback" in job.result:
        return "a traceback"
    # Ganeti quotes the provider's last output lines: ours is one line per failed action.
    tail = job.result.split("last lines of output:", 1)[1] if "last lines of output:" in job.result else ""
    lines = [x for x in tail.replace("\\n", "\n").strip().strip("\"']").splitlines() if x.strip()]
    return f"{len(lines)} lines of provider output" if len(lines) > 1 else ""


# -- fences and leaks -----------------------------------------------------------------------

def fence_times(admin: Config, fence_seconds: float) -> dict[str, float]:
    """Blocklist entry -> when it was added (its expiry minus the hook's fence length)."""
    with Session(admin) as s:
        entries = s.mon_command("osd blocklist ls") or []
    out = {}
    for e in entries:
        until = datetime.datetime.strptime(e["until"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        out[e["addr"]] = until - fence_seconds
    return out


def tracebacks(tb: Testbed) -> list[str]:
    """Provider logs (every node's /var/log/ganeti/extstorage) that hold a traceback."""
    found = []
    for node in tb.nodes:
        logs = node.path("log", "extstorage")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, name), errors="replace") as fh:
                if "Traceback (most recent call last)" in fh.read():
                    found.append(f"{node.short}:{name}")
    return found


def leaks(tb: Testbed, admin: Config, insts: list[checks.Inst], images_before: set[str]) -> list[str]:
    """Everything left that the instances' state does not call for: images, open records, watchers,
    rbd-fuse processes, mounts, loop devices (on a node or outside every node), run-dir links."""
    state = checks.pool_state(admin)
    trash = state.pop("<trash>")["entries"]
    problems = [f"trash entry {t}" for t in trash]
    want_images = {v for i in insts for v in i.sizes}
    problems += [f"image {n} of no instance" for n in set(state) - want_images - images_before]
    mapped: dict[int, set[str]] = {i: set() for i in range(len(tb.nodes))}
    for inst in insts:
        serving = {tb.node_names[inst.primary]} if inst.running else set()
        if inst.running and inst.access == "kernelspace":
            mapped[inst.primary] |= set(inst.sizes)
        for vol in inst.sizes:
            meta = state.get(vol, {}).get("meta", {})
            holders = {k[len(OPEN_PREFIX):] for k in meta if k.startswith(OPEN_PREFIX)}
            problems += [f"{vol}: open record of {h}" for h in holders - serving]
            ips = {tb.addresses[inst.primary]} if inst.running else set()
            problems += [f"{vol}: watcher {w}" for w in set(state.get(vol, {}).get("watchers", [])) - ips]
            problems += [f"{vol}: snapshot {s}" for s in state.get(vol, {}).get("snaps", [])]
    seen_loops = []
    for i in range(len(tb.nodes)):
        view = tb.mappings(i)
        seen_loops += view["loops"]
        problems += [f"node{i}: mount {m}" for m in view["mounts"] if os.path.basename(m) not in mapped[i]]
        extra_loops = len(view["loops"]) - len(mapped[i])
        problems += [f"node{i}: {extra_loops} loop device(s) too many"] if extra_loops > 0 else []
        for pid in checks.rbd_fuse_pids(tb, i):
            if not any(v in procs.cmdline(pid) for v in mapped[i]):
                problems.append(f"node{i}: rbd-fuse {pid} {' '.join(procs.cmdline(pid)[-1:])}")
        links = tb.run(i, ["find", f"{nodefs.run_dir(tb.nodes[i])}/dev", "-mindepth", "3", "-maxdepth", "3",
                           "-printf", "%f\\n"], check=False, timeout=10).stdout.split()
        problems += [f"node{i}: run-dir link {x}" for x in links if x not in mapped[i]]
    problems += [f"loop device {x} outside every node" for x in set(tb.leaked_loops()) - set(seen_loops)]
    return problems


def settle(probe_leaks: Callable[[], list[str]], timeout: float = 10) -> list[str]:
    """Leaks that stay: a closing rbd-fuse may take a moment to drop its watch."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe_leaks()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
