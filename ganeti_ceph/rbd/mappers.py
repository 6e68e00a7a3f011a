"""Kernelspace access: map an RBD image to a local block device, and back.

Three mappers behind one interface (as Ganeti's lib/storage puts device
kinds behind one class): krbd (`rbd device map`, the default on real
hosts), rbd-nbd, and fuse-loop (rbd-fuse of one image plus a loop device,
for kernels with neither, like our CI machines).

Every mapping gets a stable link `<run_dir>/dev/<fsid>/<pool>/<image>` (the
cluster fsid keeps two clusters or pools with the same image name apart, as
Proxmox's /dev/rbd-pve/<fsid>/... does). attach finds a mapping in O(1) by
reading that link and checking the device in sysfs; nothing ever parses
`rbd showmapped`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ganeti_ceph import atomic, procs
from ganeti_ceph.config import Config
from ganeti_ceph.errors import Busy, GanetiCephError

SYS_BLOCK = "/sys/block"
SYS_RBD = "/sys/bus/rbd/devices"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# librbd's write-back cache acknowledges a write before Ceph has it: an
# rbd-fuse or rbd-nbd killed then loses it, although the kernel device (an
# O_DIRECT loop write, no flush) said done. Off, a mapped write completes in
# Ceph before it is acknowledged, as with krbd, which has no such cache.
WRITE_THROUGH = ("--rbd_cache=false",)


@dataclass(frozen=True)
class Target:
    """One image of one cluster, as seen by a node."""

    fsid: str
    pool: str
    image: str

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.image}"


class MapError(GanetiCephError):
    """A mapping could not be made or removed."""


def _always() -> bool:
    return True


# Whether the call running here is still wanted: an agent worker sets it to "my agent lives". Its guard
# notices a dead agent within 0.1 s, but a lock let go at the agent's death may be taken sooner.
still_wanted: Callable[[], bool] = _always


def run_tool(argv: list[str], what: str, timeout: float, leaves_daemon: bool = False) -> str:
    """Run a mapping tool with a clean environment; one-line error on failure.

    `leaves_daemon`: the tool leaves a daemon serving the mapping behind and
    does not leave the caller's session itself (rbd-nbd map daemonizes
    without setsid), so it runs in a session of its own: the caller may be an
    agent worker whose process group is killed at a call's bound, and that
    must never take a running VM's disk with it. rbd-fuse needs no help:
    libfuse calls setsid when it daemonizes, and until then the tool dies with
    a killed worker, as a stopped call should."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                             stdin=subprocess.DEVNULL, env={"PATH": PATH, "LC_ALL": "C"},
                             start_new_session=leaves_daemon)
    except FileNotFoundError:
        raise MapError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise MapError(f"{what}: {argv[0]} did not finish within {timeout:.0f} s") from None
    if res.returncode != 0:
        lines = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()
        raise MapError(f"{what}: {argv[0]} failed (exit {res.returncode}): {lines[-1]}")
    return res.stdout.strip()


def read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


class Mapper:
    """Map, find and unmap images; subclasses supply the device specifics."""

    name = "base"

    def __init__(self, cfg: Config, sys_block: str = SYS_BLOCK) -> None:
        self.cfg = cfg
        self.sys_block = sys_block

    # -- the stable link: O(1) lookup ------------------------------------------
    def link(self, t: Target) -> str:
        return os.path.join(self.cfg.run_dir, "dev", t.fsid, t.pool, t.image)

    def find(self, t: Target) -> str | None:
        """The block device of a live mapping of `t`, or None."""
        try:
            dev = os.readlink(self.link(t))
        except OSError:
            return None
        return dev if self.is_mapping_of(dev, t) else None

    @contextlib.contextmanager
    def locked(self, t: Target) -> Iterator[None]:
        """Serialise map/unmap of one image on this node (Ganeti runs jobs in
        parallel). The wait is bounded by timeouts.osd_op: a holder is a call
        of its own, itself bounded, and a killed one lets go at once."""
        lockdir = os.path.join(self.cfg.run_dir, "lock")
        os.makedirs(lockdir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(lockdir, f"{t.fsid}.{t.pool}.{t.image}"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            wait = self.cfg.timeouts.osd_op
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if not still_wanted():  # its agent died while this waited: the caller was told it failed
                        raise MapError(f"the call that waited to map or unmap {t.spec} was abandoned")
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Busy(f"another map or unmap of {t.spec} on this node did not end within {wait:.0f} s "
                                   "(timeouts.osd_op); retry") from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)

    def map(self, t: Target) -> str:
        with self.locked(t):
            dev = self.find(t)
            if dev:
                return dev
            self.cleanup(t)  # whatever a crashed map left behind
            dev = self.map_device(t)
            self.publish(t, dev)
            return dev

    def unmap(self, t: Target) -> bool:
        """Remove the mapping; True if one was removed. Succeeds when none exists."""
        with self.locked(t):
            return self.unmap_locked(t)

    def unmap_locked(self, t: Target) -> bool:
        """`unmap` for a caller that holds t's lock (and checked under it that it may)."""
        dev = self.find(t)
        if dev:
            self.unmap_device(dev, t)
        self.cleanup(t)
        self.unpublish(t)
        return dev is not None

    def publish(self, t: Target, dev: str) -> None:
        """Point t's link at `dev`. Only t's own lock is held here, so another
        image's unmap runs meanwhile: that is why no link directory is ever
        removed (an emptied <pool> dir vanishing between this makedirs and the
        symlink left the other image mapped without its link)."""
        link = self.link(t)
        os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
        atomic.symlink(dev, link)

    def unpublish(self, t: Target) -> None:
        """Drop t's link; its directories stay (see publish)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.link(t))

    def unmap_all(self, fsid: str) -> list[str]:
        """Unmap every mapping of one cluster on this node (its teardown)."""
        base = os.path.join(self.cfg.run_dir, "dev", fsid)
        done = []
        for pool in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            for image in sorted(os.listdir(os.path.join(base, pool))):
                if not image.endswith(".tmp") and self.unmap(Target(fsid, pool, image)):
                    done.append(f"{pool}/{image}")
        return done

    # -- device specifics ----------------------------------------------------------
    def is_mapping_of(self, dev: str, t: Target) -> bool:
        raise NotImplementedError

    def map_device(self, t: Target) -> str:
        raise NotImplementedError

    def unmap_device(self, dev: str, t: Target) -> None:
        raise NotImplementedError

    def cleanup(self, t: Target) -> None:
        """Remove leftovers of a half-made mapping (nothing for most mappers)."""

    def refresh(self, dev: str, t: Target, nbytes: int | None = None) -> None:
        """Make the device show the image's new size after a grow (krbd and
        rbd-nbd do this by themselves)."""

    def client_args(self) -> list[str]:
        return ["-c", self.cfg.conf, "--id", self.cfg.client_id, "--keyring", self.cfg.keyring]


class Krbd(Mapper):
    """The kernel RBD client; sysfs tells pool, image and cluster of /dev/rbdN."""

    name = "krbd"

    def __init__(self, cfg: Config, sys_block: str = SYS_BLOCK, sys_rbd: str = SYS_RBD) -> None:
        super().__init__(cfg, sys_block)
        self.sys_rbd = sys_rbd

    def is_mapping_of(self, dev: str, t: Target) -> bool:
        base = os.path.join(self.sys_rbd, os.path.basename(dev).removeprefix("rbd"))
        return (read(f"{base}/pool") == t.pool and read(f"{base}/name") == t.image
                and read(f"{base}/current_snap") in ("-", None) and read(f"{base}/cluster_fsid") == t.fsid)

    def map_device(self, t: Target) -> str:
        if not os.path.isdir(os.path.dirname(self.sys_rbd)) and not _module_available("rbd"):
            raise MapError("krbd is not available on this kernel (no rbd module); "
                           f"set mapper: rbd-nbd or fuse-loop in {self.cfg.source}")
        return run_tool(["rbd", "device", "map", *self.client_args(), t.spec], f"map {t.spec} with krbd",
                        self.cfg.timeouts.osd_op)

    def unmap_device(self, dev: str, t: Target) -> None:
        run_tool(["rbd", "device", "unmap", dev], f"unmap {dev}", self.cfg.timeouts.osd_op)


class RbdNbd(Mapper):
    """rbd-nbd: librbd in a userspace daemon behind /dev/nbdN."""

    name = "rbd-nbd"

    def is_mapping_of(self, dev: str, t: Target) -> bool:
        pid = read(os.path.join(self.sys_block, os.path.basename(dev), "pid"))
        if not pid:
            return False
        argv = procs.cmdline(pid)
        return bool(argv) and os.path.basename(argv[0]) == "rbd-nbd" and t.spec in argv and self.cfg.conf in argv

    def map_device(self, t: Target) -> str:
        if not os.path.exists("/sys/module/nbd") and not _module_available("nbd"):
            raise MapError("rbd-nbd needs the nbd kernel module, which this kernel lacks; "
                           f"set mapper: krbd or fuse-loop in {self.cfg.source}")
        return run_tool(["rbd-nbd", "map", *self.client_args(), *WRITE_THROUGH, t.spec], f"map {t.spec} with rbd-nbd",
                        self.cfg.timeouts.osd_op, leaves_daemon=True)

    def unmap_device(self, dev: str, t: Target) -> None:
        run_tool(["rbd-nbd", "unmap", dev], f"unmap {dev}", self.cfg.timeouts.osd_op)


class FuseLoop(Mapper):
    """rbd-fuse exposing one image as a file, and a loop device over it.

    For kernels without krbd and nbd. One rbd-fuse per image (`-r`), so an
    unmap closes the image and leaves no watcher. Loop devices with minor 0
    are never used: Ganeti treats minor 0 as "not attached".
    """

    name = "fuse-loop"

    def mountpoint(self, t: Target) -> str:
        return os.path.join(self.cfg.run_dir, "fuse", t.fsid, t.pool, t.image)

    def backing_file(self, t: Target) -> str:
        return os.path.join(self.mountpoint(t), t.image)

    def is_mapping_of(self, dev: str, t: Target) -> bool:
        """Bound to t's file, and t's rbd-fuse alive: once rbd-fuse died the loop
        device answers every I/O with EIO and must not be handed out again.
        Only sysfs and /proc are read, nothing rbd-fuse serves."""
        backing = read(os.path.join(self.sys_block, os.path.basename(dev), "loop", "backing_file"))
        return backing == self.backing_file(t) and bool(procs.find("rbd-fuse", arg=self.mountpoint(t)))

    def loops_of(self, t: Target) -> list[str]:
        """Loop devices bound to t's file, live or not."""
        return [f"/dev/{n}" for n in sorted(os.listdir(self.sys_block)) if n.startswith("loop")
                and read(os.path.join(self.sys_block, n, "loop", "backing_file")) == self.backing_file(t)]

    def map_device(self, t: Target) -> str:
        mnt = self.mountpoint(t)
        os.makedirs(mnt, mode=0o700, exist_ok=True)
        run_tool(["rbd-fuse", *self.client_args(), *WRITE_THROUGH, "--log_to_file=false", "-p", t.pool,
                  "-r", t.image, mnt], f"mount {t.spec} with rbd-fuse", self.cfg.timeouts.osd_op)
        if not os.path.exists(self.backing_file(t)):
            self.cleanup(t)
            raise MapError(f"rbd-fuse did not expose {t.spec}; check that the image exists and the client may read it")
        last = "no free loop device"
        for loop in self.free_loops():
            try:
                run_tool(["losetup", "--direct-io=on", loop, self.backing_file(t)], f"loop {t.spec}", 30)
                return loop
            except MapError as exc:  # taken meanwhile by someone else: try the next
                last = exc.message
        self.cleanup(t)
        raise MapError(f"cannot attach {t.spec} to a loop device: {last}")

    def free_loops(self) -> list[str]:
        """Unused /dev/loopN with N >= 1, lowest first."""
        names = [n for n in os.listdir(self.sys_block) if n.startswith("loop") and n[4:].isdigit()]
        free = [n for n in names if int(n[4:]) > 0 and not os.path.exists(os.path.join(self.sys_block, n, "loop"))]
        return [f"/dev/{n}" for n in sorted(free, key=lambda n: int(n[4:]))]

    def unmap_device(self, dev: str, t: Target) -> None:
        run_tool(["losetup", "-d", dev], f"detach {dev}", 30)

    def refresh(self, dev: str, t: Target, nbytes: int | None = None) -> None:
        """rbd-fuse shows a grown image's size about a second later; then the
        loop device takes it with `losetup -c`. Without `nbytes` (attach), only
        a size rbd-fuse already shows is taken, without waiting."""
        backing = self.backing_file(t)
        deadline = time.monotonic() + (self.cfg.timeouts.osd_op if nbytes else 0)
        while True:
            try:
                size = os.stat(backing).st_size
            except OSError:
                return
            if nbytes is None or size >= nbytes or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        sectors = read(os.path.join(self.sys_block, os.path.basename(dev), "size"))
        if sectors is not None and int(sectors) * 512 < size:
            run_tool(["losetup", "-c", dev], f"resize {dev}", 30)

    def cleanup(self, t: Target) -> None:
        """Detach loop devices left on t's file (a dead or half-made mapping's;
        never a live one's: map and unmap call this only without one), unmount,
        then wait for rbd-fuse to close the image: until it has, its watcher
        stays and a remove right after would be refused."""
        for loop in self.loops_of(t):
            run_tool(["losetup", "-d", loop], f"detach {loop}, left on {t.spec}", 30)
        mnt = self.mountpoint(t)
        pids = procs.find("rbd-fuse", arg=mnt)
        if _dead_mount(mnt):  # rbd-fuse died: the mount answers ENOTCONN and ismount() says no
            run_tool(["umount", "-l", mnt], f"unmount the dead rbd-fuse of {t.spec}", 30)
        elif os.path.ismount(mnt):
            run_tool(["umount", mnt], f"unmount rbd-fuse of {t.spec}", 30)
        deadline = time.monotonic() + self.cfg.timeouts.osd_op
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if procs.alive(p)]
            time.sleep(0.01)
        for pid in pids:  # stuck closing (cluster gone): it holds nothing we need
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)


def _dead_mount(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _module_available(name: str) -> bool:
    try:
        return subprocess.run(["modprobe", "-n", name], capture_output=True, timeout=10,
                              env={"PATH": PATH}, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


MAPPERS: dict[str, type[Mapper]] = {m.name: m for m in (Krbd, RbdNbd, FuseLoop)}


def for_config(cfg: Config) -> Mapper:
    return MAPPERS[cfg.mapper](cfg)


def detect() -> str:
    """The best mapper this host can run: krbd, else rbd-nbd, else fuse-loop."""
    if os.path.isdir("/sys/bus/rbd") or _module_available("rbd"):
        return "krbd"
    if os.path.exists("/sys/module/nbd") or _module_available("nbd"):
        return "rbd-nbd"
    return "fuse-loop"
