"""Is this device ours, empty, or anything else? Read-only probes for an OSD's disk.

"Empty" must be proven, not guessed from the first bytes: md 1.2 and bcache
superblocks sit at 4 KiB, btrfs at 64 KiB, others further in. So the
system's own probes (libblkid through `wipefs --no-act` and `blkid -p`, over
the whole device) must find no signature, and the kernel must show no
holder (LVM, dm-crypt, md, bcache), partition, mount, swap or loop device
on it. A probe that fails or times out means "not usable", never "empty".
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError

BLUESTORE_LABEL = b"bluestore block device\n"
DISK_DIR = "/dev/disk"
STABLE_DIRS = ("by-id", "by-path", "by-partuuid")  # udev's names that a reboot does not renumber
LOOP_MAJOR = 7
MIN_DEVICE_BYTES = 2 * 1024**3
MIN_DB_WAL_BYTES = 96 * 1024**2  # Ceph's own default WAL size (bluestore_block_wal_size)
PROBE_TIMEOUT = 30.0
HELD_WAIT_S = 10.0  # an OSD told to stop lets go of its device's lock at its exit
ENV = runner.clean_env(runner.SYSTEM_PATH)
TOOL_ENV = runner.clean_env(runner.SYSTEM_PATH, HOME="/root")  # Ceph tools want a HOME
# wipefs alone leaves the rest of a superblock, which the zero-head rule below still sees as data.
WIPE_HINT = "wipe it first only if it is spare (wipefs -a DEV; dd if=/dev/zero of=DEV bs=1M count=10)"


def label_uuid(head: bytes) -> str | None:
    """The OSD uuid in a bluestore label at the device's start, or None (pure)."""
    if not head.startswith(BLUESTORE_LABEL):
        return None
    return head[len(BLUESTORE_LABEL):].split(b"\n", 1)[0].decode(errors="replace")


def is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def stable_name(dev: str, disk_dir: str = DISK_DIR) -> str | None:
    """A name of block device `dev` that survives a reboot renumbering sdX, or None.

    A name under /dev/disk/by-id (by-path, by-partuuid) is kept as given;
    a kernel name (/dev/sdb) is translated to udev's link to the same device
    (by-id first). A loop device has no such link: its name is fixed by
    whoever attached it, so it is kept.
    """
    if any(dev.startswith(f"{disk_dir}/{d}/") for d in STABLE_DIRS):
        return dev
    real = os.path.realpath(dev)
    for d in STABLE_DIRS:
        for name in _listdir(os.path.join(disk_dir, d)):
            link = os.path.join(disk_dir, d, name)
            if os.path.realpath(link) == real:
                return link
    try:
        return dev if os.major(os.stat(real).st_rdev) == LOOP_MAJOR else None
    except OSError:
        return None


def read_head(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4096)


def zero_head(dev: str, osd_uuid: str, wait: float = HELD_WAIT_S) -> None:
    """Forget a store of ours (its bluestore label and bluefs superblock), nothing else.

    `dev` may be a link (a /dev/disk/by-* name): it is resolved once, and the write goes only to the
    device that was resolved (same rdev, or inode for a file, on the open descriptor) and whose head,
    read through that descriptor, still holds the label naming `osd_uuid`. Never under a running
    OSD: ceph-osd takes an fcntl write lock on its device (BlueStore's KernelDevice), which we must
    get within `wait` seconds (an OSD stopping lets go at its exit); O_EXCL also refuses a device a
    mount or a device-mapper/md target holds.
    """
    real = os.path.realpath(dev)
    checked = os.stat(real)
    try:
        fd = os.open(real, os.O_RDWR | os.O_EXCL)
    except OSError as exc:
        raise GanetiCephError(f"{dev} ({real}) is in use ({exc.strerror}): something holds it open "
                              "exclusively; nothing was written") from None
    try:
        if not runner.until(time.monotonic() + wait, lambda: _write_locked(fd), interval=0.2):
            raise GanetiCephError(f"{dev} ({real}) is locked by a running process (a ceph-osd holds its device "
                                  f"so): stop it and run this again; nothing was written")
        st = os.fstat(fd)
        same = (st.st_rdev == checked.st_rdev if stat.S_ISBLK(st.st_mode)
                else (st.st_dev, st.st_ino) == (checked.st_dev, checked.st_ino))
        if not same or stat.S_ISBLK(st.st_mode) != stat.S_ISBLK(checked.st_mode):
            raise GanetiCephError(f"{dev} changed while it was being zeroed ({real}); nothing was written")
        found = label_uuid(os.pread(fd, 4096, 0))
        if found != osd_uuid:
            raise GanetiCephError(f"{dev} ({real}) no longer holds the label of OSD {osd_uuid} (it holds "
                                  f"{found or 'no label'}); nothing was written")
        os.pwrite(fd, b"\0" * 65536, 0)
        os.fsync(fd)
    finally:
        os.close(fd)  # and with it our lock


def _write_locked(fd: int) -> bool:
    """Take the fcntl write lock ceph-osd takes on its device (not flock: the two do not see each other)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def read_label(dev: str) -> dict[str, str]:
    """The bluestore label of `dev`, as ceph-bluestore-tool reads it (bounded)."""
    out = runner.run(["ceph-bluestore-tool", "show-label", "--dev", dev], f"read the label of {dev}", 60,
                     env=TOOL_ENV)
    try:
        return next(iter(json.loads(out).values()), {})
    except (ValueError, AttributeError):
        raise GanetiCephError(f"cannot read the bluestore label of {dev}: unexpected output") from None


def signatures(path: str) -> list[str]:
    """Every signature libblkid finds anywhere on `path`, as "TYPE at OFFSET"."""
    out = runner.run(["wipefs", "--no-act", "--json", path], f"probe {path}", PROBE_TIMEOUT, env=ENV)
    found = [f"{s.get('type')} at {s.get('offset')}" for s in (json.loads(out) if out.strip() else {})
             .get("signatures", [])]
    # blkid -p: 0 found, 2 nothing, anything else (8: ambivalent) raises.
    out = runner.run(["blkid", "-p", "-o", "export", path], f"probe {path}", PROBE_TIMEOUT, env=ENV, ok=(0, 2))
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key in ("TYPE", "PTTYPE") and not any(f.startswith(f"{value} ") for f in found):
            found.append(f"{value} (blkid)")
    return found


def _sysfs_dir(st: os.stat_result) -> str:
    return os.path.realpath(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")


def _partitions(sysdir: str) -> list[str]:
    try:
        return sorted(e for e in os.listdir(sysdir) if os.path.exists(os.path.join(sysdir, e, "partition")))
    except OSError:
        return []


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _mounted(devnums: set[str], paths: set[str]) -> str | None:
    """The mount point of a file system on one of `devnums` (maj:min) or `paths`."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                source = fields[fields.index("-") + 2] if "-" in fields else ""
                if fields[2] in devnums or (source.startswith("/") and os.path.realpath(source) in paths):
                    return fields[4]
    except OSError:
        pass
    return None


def _swap(paths: set[str]) -> str | None:
    try:
        with open("/proc/swaps") as fh:
            return next((ln.split()[0] for ln in fh.readlines()[1:]
                         if ln.split() and os.path.realpath(ln.split()[0].replace("\\040", " ")) in paths), None)
    except OSError:
        return None


def _loops_on(path: str) -> list[str]:
    """Loop devices whose backing file is `path`. The kernel gives that file's canonical path: compared as
    text, never resolved (resolving another loop's file on a dead FUSE mount would hang)."""
    real = os.path.realpath(path)
    found = []
    for name in _listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as fh:
                if fh.read().rstrip("\n") == real:
                    found.append(f"/dev/{name}")
        except OSError:
            continue
    return found


def in_use(path: str, st: os.stat_result) -> str | None:
    """Why the kernel says `path` is in use (holder, partition, mount, swap, loop), or None."""
    real = os.path.realpath(path)
    if stat.S_ISREG(st.st_mode):
        loops = _loops_on(real)
        if loops:
            return f"in use: backs {', '.join(loops)}"
        swap = _swap({real})
        return f"in use: swap file ({swap})" if swap else None
    sysdir = _sysfs_dir(st)
    holders = _listdir(os.path.join(sysdir, "holders"))
    if holders:
        return f"in use: held by {', '.join(holders)} (LVM, dm-crypt, md or bcache)"
    parts = _partitions(sysdir)
    if parts:
        return f"not usable: has partitions ({', '.join(parts)}); {WIPE_HINT}"
    devnums = {f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"}
    where = _mounted(devnums, {real})
    if where:
        return f"in use: mounted on {where}"
    swap = _swap({real})
    if swap:
        return f"in use: swap ({swap})"
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_EXCL))
    except OSError:
        return "in use: held open exclusively by another program"
    return None


def device_state(path: str, osd_uuid: str, min_bytes: int = MIN_DEVICE_BYTES) -> str:
    """"empty", "ours" (holds this OSD) or why it cannot be used; never writes. `min_bytes`: an OSD's data
    device needs more than its DB or WAL device."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"not usable: {(exc.strerror or str(exc)).lower()}"
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return "not usable: neither a block device nor a file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            size = fh.seek(0, os.SEEK_END)
    except OSError as exc:
        return f"not usable: {(exc.strerror or str(exc)).lower()}"
    found = label_uuid(head)
    if found is not None:
        return "ours" if found == osd_uuid else f"not usable: holds another OSD ({found})"
    if size < min_bytes:
        return f"not usable: {size // 1024**2} MiB, it needs at least {min_bytes // 1024**2} MiB"
    busy = in_use(path, st)
    if busy:
        return busy
    try:
        sigs = signatures(path)
    except GanetiCephError as exc:
        return f"not usable: cannot prove it empty ({exc.message})"
    if sigs:
        return f"not usable: holds data ({', '.join(sigs)}); {WIPE_HINT}"
    if any(head):
        return f"not usable: holds data (no known signature, but its first 4 KiB are not zero); {WIPE_HINT}"
    return "empty"
