"""fuse-loop: rbd-fuse of one image plus a loop device over its file.

For kernels with neither krbd nor nbd, like our CI machines.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

from ganeti_ceph import procs, runner
from ganeti_ceph.errors import ToolFailed
from ganeti_ceph.rbd.mappers import table
from ganeti_ceph.rbd.mappers.base import WRITE_THROUGH, MapError, Mapper, module_available, read
from ganeti_ceph.rbd.mappers.table import Target

MOUNT_TREE = "fuse"  # <run_dir>/fuse/...: the mounts, a tree nothing else may look into (see mount)
MOUNTS = 3  # rbd-fuse processes a map asks for the image's file before it gives up
MOUNT_PAUSE_S = 0.25  # between two of them


class FuseLoop(Mapper):
    """rbd-fuse exposing one image as a file, and a loop device over it.

    For kernels without krbd and nbd. One rbd-fuse per image (`-r`), so an
    unmap closes the image and leaves no watcher. Loop devices with minor 0
    are never used: Ganeti treats minor 0 as "not attached".
    """

    name = "fuse-loop"
    preference = 30
    tools = (("rbd-fuse", "rbd-fuse is missing; install rbd-fuse"), ("losetup", "losetup is missing; install mount"))
    devices = tuple((dev, f"{dev} is missing: the fuse-loop mapper needs FUSE and loop devices")
                    for dev in ("/dev/fuse", "/dev/loop-control"))

    @classmethod
    def available(cls) -> bool:
        return module_available("fuse")

    def mountpoint(self, t: Target) -> str:
        return table.tree_path(self.cfg.run_dir, MOUNT_TREE, t)

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
        if "/" in t.pool:  # rbd-fuse 16 has --namespace; the mapper does not use it (untested here)
            raise MapError(f"the fuse-loop mapper does not map {t.spec}, an image in an RBD namespace; use "
                           "access=userspace or the krbd or rbd-nbd mapper")
        deadline = time.monotonic() + self.cfg.timeouts.osd_op
        missing = self.mount(t)
        for _ in range(MOUNTS - 1):
            if missing != errno.ENOENT or time.monotonic() >= deadline:
                break
            self.cleanup(t)  # and ask a new rbd-fuse (see mount), a moment later
            time.sleep(MOUNT_PAUSE_S)
            missing = self.mount(t)
        if missing:
            self.cleanup(t)
            raise MapError(f"rbd-fuse did not expose {t.spec} ({os.strerror(missing)}); check that the image "
                           "exists and the client may read it")
        last = "no free loop device"
        for loop in self.free_loops():
            try:
                runner.run(["losetup", "--direct-io=on", loop, self.backing_file(t)], f"loop {t.spec}", 30)
                return loop
            except ToolFailed as exc:  # taken meanwhile by someone else: try the next
                last = exc.message
        self.cleanup(t)
        raise MapError(f"cannot attach {t.spec} to a loop device: {last}")

    def mount(self, t: Target) -> int:
        """Mount t with a new rbd-fuse; 0 once its file is there, else the errno of the one lookup.

        rbd-fuse (Ceph 16) lists the pool on every lookup and opens the image on the first one
        that finds it, keeping the handle in a table. An open that failed or raced leaves a broken
        entry there (a name without a handle, which the next lookup would use), so a miss (ENOENT)
        is asked of a new rbd-fuse, up to MOUNTS of them within timeouts.osd_op. The table is not
        safe for parallel requests and rbd-fuse has no single-threaded mode (its -s is
        --namespace): a lookup made while another process looks into the mount can find nothing
        (doc/reliability.md), so nothing else may look under <run_dir>/fuse (doc/extstorage.md)."""
        mnt = self.mountpoint(t)
        os.makedirs(mnt, mode=0o700, exist_ok=True)
        runner.run(["rbd-fuse", *self.client_args(), *WRITE_THROUGH, "--log_to_file=false", "-p", t.pool,
                   "-r", t.image, mnt], f"mount {t.spec} with rbd-fuse", self.cfg.timeouts.osd_op)
        try:
            os.stat(self.backing_file(t))
        except OSError as exc:
            return exc.errno or errno.EIO
        return 0

    def free_loops(self) -> list[str]:
        """Unused /dev/loopN with N >= 1, lowest first."""
        names = [n for n in os.listdir(self.sys_block) if n.startswith("loop") and n[4:].isdigit()]
        free = [n for n in names if int(n[4:]) > 0 and not os.path.exists(os.path.join(self.sys_block, n, "loop"))]
        return [f"/dev/{n}" for n in sorted(free, key=lambda n: int(n[4:]))]

    def unmap_device(self, dev: str, t: Target) -> None:
        runner.run(["losetup", "-d", dev], f"detach {dev}", 30)

    def refresh(self, dev: str, t: Target, nbytes: int | None = None) -> None:
        """rbd-fuse shows a grown image's size about a second later; then the
        loop device takes it with `losetup -c`. Without `nbytes` (attach), only
        a size rbd-fuse already shows is taken, without waiting."""
        backing = self.backing_file(t)

        def shown() -> int | None:
            with contextlib.suppress(OSError):
                return os.stat(backing).st_size
            return None

        deadline = time.monotonic() + (self.cfg.timeouts.osd_op if nbytes else 0)
        size = runner.until(deadline, shown, lambda n: n is None or nbytes is None or n >= nbytes, 0.05)
        if size is None:
            return
        sectors = read(os.path.join(self.sys_block, os.path.basename(dev), "size"))
        if sectors is not None and int(sectors) * 512 < size:
            runner.run(["losetup", "-c", dev], f"resize {dev}", 30)

    def cleanup(self, t: Target) -> None:
        """Detach loop devices left on t's file (a dead or half-made mapping's;
        never a live one's: map and unmap call this only without one), unmount,
        then wait for rbd-fuse to close the image: until it has, its watcher
        stays and a remove right after would be refused."""
        for loop in self.loops_of(t):
            runner.run(["losetup", "-d", loop], f"detach {loop}, left on {t.spec}", 30)
        mnt = self.mountpoint(t)
        pids = procs.find("rbd-fuse", arg=mnt)
        if _dead_mount(mnt):  # rbd-fuse died: the mount answers ENOTCONN and ismount() says no
            runner.run(["umount", "-l", mnt], f"unmount the dead rbd-fuse of {t.spec}", 30)
        elif os.path.ismount(mnt):
            runner.run(["umount", mnt], f"unmount rbd-fuse of {t.spec}", 30)
        pids = runner.until(time.monotonic() + self.cfg.timeouts.osd_op,
                            lambda: [p for p in pids if procs.alive(p)], lambda left: not left, 0.01)
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
