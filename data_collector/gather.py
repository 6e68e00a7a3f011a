"""The I/O side of the collector: Ceph over one Session, and this node's /proc and links.

Only mon commands, a fixed handful per report (plus one PG listing while some
PGs are not clean): nothing per image, so the cost does not grow with the
number of volumes. Node facts come from /proc, the mapper's links and
Ganeti's runtime files, never from a Ganeti command. A cluster that cannot be
asked gives a code-2 report, bounded by the timeouts: never a hang.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import socket
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from data_collector import node, report
from ganeti_ceph import __version__, procs
from ganeti_ceph.config import Config, Timeouts, conf_fsid
from ganeti_ceph.errors import GanetiCephError
from ganeti_ceph.ganeti import run
from ganeti_ceph.rbd.mappers import table
from ganeti_ceph.session import Session

# (key in the raw dict, mon command prefix, arguments); status first: it says
# whether the mgr-backed ones can answer.
COMMANDS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("status", "status", {}),
    ("health detail", "health", {"detail": "detail"}),
    ("mon dump", "mon dump", {}),
    ("osd tree", "osd tree", {}),
    ("osd pool ls detail", "osd pool ls", {"detail": "detail"}),
    ("df detail", "df", {"detail": "detail"}),
    ("osd pool stats", "osd pool stats", {}),
)
PG_BRIEF = ("pg dump pgs_brief", "pg dump", {"dumpcontents": ["pgs_brief"]})
# Served by the mgr: without one they hang until mon_op, so they are skipped
# when the mgr is known to be down, and their failure only leaves a note.
MGR_BACKED = frozenset({"osd pool stats", PG_BRIEF[0]})
# Asked last, each on its own: without an answer the report only lacks that fact and a note says
# why. Is this node fenced (fencing.py)? Then, while a mgr is active, the rbd_support mgr module's
# per-image I/O, one mgr command per RBD pool (a client key's mgr cap names its pools).
OPTIONAL: tuple[tuple[str, str, dict[str, Any]], ...] = (("osd blocklist ls", "osd blocklist ls", {}),)
NOTES = "_notes"
GANETI_RUN = run.RUN_DIR  # the packaged default (tests/ceph/test_collector.py names it); see run.run_dir
CEPH_DAEMONS = ("ceph-mon", "ceph-osd", "ceph-mgr")
AGENT_MODULE = "extstorage.agent"  # `ganeti-ceph-agent run` runs this module (procs.boot_argv)
MAX_CONF_BYTES = 1 << 20  # a ceph.conf is a few KiB


def fetch(session: Session) -> dict[str, Any]:
    """The raw JSON of every command a report needs, keyed as in COMMANDS (notes under NOTES)."""
    raw: dict[str, Any] = {"status": session.mon_command("status"), NOTES: []}
    if not raw["status"].get("quorum_names"):
        return raw  # a mon out of quorum answers status from a stale view, and nothing else
    mgr = report.mgr_available(raw["status"])
    todo = list(COMMANDS[1:])
    while todo:
        key, prefix, args = todo.pop(0)
        if key not in MGR_BACKED:
            raw[key] = session.mon_command(prefix, **args)
        elif mgr:
            try:
                raw[key] = session.mon_command(prefix, **args)
            except GanetiCephError as exc:
                mgr = False
                raw[NOTES].append(f"the mgr did not answer {prefix}: {exc.message}")
        if not todo and key != PG_BRIEF[0] and mgr and report.pgs_unsettled(raw["status"]):
            todo.append(PG_BRIEF)
    for key, prefix, args in OPTIONAL:
        try:
            raw[key] = session.mon_command(prefix, **args)
        except GanetiCephError as exc:
            raw[NOTES].append(f"no answer to {prefix}: {exc.message}")
    if mgr:
        raw[report.IMAGE_STATS] = {}
        for pool in report.rbd_pools(raw.get("osd pool ls detail")):
            try:
                raw[report.IMAGE_STATS][pool] = session.mgr_command(report.IMAGE_STATS, pool_spec=pool)
            except GanetiCephError as exc:
                raw[NOTES].append(f"no answer to {report.IMAGE_STATS} {pool}: {exc.message}")
    return raw


# -- this node ------------------------------------------------------------------

class ProcSampler:
    """RSS and CPU of this node's Ceph daemons, via psutil.

    CPU percent is over the time since the previous sample of the same
    process (the daemon's refresh interval), or over its lifetime at first.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[int, float], tuple[float, float]] = {}

    def sample(self, pid: int) -> dict[str, Any] | None:
        import psutil  # Debian's python3-psutil; late, so pure code runs without it

        try:
            p = psutil.Process(pid)
            with p.oneshot():
                created, rss, times = p.create_time(), p.memory_info().rss, p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        now, cpu = time.time(), times.user + times.system
        prev_t, prev_cpu = self._last.get((pid, created), (created, 0.0))
        self._last[(pid, created)] = (now, cpu)
        window = max(now - prev_t, 1e-3)
        return {"pid": pid, "rss_bytes": rss, "cpu_seconds": round(cpu, 2),
                "cpu_percent": round(100.0 * (cpu - prev_cpu) / window, 1), "cpu_window_s": round(window, 1)}

    def forget_except(self, pids: set[int]) -> None:
        self._last = {k: v for k, v in self._last.items() if k[0] in pids}


def trusted_uids() -> set[int]:
    """root, and the ceph user Ceph's daemons drop to (--setuser ceph) if this node has one."""
    try:
        return {0, pwd.getpwnam("ceph").pw_uid}
    except KeyError:
        return {0}


def process_uids(pid: str) -> set[int]:
    """The real, effective, saved and fs uids of a process (from status: /proc/PID's owner
    turns root for any process that makes itself non-dumpable)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    return {int(u) for u in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return {-1}


def trusted_conf_fsid(path: str, trusted: set[int]) -> str | None:
    """The fsid in `path` if it is a regular file of a trusted user and of a conf's size, else None.

    Opened without blocking (a FIFO would hang the open) and judged by what was opened, not by
    its name; then read through the open descriptor, so the file checked is the file read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in trusted or st.st_size > MAX_CONF_BYTES:
            return None
        return conf_fsid(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def ceph_processes(sampler: ProcSampler, fsid: str | None, own_conf: str) -> list[dict[str, Any]]:
    """Running mon/osd/mgr processes of this cluster (by the fsid of their conf).

    Only daemons run by root or the ceph user count, and only their confs that are regular
    files of those users: anyone can start a process named ceph-mon with `--conf` naming a
    FIFO (which would hang us) or /dev/zero (which would grow us without end).
    """
    found, fsids = [], {}
    trusted = trusted_uids()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() not in CEPH_DAEMONS:
                    continue
        except OSError:
            continue
        if not process_uids(entry) <= trusted:
            continue
        d = node.parse_daemon_argv(procs.cmdline(entry))
        if d is None:
            continue
        if d["conf"] not in fsids:
            fsids[d["conf"]] = trusted_conf_fsid(d["conf"], trusted)
        same = fsids[d["conf"]] == fsid if fsid and fsids[d["conf"]] else os.path.realpath(d["conf"]) == own_conf
        stats = sampler.sample(int(entry)) if same and procs.alive(int(entry)) else None
        if stats:
            found.append({"name": d["name"], **stats})
    sampler.forget_except({d["pid"] for d in found})
    return found


def agent_running() -> bool:
    """True if root runs the provider's agent here (a process started as `python -m extstorage.agent run`)."""
    return any(process_uids(str(pid)) == {0} and "run" in procs.cmdline(pid) for pid in procs.find(arg=AGENT_MODULE))


def mapped_links(run_dir: str, fsid: str | None) -> list[tuple[str, str, str]]:
    """(pool, image, device) of every mapping of this cluster on this node (the mapping table)."""
    return [(m.target.pool, m.target.image, m.device) for m in table.mapped(run_dir, fsid)]


def disk_links(ganeti_run: str) -> dict[str, str]:
    """Ganeti's instance-disks/<instance>:<n> links -> device (kernelspace disks of running instances)."""
    d = run.instance_disks_dir(ganeti_run)
    out = {}
    for name in os.listdir(d) if os.path.isdir(d) else []:
        try:
            out[name] = os.path.realpath(os.path.join(d, name))
        except OSError:
            continue
    return out


def kvm_runtimes(ganeti_run: str) -> dict[str, Any]:
    """instance -> the JSON of its KVM runtime file (disks with their URIs), for running KVM instances."""
    d = run.kvm_conf_dir(ganeti_run)
    out = {}
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if not name.endswith(".runtime"):
            continue
        try:
            with open(os.path.join(d, name)) as fh:
                out[name.removesuffix(".runtime")] = json.load(fh)
        except (OSError, ValueError):
            continue
    return out


def node_facts(cfg: Config, sampler: ProcSampler, fsid: str | None, ganeti_run: str | None = None) -> node.Facts:
    """This node's facts; Ganeti's runtime files under `ganeti_run` (this node's, run.run_dir(), by default)."""
    ganeti_run = ganeti_run or run.run_dir()
    fsid = fsid or conf_fsid(cfg.conf)
    addrs = _addresses()
    return node.Facts(
        name=cfg.node_name, addresses=addrs,
        processes=ceph_processes(sampler, fsid, os.path.realpath(cfg.conf)),
        mapped=[(p, i, os.path.realpath(dev)) for p, i, dev in mapped_links(cfg.run_dir, fsid)],
        disk_links=disk_links(ganeti_run), runtimes=kvm_runtimes(ganeti_run), agent_running=agent_running(),
    )


def _addresses() -> list[str]:
    import psutil

    try:
        return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                       if a.family in (socket.AF_INET, socket.AF_INET6)})
    except OSError:
        return []


# -- one report -------------------------------------------------------------------

class Collector:
    """Makes reports over one Session, kept across reports (the daemon) or used once (the command).

    librados reconnects by itself when mons come back, so the session is kept
    through failures; only a failed connect is retried at the next report.
    """

    def __init__(self, cfg: Config, ganeti_run: str | None = None) -> None:
        self.cfg = cfg
        self.ganeti_run = ganeti_run
        self.sampler = ProcSampler()
        self._session: Session | None = None
        self._lock = threading.Lock()

    def _connected(self) -> Session:
        if self._session is None:
            session = Session(self.cfg)
            session.connect()
            self._session = session
        return self._session

    def report(self) -> dict[str, Any]:
        """One report; never raises for Ceph trouble (that is a code-2 report)."""
        with self._lock:
            started = time.monotonic()
            raw, error = None, None
            try:
                raw = fetch(self._connected())
            except GanetiCephError as exc:
                error = exc.message
            fsid = (raw or {}).get("status", {}).get("fsid")
            try:
                facts = node_facts(self.cfg, self.sampler, fsid, self.ganeti_run)
            except Exception as exc:  # this node's files must not cost the cluster's report
                facts = node.Facts(name=self.cfg.node_name)
                if raw is not None:
                    raw[NOTES].append(f"node facts unavailable: {exc!r}")
            return report.build(raw, facts, cluster=self.cfg.cluster, version=__version__, error=error,
                                timestamp_ns=time.time_ns(), duration=time.monotonic() - started)

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


def with_timeout(cfg: Config, seconds: float | None) -> Config:
    """The config with connect and mon_op capped at `seconds` (a collector must answer quickly)."""
    if not seconds:
        return cfg
    t = cfg.timeouts
    return dataclasses.replace(cfg, timeouts=Timeouts(connect=min(t.connect, seconds), mon_op=min(t.mon_op, seconds),
                                                      osd_op=t.osd_op, action=t.action))


def bounded(fn: Callable[[], dict[str, Any]], seconds: float, fallback: Callable[[str], dict[str, Any]]
            ) -> dict[str, Any]:
    """fn() in a worker; past `seconds`, fallback(message) instead (a C call that ignores its timeout)."""
    result: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    return result[0] if result else fallback(f"no answer within {seconds:.0f} s")


def deadline(cfg: Config) -> float:
    """How long one report may take: a connect plus two mon commands' worth, plus slack."""
    return cfg.timeouts.connect + 2 * cfg.timeouts.mon_op + 2.0
