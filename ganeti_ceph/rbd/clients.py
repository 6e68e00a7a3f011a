"""Our own Ceph clients on this node, recorded for the length of a call, so that a dead one lets go at once.

A provider process or agent worker killed mid-call (its bound passed, the
agent died) leaves its watch on the volume until Ceph's watch timeout (30 s)
and its RBD exclusive lock until someone breaks it: Ganeti's follow-up
remove is refused "in use" meanwhile, and the next opener waits. So each
call records, in `<run_dir>/clients/`, its exact client address
(`ip:0/nonce`, the nonce random per connection) and its volume; the next
call that finds a record whose process is gone releases what it held:
that one address is blocklisted (an hour, Ceph's default; never a whole
node: fencing.py) and its lock on the recorded volume broken.

Death is proven locally and exactly: a record names the host's boot (its
boot_id: a run_dir shared with another host or a container is never
judged), its PID namespace, pid and the process's start time; only a record
of this boot and namespace whose pid is gone, a zombie, or a different
process is released. A live client is never touched, and a blocklisted dead
address is never reused (a new connection draws a new nonce). A call
tries at most MAX_RELEASES records (the rest wait for the next calls), so a
crash of many workers never makes one call slow; a record that names a
pool or volume gone since is dropped, one that could not be released for a
day is dropped with a warning. Not covered: a session that
reconnected inside one call (its new address is not recorded).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import rbd

from ganeti_ceph import atomic, procs, runner
from ganeti_ceph.errors import GanetiCephError, NotFound
from ganeti_ceph.log import warn
from ganeti_ceph.rbd import fencing
from ganeti_ceph.session import Session

DIR = "clients"
MAX_RELEASES = 2  # tried per call
GIVE_UP_S = 86400.0  # a record that could not be released for this long is dropped, said


@dataclass(frozen=True)
class Process:
    """One process, told apart from a later one that reuses its pid: the host's boot, PID namespace,
    pid, start time."""

    boot: str
    pidns: int
    pid: int
    start: int

    @property
    def name(self) -> str:
        return f"{self.boot}.{self.pidns}.{self.pid}.{self.start}"

    @classmethod
    def parse(cls, name: str) -> Process | None:
        """The process a record's file name (`<process>.<use>`) names; None for anything else."""
        parts = name.split(".")
        if len(parts) != 5 or not all(p.isdigit() for p in parts[1:]) or not parts[0].isalnum():
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))


def _pidns() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


@cache
def _boot() -> str:
    """This host's boot: the same on every host's first PID namespace, the inode alone proves nothing."""
    with open("/proc/sys/kernel/random/boot_id") as fh:
        return fh.read().strip().replace("-", "")


@cache
def me() -> Process:
    found = procs.stat(os.getpid())
    return Process(_boot(), _pidns(), os.getpid(), found[1] if found else 0)


_uses = itertools.count()


def gone(p: Process) -> bool:
    """True only if `p` is provably dead: of this boot and PID namespace, and its pid is free, a zombie,
    or taken by a process started at another time. A record of another host, boot or namespace is never
    judged."""
    if p.boot != _boot() or p.pidns != _pidns():
        return False
    found = procs.stat(p.pid)
    return found is None or found[0] in ("Z", "X") or found[1] != p.start


def _dir(run_dir: str) -> str:
    return os.path.join(run_dir, DIR)


@contextlib.contextmanager
def recorded(run_dir: str, session: Session, fsid: str, pool: str, image: str) -> Iterator[None]:
    """Record this process's client (`session`'s address) as working on pool/image for the body.
    The record only has to last as long as the process: it is not synced to disk."""
    path = os.path.join(_dir(run_dir), f"{me().name}.{next(_uses)}")  # one file per use: nested ones too
    record = {"fsid": fsid, "addr": fencing.plain_addr(session.rados.get_addrs()), "pool": pool, "image": image}
    try:
        if os.path.isdir(run_dir):  # made by the agent or the first mapping; a call makes nothing else
            with contextlib.suppress(FileExistsError):
                os.mkdir(_dir(run_dir), 0o700)
            atomic.write(path, json.dumps(record), mode=0o600, durable=False)
    except OSError as exc:  # the call goes on; only a kill during it would leave its watch
        warn(f"cannot record this call's Ceph client in {_dir(run_dir)}: {exc.strerror}")
    try:
        yield
    finally:
        _drop(path)


def release_dead(run_dir: str, session: Session, fsid: str) -> list[str]:
    """Release what the dead clients recorded here held in cluster `fsid`; the addresses released.
    Costs a directory listing when none died. A failure is a warning: the record stays for the next
    call, and the call under way goes on (at worst it meets the old watch, as without this)."""
    try:
        names = os.listdir(_dir(run_dir))
    except FileNotFoundError:
        return []
    released: list[str] = []
    tries = 0
    for name in names:
        proc = Process.parse(name)
        if proc is None or not gone(proc):
            continue
        path = os.path.join(_dir(run_dir), name)
        if _age(path) > GIVE_UP_S:  # tried by every call for a day: nothing left to gain
            warn(f"gave up releasing the Ceph client of the dead process {proc.pid} ({path})")
            _drop(path)
            continue
        try:
            with open(path) as fh:
                record = json.load(fh)
        except OSError:
            continue  # released by another call meanwhile, or not ours to read
        except ValueError:  # killed while writing it: it had not reached its volume yet
            _drop(path)
            continue
        if record.get("fsid") != fsid:
            continue  # another cluster's: released by a call to that cluster, and no try of this one
        if tries >= MAX_RELEASES:
            break  # the next calls go on with the rest
        tries += 1
        try:
            _release(session, record)
        except NotFound:
            pass  # its pool or volume is gone: nothing of it is held there any more
        except GanetiCephError as exc:
            warn(f"could not release the Ceph client {record.get('addr')} of the dead process {proc.pid} "
                 f"on {record.get('pool')}/{record.get('image')}: {exc.message}")
            continue
        _drop(path)
        released.append(str(record["addr"]))
    return released


def _release(session: Session, record: dict[str, str]) -> None:
    """Blocklist the dead client's exact address, break its RBD lock on the recorded volume if it holds
    it, and give the OSD a moment (fencing.WATCH_DROP_S) to drop its watch there: the OSDs take the blocklist with
    their next map, milliseconds after the monitors answered. A watch the OSD registered for the dead
    client after its connection had closed (Ceph 16, tracker.ceph.com/issues/58120) goes neither with
    the blocklist nor with Ceph's watch timeout, only when its OSD re-peers: remove.py names that."""
    addr = record["addr"]
    fencing.release_client(session, addr)
    with session.ioctx(record["pool"]) as ioctx, session.errors(f"release {addr} on {record['image']}"):
        try:
            img = rbd.Image(ioctx, record["image"])
        except rbd.ImageNotFound:
            return
        with img:
            for owner in img.lock_get_owners():
                if fencing.plain_addr(owner["owner"]) == addr:
                    img.lock_break(owner["mode"], owner["owner"])
            runner.until(fencing.watch_drop_deadline(session),
                         lambda: [w for w in img.watchers_list() if fencing.plain_addr(w["addr"]) == addr],
                         lambda left: not left)


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0


def _drop(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
