"""A Ganeti OS definition whose instances really boot: `gnt-instance add -o boot+default`.

create writes the test guest's root file system (testbed.guest_image) onto
disk 0; export streams disk 0 to stdout and import writes stdin onto it,
so gnt-backup moves whole disks. The guest's kernel and initramfs lie in
the same directory, for the instance's kernel_path/initrd_path (Ganeti's
direct boot: the kernel is a file on the node, the root file system and
everything the guest writes live on the RBD disk).

Every script runs this file with the node's /usr/bin/python3 (Debian's, which
has librados/librbd bindings), so it imports nothing of the project. A disk
comes as a block device path (kernelspace) or as a QEMU URI
`rbd:<pool>/<image>:id=<client>` (userspace: Ganeti gives no device); the
URI is opened with librbd through the node's /etc/ceph/ceph.conf and the
client's keyring named there, as QEMU itself does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

NAME = "boot"
VARIANT = "default"
CHUNK = 4 * 2**20
CEPH_CONF = "/etc/ceph/ceph.conf"
# librados waits forever by default; a script must end (Ganeti bounds the transfer, not our connect).
RADOS_BOUNDS = {"client_mount_timeout": "30", "rados_mon_op_timeout": "30", "rados_osd_op_timeout": "60"}
SCRIPT = ('#!/bin/sh\n# Ganeti OS "boot" (testbed): {action}, by os_boot.py.\n'
          'exec /usr/bin/python3 "$(dirname "$0")/os_boot.py" {action}\n')
ACTIONS = ("create", "import", "export", "rename", "verify")
FILES = ("root.img", "vmlinuz", "initrd.img")  # what install() copies next to the scripts


class Failure(Exception):
    """One line for the Ganeti OS log."""


@contextlib.contextmanager
def _rbd(uri: str, writable: bool) -> Iterator[Any]:
    """The image of a QEMU rbd URI, open."""
    import rados
    import rbd

    spec = uri.removeprefix("kvm:").removeprefix("rbd:")
    path, _, opts = spec.partition(":")
    client = opts.removeprefix("id=") if opts.startswith("id=") else "admin"
    pool, _, image = path.partition("/")
    if not pool or not image:
        raise Failure(f"cannot read disk URI {uri!r}: want rbd:<pool>/<image>[:id=<client>]")
    cluster = rados.Rados(conffile=CEPH_CONF, name=f"client.{client}", conf=RADOS_BOUNDS)
    cluster.connect(timeout=30)
    try:
        with cluster.open_ioctx(pool) as ioctx, rbd.Image(ioctx, image, read_only=not writable) as img:
            yield img
    finally:
        cluster.shutdown()


def _chunks(src: BinaryIO) -> Iterator[bytes]:
    while data := src.read(CHUNK):
        yield data


def copy_in(src: BinaryIO, target: str) -> int:
    """Write everything `src` gives at the start of `target` (path or URI), durably; bytes written."""
    done = 0
    if target.startswith(("rbd:", "kvm:rbd:")):
        with _rbd(target, writable=True) as img:
            size = img.size()
            for data in _chunks(src):
                if done + len(data) > size:
                    raise Failure(f"{target}: the stream is larger than the disk ({size} bytes)")
                img.write(data, done)
                done += len(data)
            img.flush()
        return done
    with open(target, "r+b") as out:
        for data in _chunks(src):
            try:
                out.write(data)
            except OSError as exc:
                raise Failure(f"{target}: write at byte {done} failed ({exc.strerror}): disk too small?") from None
            done += len(data)
        out.flush()
        os.fsync(out.fileno())
    return done


def copy_out(source: str, dst: BinaryIO) -> int:
    """Stream the whole of `source` (path or URI) to `dst`; bytes read."""
    done = 0
    if source.startswith(("rbd:", "kvm:rbd:")):
        with _rbd(source, writable=False) as img:
            size = img.size()
            while done < size:
                data = img.read(done, min(CHUNK, size - done))
                dst.write(data)
                done += len(data)
    else:
        with open(source, "rb") as src:
            for data in _chunks(src):
                dst.write(data)
                done += len(data)
    dst.flush()
    return done


def _disk(env: dict[str, str], *names: str) -> str:
    """The first of `names` that Ganeti set: a device path or else a URI."""
    for name in names:
        if env.get(name):
            return env[name]
    raise Failure(f"Ganeti gave none of {', '.join(names)}: is disk 0 attached?")


def run(action: str, env: dict[str, str], here: str) -> None:
    """One OS script's work; `here` is the OS directory (root.img lives there)."""
    if action == "create":
        image = os.path.join(here, "root.img")
        need = os.path.getsize(image)
        if int(env.get("DISK_0_SIZE", "0")) * 2**20 < need:
            raise Failure(f"disk 0 must hold the {need // 2**20} MiB root image: give it at least that")
        with open(image, "rb") as src:
            copy_in(src, _disk(env, "DISK_0_PATH", "DISK_0_URI"))
    elif action == "export":
        copy_out(_disk(env, "EXPORT_DEVICE", "EXPORT_DISK_URI"), sys.stdout.buffer)
    elif action == "import":
        copy_in(sys.stdin.buffer, _disk(env, "IMPORT_DEVICE", "IMPORT_DISK_URI"))
    elif action not in ACTIONS:
        raise Failure(f"unknown OS action {action!r}: want one of {', '.join(ACTIONS)}")


def install(os_dir: str, files: dict[str, str]) -> str:
    """Write <os_dir>/boot (one of Ganeti's OS search paths inside a node) with its scripts, this file, and
    `files` (FILES name -> host path, e.g. from testbed.guest_image.build()); return its path."""
    target = os.path.join(os_dir, NAME)
    os.makedirs(target, mode=0o755, exist_ok=True)
    texts = {"ganeti_api_version": "20\n", "variants.list": f"{VARIANT}\n", "parameters.list": ""}
    texts.update({action: SCRIPT.format(action=action) for action in ACTIONS})
    for name, text in texts.items():
        with open(os.path.join(target, name), "w") as fh:
            fh.write(text)
        os.chmod(os.path.join(target, name), 0o755 if name in ACTIONS else 0o644)
    for name, src in {**files, "os_boot.py": __file__}.items():
        tmp = os.path.join(target, f".{name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, os.path.join(target, name))
    return target


def main(argv: list[str]) -> int:
    try:
        run(argv[1] if len(argv) > 1 else "", dict(os.environ), os.path.dirname(os.path.abspath(argv[0])))
    except Failure as exc:
        print(f"os boot: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
