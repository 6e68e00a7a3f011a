"""How a node reaches a volume: QEMU's own librbd (userspace) or a block device.

The userspace URI must pass Ganeti 3.0 (-drive, HMP drive_add: no raw
commas) and Ganeti 3.1's pattern ^rbd:(\\w+)/([a-z0-9-.]+)(:id=...)?$, so it
carries no conf or monitors: QEMU reads /etc/ceph/ceph.conf and the
client's keyring there.
"""

from __future__ import annotations

import re

URI_31 = re.compile(r"^rbd:(\w+)/([a-z0-9-.]+)(:id=[a-z0-9-._]+)?$")


def userspace_uri(pool: str, image: str, client_id: str) -> str:
    uri = f"rbd:{pool}/{image}"
    return uri if client_id == "admin" else f"{uri}:id={client_id}"
