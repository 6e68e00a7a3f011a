"""open/close: Ganeti's handover of a volume between nodes.

Each node that opens a volume records itself in the image metadata under
`ganeti.open.<node>`: exclusive for open(True), shared during a live
migration (Ganeti calls open(False) on both nodes), with the IP address its
Ceph clients use. close removes the node's record. Another node's exclusive
record is overruled only when that node is fenced: its whole IP is in the
OSD blocklist (`ceph osd blocklist add <ip>:0/0`), which cuts off every Ceph
client of the node, its QEMUs and mappings included (see fencing.py). Once
the owner is fenced, its RBD exclusive lock is broken too.

Records live in the image header's metadata, not in RBD advisory locks:
those share the lock the exclusive-lock feature uses, and would block the
VM's own I/O. Ganeti runs one job per instance at a time, so two nodes do
not race on one volume's records.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import rados
import rbd

from ganeti_ceph.errors import Busy
from ganeti_ceph.rbd import header
from ganeti_ceph.rbd.fencing import client_ip, fence_entry, fenced, ip_of, read_blocklist
from ganeti_ceph.session import Session

PREFIX = "ganeti.open."


@dataclass(frozen=True)
class Holder:
    node: str
    exclusive: bool
    ip: str


def parse_holders(metadata: dict[str, str]) -> list[Holder]:
    """Open records from image metadata (pure); unreadable records count as exclusive."""
    out = []
    for key, value in sorted(metadata.items()):
        if not key.startswith(PREFIX):
            continue
        try:
            rec = json.loads(value)
            out.append(Holder(key[len(PREFIX):], rec.get("mode") != "shared", str(rec.get("ip", ""))))
        except (ValueError, AttributeError):
            out.append(Holder(key[len(PREFIX):], True, ""))
    return out


def _break_fenced_exclusive_lock(img: rbd.Image, blocklist: set[str]) -> None:
    """Break the RBD exclusive lock if its owner (a dead node's QEMU or mapping) is fenced."""
    lockers = (img.list_lockers() or {}).get("lockers", [])
    if any(fenced(blocklist, ip_of(addr)) for _, _, addr in lockers):
        for owner in img.lock_get_owners():
            img.lock_break(owner["mode"], owner["owner"])


def open_volume(session: Session, pool: str, name: str, node: str, exclusive: bool) -> str:
    """Record this node as opener; returns what was done. The records are read and written on the
    header object (header.py): no image is opened unless a fenced owner's lock must be broken."""
    with session.ioctx(pool) as ioctx, session.errors(f"open {pool}/{name}"):
        oid = header.oid(ioctx, name)
        current = parse_holders(header.read(ioctx, name, oid))
        blocklist: set[str] | None = None
        for h in current:
            if h.node == node or (not exclusive and not h.exclusive):
                continue
            blocklist = read_blocklist(session) if blocklist is None else blocklist
            if not fenced(blocklist, h.ip):
                how = "exclusively" if h.exclusive else "for migration"
                raise Busy(
                    f"volume {pool}/{name} is open {how} on node {h.node} ({h.ip or 'address unknown'}); "
                    f"close it there first, or if {h.node} is dead, fence it first: "
                    f"ceph osd blocklist add {fence_entry(h.ip) if h.ip else '<its ip>:0/0'}"
                )
            header.remove(ioctx, name, PREFIX + h.node, oid)
        if blocklist:
            with rbd.Image(ioctx, name) as img:
                _break_fenced_exclusive_lock(img, blocklist)
        mine = next((h for h in current if h.node == node), None)
        if mine and mine.exclusive == exclusive:
            return "already open on this node"
        record = {"mode": "exclusive" if exclusive else "shared", "ip": client_ip(session),
                  "since": int(time.time())}
        header.write(ioctx, name, {PREFIX + node: json.dumps(record, sort_keys=True)}, oid)
    return "opened exclusively" if exclusive else "opened shared (migration)"


def close_volume(session: Session, pool: str, name: str, node: str) -> bool:
    """Drop this node's record; True if there was one. A missing image is fine."""
    with session.ioctx(pool) as ioctx, session.errors(f"close {pool}/{name}"):
        try:
            oid = header.oid(ioctx, name)
        except rados.ObjectNotFound:
            return False
        # False also when a concurrent close of the same record took it first.
        return header.remove(ioctx, name, PREFIX + node, oid)
