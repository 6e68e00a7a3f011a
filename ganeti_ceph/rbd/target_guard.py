"""Unmap what a failed live migration leaves mapped on its target node.

Ganeti migrates A->B as: B close (which attaches, so B maps the disk),
A open(shared), B open(shared), then QEMU on B opens the device. When A's
or B's open fails (a node lost Ceph), Ganeti raises at once: neither its
revert (which would detach on B) nor any post hook runs, and B keeps the
mapping with nobody using it until the next migration there.

So a close that leaves an unused mapping arms a guard: a detached process
that waits `window` seconds (A's open is bounded by timeouts.action, B's
follows within an RPC) and then unmaps, unless meanwhile an open on this
node succeeded (it disarms), the mapping went (detach), a later close
re-armed it, or something uses the device (a VM, a mount, a holder).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from ganeti_ceph import atomic, config, procs, runner, watchdog
from ganeti_ceph.config import Config
from ganeti_ceph.errors import GanetiCephError
from ganeti_ceph.rbd import mappers
from ganeti_ceph.rbd.mappers import Target, table

MODULE = "ganeti_ceph.rbd.target_guard"
SLACK = 30.0  # B's open follows A's within one Ganeti RPC
POLL = 1.0


def window(cfg: Config) -> float:
    return cfg.timeouts.action + SLACK


def marker(cfg: Config, t: Target) -> str:
    return table.flat_path(cfg.run_dir, "guard", t)


def arm(cfg: Config, t: Target, dev: str) -> bool:
    """Start a guard for `t` if its mapping `dev` is unused; True if one was started."""
    if users(dev, serving=mappers.get(cfg.mapper).serving):
        return False
    import uuid  # here only: its import (platform) is not paid by every provider call

    token = uuid.uuid4().hex
    path = marker(cfg, t)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic.write(path, f"{token} {time.time() + window(cfg):.0f}\n")
    procs.spawn(procs.boot_argv(MODULE, cfg.source, t.fsid, t.pool, t.image, token),
                os.path.join(cfg.run_dir, "guard.log"), ready=lambda _child: True)
    return True


def disarm(cfg: Config, t: Target) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker(cfg, t))


def _armed(cfg: Config, t: Target) -> tuple[str, float] | None:
    try:
        with open(marker(cfg, t)) as fh:
            token, deadline = fh.read().split()
        return token, float(deadline)
    except (OSError, ValueError):
        return None


def users(dev: str, proc: str = "/proc", sys_block: str = mappers.SYS_BLOCK,
          serving: tuple[str, ...] = ()) -> list[str]:
    """Who holds `dev` or one of its partitions (/dev/nbd0p1 is a device of its own, which an unmap
    would pull from under its user just the same): sysfs holders, mounts, and processes with one
    open, except the mapper's own daemon (`serving`: Mapper.serving, e.g. rbd-nbd). Only links are
    read, never the device."""
    name = os.path.basename(dev)
    base = os.path.join(sys_block, name)
    parts = [name, *sorted(p for p in _listdir(base) if p.startswith(f"{name}p") and p[len(name) + 1:].isdigit())]
    found, devnos = [], set()
    for part in parts:
        d = base if part == name else os.path.join(base, part)
        found += [f"holder {h}" for h in _listdir(os.path.join(d, "holders"))]
        if devno := mappers.read(os.path.join(d, "dev")):
            devnos.add(devno)
    paths = {os.path.join(os.path.dirname(dev), part) for part in parts}
    with contextlib.suppress(OSError), open(os.path.join(proc, "self", "mountinfo")) as fh:
        found += [f"mount {line.split()[4]}" for line in fh if line.split()[2] in devnos]
    for pid in filter(str.isdigit, _listdir(proc)):
        fds = os.path.join(proc, pid, "fd")
        for fd in _listdir(fds):
            with contextlib.suppress(OSError):
                if os.readlink(os.path.join(fds, fd)) in paths and (prog := _prog(proc, pid)) not in serving:
                    found.append(f"process {pid} ({prog})")
                    break
    return found


def _prog(proc: str, pid: str) -> str:
    with contextlib.suppress(OSError), open(os.path.join(proc, pid, "cmdline"), "rb") as fh:
        return os.path.basename(fh.read().split(b"\0")[0].decode(errors="replace"))
    return "?"


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def watch(cfg: Config, t: Target, token: str, poll: float = POLL) -> str:
    """Wait out the window, then unmap if still armed by `token` and unused; what happened, in words."""
    mapper = mappers.for_config(cfg)
    armed = _armed(cfg, t)
    deadline = time.monotonic() + (armed[1] - time.time() if armed else 0)

    def ended() -> str:
        """Why the guard has nothing left to do, or "" while it still waits."""
        armed = _armed(cfg, t)
        if armed is None or armed[0] != token:
            return "disarmed or re-armed"
        if mapper.find(t) is None:
            disarm(cfg, t)
            return "no longer mapped"
        return ""

    if done := runner.until(deadline, ended, interval=poll):
        return done
    with mapper.locked(t):
        dev = mapper.find(t)
        armed = _armed(cfg, t)
        if armed is None or armed[0] != token or dev is None:
            return "disarmed, re-armed or unmapped meanwhile"
        used = users(dev, serving=mapper.serving)
        disarm(cfg, t)
        if used:
            return f"kept {dev}: in use by {', '.join(used)}"
        mapper.unmap_locked(t)
    return f"unmapped {dev}: no open followed the close within {window(cfg):.0f} s (a failed migration)"


def main(argv: list[str]) -> int:
    source, fsid, pool, image, token = argv
    t = Target(fsid, pool, image)
    try:
        cfg = config.load(source)
        watchdog.start(window(cfg) + cfg.timeouts.action, f"target guard {t.spec}")
        done = watch(cfg, t, token)
    except GanetiCephError as exc:
        done = f"failed: {exc.message}"
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} target guard {t.spec}: {done}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
