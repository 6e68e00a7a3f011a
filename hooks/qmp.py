"""A minimal QMP client: Ganeti's KVM control socket, one command at a time.

Ganeti 3.0 grows a disk without telling QEMU, so a running guest keeps
seeing the old size; the disk-grow hook asks QEMU to `block_resize`.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from ganeti_ceph.ganeti import run


class QmpError(Exception):
    pass


class Qmp:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
        self.file.readline()  # greeting
        self.call("qmp_capabilities")

    def call(self, command: str, **arguments: Any) -> Any:
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline() or "{}")
            if "return" in reply:
                return reply["return"]
            if "error" in reply or not reply:
                raise QmpError(reply.get("error", {}).get("desc", "no reply from QEMU"))

    def close(self) -> None:
        self.sock.close()


def drive_of(blocks: list[dict], volume: str, instance: str, index: int,
             run_dir: str = run.RUN_DIR) -> str | None:
    """The QMP device name of a disk: by its RBD image (userspace) or its
    instance-disks link (kernelspace). Pure, for tests."""
    link = run.instance_disk_link(instance, index, run_dir)
    for dev in blocks:
        name = dev.get("inserted", {}).get("image", {}).get("filename", "")
        if f'"image": "{volume}"' in name or name == link or name.endswith(f"/{volume}"):
            return dev.get("device") or dev.get("qdev")
    return None
