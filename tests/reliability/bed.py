"""The fault suite's bed on one real local Ceph cluster: provider calls, faults, leak counts.

`Bed` wraps the installed provider (tests/ceph/provider_env.Provider) with a
config of small timeouts (FAULT_TIMEOUTS, the kernelspace mapper fuse-loop),
runs provider calls as the executables Ganeti runs (through the agent or
in-process), injects faults into the cluster's own daemons (SIGKILL/restart,
SIGSTOP/SIGCONT, pool quota) and counts what a scenario left behind. A
`Tally` collects one scenario's figures and becomes one ledger Row.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import rbd

from ganeti_ceph import procs
from ganeti_ceph.config import Timeouts
from ganeti_ceph.rbd import fencing
from ganeti_ceph.session import Session
from gnt_storage.deploy import daemons, local
from gnt_storage.deploy.daemons import Daemon
from tests.ceph.provider_env import Provider, Result, client_key, mounts_under
from tests.conftest import LocalCluster
from tests.reliability.ledger import Row
from tests.reliability.writer import Writer

# The Ceph timeouts are small on purpose: the suite waits them out many times.
# timeouts.action is the backstop every call must end within, start-up of the
# executable included; 60 s leaves room for 32 Pythons importing librados at
# once on 2 cores shared with other test beds (seen: up to 30 s from spawn to
# exit at a load average of 20; about 4 s on an idle machine).
FAULT_TIMEOUTS = {"connect": 2, "mon_op": 2, "osd_op": 3, "action": 60}
BOUND = float(FAULT_TIMEOUTS["action"])
PAUSE = 1 + max(FAULT_TIMEOUTS[k] for k in ("connect", "mon_op", "osd_op"))  # a fault held past every Ceph timeout
CALL_LOG = "reliability-calls.log"
TRACEBACK = "Traceback (most recent call last)"
DISK_MIB = 128
MONS = (Daemon("mon", "a"),)
OSDS = tuple(Daemon("osd", str(i)) for i in range(3))


SETTLED = frozenset({"active", "clean", "snaptrim", "snaptrim_wait"})  # PG states of a settled cluster


@dataclass
class Tally:
    """One scenario's figures, turned into a ledger Row."""

    scenario: str
    acked: int = 0
    lost: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    tracebacks: int = 0
    results: list[Result] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # no column (a stalled writer, a logged traceback)

    def row(self) -> Row:
        max_s = max((r.elapsed for r in self.results), default=0.0)
        tracebacks = self.tracebacks + sum(r.stderr.count(TRACEBACK) for r in self.results)
        return Row(self.scenario, acked_writes=self.acked, lost=len(self.lost) + len(self.unanswered),
                   max_s=round(max_s, 2), bound_s=BOUND, leaks=len(self.leaks), tracebacks=tracebacks)

    def problems(self) -> list[str]:
        """Everything that keeps the row from all zeros, for the assertion message."""
        row = self.row()
        slow = [f"{r.action} took {r.elapsed:.1f} s: {r.note}" for r in self.results if r.elapsed > BOUND]
        traced = [f"{r.action}: {r.stderr}" for r in self.results if TRACEBACK in r.stderr]
        return ([f"lost: {x}" for x in self.lost] + self.failures + [f"no answer: {x}" for x in self.unanswered]
                + [f"leak: {x}" for x in self.leaks] + [f"past bound: {x}" for x in slow] + traced
                + ([f"{row.tracebacks - len(traced)} traceback(s) in writer/agent stderr"]
                   if row.tracebacks > len(traced) else []))


@dataclass
class Disk:
    """A volume as a VM would hold it: attached, opened, written by a Writer."""

    vol: str
    kernel: bool
    dev: str = ""
    flush: bool = True  # kernelspace: fsync each record before acknowledging it
    writers: list[Writer] = field(default_factory=list)


class Bed:
    def __init__(self, cluster: LocalCluster, base: str) -> None:
        self.cluster = cluster
        self.prov = Provider(cluster, base, agent=True)
        self.cfg = self.prov.config("fault", mapper="fuse-loop", timeouts=FAULT_TIMEOUTS)
        self.run_dir = os.path.join(base, "run-fault")
        self.no_agent = os.path.join(base, "no-agent.sock")
        self.agent_log = os.path.join(base, "agent.log")
        self.conf = os.path.join(cluster.dir, "ceph.conf")
        self.salts = itertools.count(int(time.time()) << 8)
        self.sizes = itertools.count(DISK_MIB + 4, 4)
        self.writers: list[Writer] = []  # every writer started, stopped at the latest when its scenario ends

    # -- provider calls ----------------------------------------------------------------
    def env(self, action: str, vol: str, agent: bool, extra: dict[str, str]) -> dict[str, str]:
        env = self.prov.env(action, vol, self.cfg, dict(extra))
        if not agent:
            env["GANETI_CEPH_AGENT_SOCKET"] = self.no_agent
        return env

    def spawn(self, action: str, vol: str, agent: bool = False, **extra: str) -> subprocess.Popen:
        """A provider executable left running, for a test that kills it."""
        return subprocess.Popen([os.path.join(self.prov.dir, action)], cwd=self.prov.dir,
                                env=self.env(action, vol, agent, extra), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def call(self, tally: Tally, action: str, vol: str, agent: bool = True, **extra: str) -> Result:
        """One provider executable, as noded runs it; an answer that never comes is `unanswered`."""
        env = self.env(action, vol, agent, extra)
        started = time.monotonic()
        try:
            res = subprocess.run([os.path.join(self.prov.dir, action)], cwd=self.prov.dir, env=env,
                                 capture_output=True, text=True, timeout=BOUND + 60, stdin=subprocess.DEVNULL,
                                 check=False)
            out = Result(action, res.returncode, res.stdout, res.stderr, time.monotonic() - started)
        except subprocess.TimeoutExpired as exc:
            out = Result(action, -9, "", str(exc.stderr or ""), time.monotonic() - started)
            tally.unanswered.append(f"{action} {vol}")
        tally.results.append(out)
        self.prov.results.append(out)
        return out

    def calls(self, tally: Tally, calls: list[tuple[str, str, dict[str, str]]], agent: bool = True) -> list[Result]:
        """Run (action, vol, extra) calls all at once."""
        if not calls:
            return []
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(lambda c: self.call(tally, c[0], c[1], agent, **c[2]), calls))

    def ok(self, tally: Tally, action: str, vol: str, agent: bool = True, **extra: str) -> Result:
        res = self.call(tally, action, vol, agent, **extra)
        assert res.rc == 0, f"{action} {vol} failed ({res.rc}): {res.stderr}"
        return res

    def new_volume(self, tally: Tally, mib: int = DISK_MIB, agent: bool = True) -> str:
        vol = self.prov.volume()
        self.ok(tally, "create", vol, agent, VOL_SIZE=str(mib))
        return vol

    # -- disks written while faults happen ------------------------------------------------
    def disk(self, tally: Tally, kernel: bool, flush: bool = True) -> Disk:
        vol = self.new_volume(tally)
        access = "kernelspace" if kernel else "userspace"
        dev = self.ok(tally, "attach", vol, EXTP_ACCESS=access).stdout.split("\n")[0]
        self.ok(tally, "open", vol, VOL_OPEN_EXCLUSIVE="True")
        disk = Disk(vol, kernel, dev, flush)
        self.start_writer(disk)
        return disk

    def start_writer(self, disk: Disk) -> Writer:
        first = max((max(w.acked, default=w.first) + 1 for w in disk.writers), default=0)
        count = DISK_MIB * 256 - first
        c = self.cluster.client
        w = (Writer.device(disk.dev, next(self.salts), first, count, disk.flush) if disk.kernel else
             Writer.rbd(c.conf, c.keyring, c.client_id, c.pool, disk.vol, next(self.salts), first, count))
        disk.writers.append(w)
        self.writers.append(w)
        return w

    def progress(self, disks: list[Disk], n: int = 30, timeout: float = 90) -> list[str]:
        """Each disk's live writer acknowledges `n` more records; the ones that did not."""
        return [f"writer on {d.vol} ({'kernel' if d.kernel else 'user'}space) stalled"
                for d in disks if d.writers and not d.writers[-1].wait_for(n, timeout)]

    def retire(self, tally: Tally, disk: Disk) -> None:
        """Stop the writers, read every acknowledged record back through librbd, close and detach."""
        for w in disk.writers:
            w.stop()
            tally.tracebacks += w.stderr.count(TRACEBACK)
        with self.prov.image(disk.vol) as img:
            for w in disk.writers:
                tally.acked += len(w.acked)
                tally.lost += [f"{disk.vol} seq {s}" for s in w.lost(img.read)]
        self.ok(tally, "close", disk.vol)
        self.ok(tally, "detach", disk.vol)

    def remove(self, tally: Tally, vols: list[str]) -> None:
        """What Ganeti does last: remove; first count what is still held on them."""
        tally.leaks += self.held(vols)
        for vol in vols:
            self.ok(tally, "remove", vol)

    # -- the cluster's daemons --------------------------------------------------------------
    def pid(self, d: Daemon) -> int:
        pid = daemons.running_pid(os.path.join(self.cluster.dir, "run"), d, self.conf)
        assert pid, f"{d.name} is not running"
        return pid

    def kill(self, d: Daemon) -> None:
        pid = self.pid(d)
        os.kill(pid, signal.SIGKILL)
        while procs.alive(pid):
            time.sleep(0.02)

    def restart(self, d: Daemon) -> None:
        daemons.start([d], self.conf, os.path.join(self.cluster.dir, "log"), local.child_env())

    @contextlib.contextmanager
    def paused(self, group: tuple[Daemon, ...]) -> Iterator[None]:
        pids = [self.pid(d) for d in group]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def admin(self) -> Iterator[Session]:
        with Session(local.admin_config(self.cluster.dir, Timeouts(connect=15, mon_op=15, osd_op=30))) as s:
            yield s

    # A PG trimming removed snapshots (snaptrim, throttled by osd_snap_trim_sleep) serves I/O as usual.
    def settled(self, timeout: float = 120) -> None:
        """Every OSD up and in, every PG active+clean, perhaps trimming snapshots in the background (health
        warnings of the fault may linger)."""
        deadline = time.monotonic() + timeout
        with self.admin() as s:
            while True:
                st = s.mon_command("status")
                osd, pgs = st.get("osdmap", {}), st.get("pgmap", {})
                clean = sum(x["count"] for x in pgs.get("pgs_by_state", [])
                            if {"active", "clean"} <= set(x["state_name"].split("+")) <= SETTLED)
                if osd.get("num_up_osds") == osd.get("num_osds") == osd.get("num_in_osds") and \
                        clean == pgs.get("num_pgs"):
                    return
                assert time.monotonic() < deadline, f"cluster did not settle: {st.get('pgmap')}"
                time.sleep(0.2)

    def set_quota(self, max_bytes: int) -> None:
        with self.admin() as s:
            s.mon_command("osd pool set-quota", pool=self.cluster.client.pool, field="max_bytes", val=str(max_bytes))

    def pool_full(self) -> bool:
        with self.admin() as s:
            pools = s.mon_command("osd pool ls", detail="detail")
        return any(p["pool_name"] == self.cluster.client.pool and "full_quota" in p.get("flags_names", "")
                   for p in pools)

    def wait(self, cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
            time.sleep(0.2)

    # -- the agent ------------------------------------------------------------------------
    def agent_pid(self) -> int | None:
        return procs.pid_from_file(os.path.join(self.prov.base, "agent.pid"), "extstorage.agent")

    def start_agent(self) -> None:
        subprocess.run([*self.prov.agent[:3], "start", *self.prov.agent[3:]], check=True, timeout=30,
                       capture_output=True)

    def agent_log_size(self) -> int:
        with contextlib.suppress(OSError):
            return os.path.getsize(self.agent_log)
        return 0

    def agent_tracebacks(self, since: int) -> list[str]:
        """The exception line of each traceback in the agent's log since offset `since`."""
        with contextlib.suppress(OSError), open(self.agent_log, errors="replace") as fh:
            fh.seek(since)
            return [block.split("\n")[-1] for block in _traceback_blocks(fh.read())]
        return []

    # -- what a scenario may leave behind ----------------------------------------------------
    def held(self, vols: list[str]) -> list[str]:
        """Open records, RBD lock owners, advisory lockers and watchers on volumes nothing uses now. Not a
        watch of a dead client whose exact address is blocklisted: it can never write again and Ceph
        drops it within its watch timeout (remove waits that out: ganeti_ceph/rbd/remove.py)."""
        found = []
        with Session(self.cluster.admin) as s, s.ioctx(self.cluster.client.pool) as io:
            released = fencing.released_clients(s)
            present = set(rbd.RBD().list(io)) - set(self.half_made())
            for vol in sorted(set(vols) & present):
                with rbd.Image(io, vol, read_only=True) as img:
                    found += [f"open record {k} on {vol}" for k, _ in img.metadata_list()
                              if k.startswith("ganeti.open.")]
                    lockers = img.list_lockers() or {}  # {"tag", "exclusive", "lockers": [(client, cookie, addr)]}
                    found += [f"lock {cookie} of {client} ({addr}) on {vol}"
                              for client, cookie, addr in lockers.get("lockers", [])]
                    found += [f"watcher {w['addr']} on {vol}" for w in img.watchers_list()
                              if fencing.plain_addr(w["addr"]) not in released]
                with rbd.Image(io, vol) as img:  # owners are listed only on a writable handle
                    found += [f"exclusive lock owner {o['owner']} on {vol}" for o in img.lock_get_owners()]
        return found

    def orphan_loops(self) -> list[str]:
        """Loop devices over a file of ours whose rbd-fuse mount was lazily unmounted: their backing
        file then reads `/<image>`, no longer under run_dir, so Provider.leaks() does not see them."""
        names = {f"/{v}" for v in self.prov.volumes}
        found = []
        for path in glob.glob("/sys/block/loop*/loop/backing_file"):
            with contextlib.suppress(OSError), open(path) as fh:
                if fh.read().strip() in names:
                    found.append(f"/dev/{path.split('/')[3]}")
        return found

    def half_made(self) -> list[str]:
        """Images of the suite the pool lists but librbd cannot open (a create cut short)."""
        broken = []
        with Session(self.cluster.admin) as s, s.ioctx(self.cluster.client.pool) as io:
            for vol in sorted(set(self.prov.volumes) & set(rbd.RBD().list(io))):
                try:
                    rbd.Image(io, vol, read_only=True).close()
                except rbd.ImageNotFound:
                    broken.append(vol)
        return broken

    def leftovers(self) -> set[str]:
        """Node state: mounts, loop devices, mapping links, rbd-fuse and agent processes, images made
        by the suite and still there (also half-made ones), tools run from the inherited PATH."""
        broken = self.half_made()
        found = set(self.prov.leaks(allow=tuple(broken)))
        found |= {f"half-made image {v}: listed in the pool, cannot be opened" for v in broken}
        found |= {f"mapping link {p}" for p in glob.glob(os.path.join(self.run_dir, "dev", "*", "*", "*"))}
        found |= {f"rbd-fuse mount {m}" for m in mounts_under(self.run_dir)}
        found |= {f"loop device {d} over a lazily unmounted rbd-fuse" for d in self.orphan_loops()}
        agents = procs.find(substring=self.prov.socket)
        if len(agents) > 1:
            found.add(f"{len(agents)} agent processes on {self.prov.socket}")
        return found

    @contextlib.contextmanager
    def scenario(self, name: str, record: Any) -> Iterator[Tally]:
        """Run a scenario body; then count its leftovers and tracebacks and record its Row."""
        tally = Tally(name)
        before = self.leftovers()
        log_at = self.agent_log_size()
        try:
            yield tally
        except pytest.skip.Exception:
            self._stop_writers()
            self.log(tally)
            raise  # a lost race proves nothing: no row
        except BaseException:
            self.heal()  # the next scenario, and the rest of the session, start on a healthy cluster
            self._close_scenario(tally, before, log_at, record)
            raise
        self._close_scenario(tally, before, log_at, record)
        problems = tally.problems()
        assert not problems, f"{name}:\n" + "\n".join(problems)

    def _close_scenario(self, tally: Tally, before: set[str], log_at: int, record: Any) -> None:
        """Stop what still writes, count leftovers and logged tracebacks, record the Row."""
        self._stop_writers()
        known = {_what(x) for x in before}  # one left before, whose watchers changed since, is not new
        tally.leaks += sorted(x for x in self.leftovers() if _what(x) not in known)
        logged = self.agent_tracebacks(log_at)
        tally.tracebacks += len(logged)
        tally.failures += [f"agent log: {line}" for line in logged]
        record(tally.row())
        self.log(tally)

    def _stop_writers(self) -> None:
        for w in self.writers:
            if w.running:
                w.stop()

    def log(self, tally: Tally) -> None:
        """Every call of the scenario, for reading after a run: CALL_LOG next to the cluster's dir."""
        with open(os.path.join(os.path.dirname(os.path.abspath(self.cluster.dir)), CALL_LOG), "a") as fh:
            fh.write(f"== {tally.scenario}: {tally.row()}\n")
            for r in tally.results:
                fh.write(f"{r.action:8} rc {r.rc:3} {r.elapsed:6.2f} s  {r.stderr.strip()}\n")
            fh.writelines(f"{x}\n" for x in tally.problems())

    def heal(self) -> None:
        """Whatever a failed scenario left broken in the shared cluster: paused or dead daemons, a quota.
        The rest of the session (`make test` runs every module on this cluster) needs it healthy."""
        for d in (*MONS, *OSDS):
            pid = daemons.running_pid(os.path.join(self.cluster.dir, "run"), d, self.conf)
            if pid:
                os.kill(pid, signal.SIGCONT)
            else:
                self.restart(d)
        self.set_quota(0)
        self.settled()

    def close(self) -> None:
        self.heal()
        self.prov.cleanup()
        for dev in self.orphan_loops():  # loop devices are scarce and shared: give them back
            subprocess.run(["losetup", "-d", dev], check=False, timeout=30)
        key = client_key(self.cluster.client)
        shown = [r.action for r in self.prov.results if key in r.stdout or key in r.stderr]
        assert not shown, f"the client key appeared in the output of: {shown}"


def _traceback_blocks(text: str) -> list[str]:
    """Each traceback in `text`, up to and including its exception line."""
    blocks = []
    for part in text.split(TRACEBACK)[1:]:
        lines = part.split("\n")[1:]
        body = [x for x in itertools.takewhile(lambda x: x.startswith(" "), lines)]
        rest = lines[len(body):]
        blocks.append("\n".join([TRACEBACK, *body, rest[0] if rest else ""]))
    return blocks


def _what(leftover: str) -> str:
    """A leftover without its details: 'image X (snapshots [], watchers [...])' -> 'image X'."""
    return leftover.split(" (", 1)[0]
