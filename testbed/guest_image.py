"""A tiny bootable Linux guest for the Ganeti test bed: a root file system image, a kernel and an initramfs.

Every Ganeti test used to run QEMU with empty disks; this guest lets an
instance really boot from its RBD disk. Everything comes from Debian
packages: the kernel and busybox-static that testbed.kernel unpacks, and
resize2fs with its libraries from the host's e2fsprogs (busybox has none).

- root.img (ROOT_MIB, ext4 made with `mke2fs -d`): busybox and its applet
  links, resize2fs, and ROOT_INIT as /sbin/init, which runs a shell on
  ttyS0 that reads one command a line (the tests drive it, see
  testbed.guest_console). What an OS definition writes onto the disk.
- initrd.img: busybox, the modules the root needs (virtio-blk, ext4) and
  INITRD_INIT, which mounts `root=` and switches to it.
- the kernel: Debian's vmlinuz, used as it is.

Built once per input (this file, the kernel, busybox, resize2fs) under
CACHE/<hash>; older builds are removed. Nothing is installed on the host.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import tempfile

from ganeti_ceph import runner
from ganeti_ceph.errors import Busy
from testbed import initramfs
from testbed import kernel as debian_kernel

CACHE = os.environ.get("GANETI_GUEST_CACHE", "/var/cache/ganeti-ceph-test/guest")
ROOT_MIB = 32
BLOCK = 4096
# The root's drivers; what they depend on comes with them (Kernel.in_load_order). crc32c_generic is no
# modinfo dependency: ext4 asks the crypto API for crc32c at mount.
MODULES = ("crc32c_generic", "ext4", "virtio_pci", "virtio_blk")
HOST_TOOLS = ("/sbin/resize2fs",)  # copied with the libraries ldd names
READY = "guest: shell on ttyS0"

INITRD_INIT = """#!/bin/sh
# initramfs of the ganeti-ceph test guest: load the root's drivers, mount root=, switch to it.
export PATH=/bin
mkdir -p /dev /proc /newroot
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
for m in {modules}; do insmod /lib/modules/$m.ko || echo "initrd: insmod $m failed"; done
root=$(sed -n 's/.*root=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 -o rw "$root" /newroot; then
    echo "initrd: cannot mount root $root"; sleep 2; poweroff -f
fi
echo "initrd: root $root mounted, switching to it"
umount /proc
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""

ROOT_INIT = """#!/bin/sh
# PID 1 of the ganeti-ceph test guest (on its RBD disk): a shell on ttyS0, one command a line.
export PATH=/bin:/sbin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -c /dev/ttyS0 ] || mount -t devtmpfs devtmpfs /dev
hostname guest
exec </dev/ttyS0 >/dev/ttyS0 2>&1
echo "{ready}, root $(sed -n 's/.*root=\\([^ ]*\\).*/\\1/p' /proc/cmdline), kernel $(uname -r)"
while read -r line; do eval "$line"; done
sync
poweroff -f
"""


@dataclasses.dataclass(frozen=True)
class Guest:
    """The three files an instance boots from (paths in the cache)."""

    vmlinuz: str
    initrd: str
    root: str

    @property
    def root_mib(self) -> int:
        return os.path.getsize(self.root) // 2**20


def libraries(binary: str) -> list[str]:
    """The shared libraries `binary` loads (ldd), the dynamic loader included."""
    out = runner.run(["ldd", binary], f"list the libraries of {binary}", 30)
    return sorted(set(re.findall(r"(/\S+\.so[.\d]*) \(0x", out)))


def _digest(kern: debian_kernel.Kernel, files: list[str]) -> str:
    h = hashlib.sha256()
    for source in (__file__, initramfs.__file__):  # what builds the files
        with open(source, "rb") as fh:
            h.update(fh.read())
    h.update(os.path.realpath(kern.root).encode())
    for path in files:
        with open(path, "rb") as fh:
            h.update(path.encode() + hashlib.sha256(fh.read()).digest())
    return h.hexdigest()[:16]


def _applets(busybox: str) -> list[str]:
    return runner.run([busybox, "--list"], "list busybox applets", 30).split()


def _root_image(kern: debian_kernel.Kernel, tools: list[str], path: str) -> None:
    """root.img: an ext4 image of a directory tree, made by mke2fs -d."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tree:
        for sub in ("bin", "sbin", "dev", "proc", "sys", "tmp", "data", "etc", "root"):
            os.makedirs(os.path.join(tree, sub))
        shutil.copy2(kern.busybox, os.path.join(tree, "bin", "busybox"))
        for applet in _applets(kern.busybox):
            if applet != "busybox":
                os.symlink("busybox", os.path.join(tree, "bin", applet))
        for src in tools:
            dst = os.path.join(tree, src.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.realpath(src), dst)
            os.chmod(dst, 0o755)
        with open(os.path.join(tree, "sbin", "init"), "w") as fh:
            fh.write(ROOT_INIT.format(ready=READY))
        os.chmod(os.path.join(tree, "sbin", "init"), 0o755)
        with open(os.path.join(tree, "etc", "hostname"), "w") as fh:
            fh.write("guest\n")
        runner.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-L", "gnt-guest", "-d", tree,
                    path, f"{ROOT_MIB}M"], "make the guest's root file system", 60)


def _initrd(kern: debian_kernel.Kernel, path: str) -> None:
    mods = kern.in_load_order(MODULES)
    files: dict[str, initramfs.Source] = {
        "init": (INITRD_INIT.format(modules=" ".join(m for m, _ in mods)).encode(), 0o755),
        "bin/busybox": kern.busybox,
    }
    files.update({f"lib/modules/{m}.ko": path for m, path in mods})
    applets = ("sh", "mount", "umount", "insmod", "sed", "sleep", "mkdir", "switch_root", "poweroff")
    initramfs.write(path, files, {f"bin/{a}": "busybox" for a in applets})


def build(cache: str = CACHE) -> Guest:
    """The guest's files, built under `cache` unless already there (one builder at a time)."""
    kern = debian_kernel.fetch()
    tools = sorted({*HOST_TOOLS, *(lib for tool in HOST_TOOLS for lib in libraries(tool))})
    key = _digest(kern, [kern.busybox, *tools])
    where = os.path.join(cache, key)
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, ".lock"), "w") as lock:
        if not runner.flock(lock.fileno(), 300, interval=0.5):
            raise Busy(f"another test session held {lock.name} for 5 minutes")
        if not os.path.isdir(where):
            tmp = tempfile.mkdtemp(dir=cache, prefix="tmp")
            try:
                _root_image(kern, tools, os.path.join(tmp, "root.img"))
                _initrd(kern, os.path.join(tmp, "initrd.img"))
                os.chmod(tmp, 0o755)
                os.rename(tmp, where)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        for old in os.listdir(cache):  # builds of older inputs
            if old not in (key, ".lock"):
                shutil.rmtree(os.path.join(cache, old), ignore_errors=True)
    return Guest(kern.vmlinuz, os.path.join(where, "initrd.img"), os.path.join(where, "root.img"))

