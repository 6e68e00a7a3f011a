"""How a node reaches a volume: QEMU's own librbd (userspace) or a block device.

The userspace URI must pass Ganeti 3.0 (-drive, HMP drive_add: no raw
commas) and Ganeti 3.1's pattern ^rbd:(\\w+)/([a-z0-9-.]+)(:id=...)?$, so it
carries no conf or monitors: QEMU reads /etc/ceph/ceph.conf and the
client's keyring there. That conf may name another cluster than the one the
provider's own `conf` reaches (where it just checked the image), and an
image of the same name there would be opened instead: `check_qemu_conf`
refuses unless both name the same fsid. A catalogue backend on another
cluster (its own conf) is the exception: its URI names its conf and keyring
files (paths, never keys), which Ganeti 3.0 passes to QEMU as they are.
"""

from __future__ import annotations

import os
import re

from ganeti_ceph.config import conf_fsid
from ganeti_ceph.errors import ConfigError

QEMU_CONF = "/etc/ceph/ceph.conf"


def qemu_keyring(client_id: str) -> str:
    """The keyring QEMU reads for `client_id` next to QEMU_CONF (Ceph's default keyring path)."""
    return os.path.join(os.path.dirname(QEMU_CONF), f"ceph.client.{client_id}.keyring")


URI_31 = re.compile(r"^rbd:(\w+)/([a-z0-9-.]+)(:id=[a-z0-9-._]+)?$")


def userspace_uri(pool: str, image: str, client_id: str, conf: str = "", keyring: str = "") -> str:
    """QEMU's rbd: filename; `conf`/`keyring` only for a cluster other than QEMU_CONF's."""
    uri = f"rbd:{pool}/{image}"
    uri = uri if client_id == "admin" else f"{uri}:id={client_id}"
    return f"{uri}:conf={conf}:keyring={keyring}" if conf else uri


def check_qemu_conf(fsid: str, source: str, path: str = QEMU_CONF) -> None:
    """QEMU's conf names the provider's cluster. A missing file is left to
    the start hook, which vetoes it (QEMU could reach no cluster at all)."""
    if not os.path.exists(path):
        return
    theirs = conf_fsid(path)
    if theirs != fsid:
        named = f"names fsid {theirs}" if theirs else "names no fsid"
        raise ConfigError(f"{path}, which QEMU reads for userspace disks, {named}, but the cluster of {source} is "
                          f"{fsid}; make {path} describe that cluster (fsid = {fsid})")
