"""What a node's QEMU has open: QMP `query-block` on Ganeti's control socket, from inside the node."""

from __future__ import annotations

import json
from typing import Protocol

QMP = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", "query-block"):
    f.write(json.dumps({"execute": cmd}) + "\\n"); f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            break
print(json.dumps(reply.get("return", [])))
"""


class Runner(Protocol):
    def run(self, index: int, argv: list[str], check: bool = True, timeout: float = 300) -> object: ...


def drives(tb: Runner, index: int, instance: str) -> list[tuple[str, str, int]]:
    """(device, what QEMU opened, size in bytes) for each drive with a medium.

    What QEMU opened is `rbd:<pool>/<image>:id=<user>` for its own librbd
    (userspace), else the file name (the instance-disks link, kernelspace).
    """
    sock = f"/var/run/ganeti/kvm-hypervisor/ctrl/{instance}.qmp"
    res = tb.run(index, ["python3", "-c", QMP, sock], timeout=60)
    out = []
    for dev in json.loads(res.stdout):  # type: ignore[attr-defined]
        image = dev.get("inserted", {}).get("image", {})
        if not image:
            continue
        name = image.get("filename", "")
        if name.startswith("json:"):
            spec = json.loads(name[5:]).get("file", {})
            name = f"rbd:{spec.get('pool')}/{spec.get('image')}:id={spec.get('user')}"
        out.append((dev.get("device") or dev.get("qdev") or "", name, int(image.get("virtual-size", 0))))
    return out
