"""Fencing: a node's whole IP in the OSD blocklist, read, added and lifted here only.

A fence cuts off every Ceph client of one IP (`ceph osd blocklist add
<ip>:0/0`): the node's QEMUs and mappings too, so a dead node's VM cannot
write after its disks were handed over. Blocklisting one client address is
not fencing: the process that recorded an open is long gone, while the
node's VM may still write. Adding an entry needs only a client key
(`profile rbd` may add blocklist entries); lifting needs the admin key, so
a fenced node cannot lift its own fence. Who is fenced, and when, is the
caller's decision (open records: locks.py; a dead primary: the hooks).
"""

from __future__ import annotations

from ganeti_ceph.session import Session

FENCE_SECONDS = 10 * 365 * 86400.0  # until lifted, not Ceph's default hour


def ip_of(addr: str) -> str:
    """'v2:1.2.3.4:0/5', '[v2:1.2.3.4:0/5,v1:...]', '1.2.3.4:0/5' -> '1.2.3.4';
    '[v2:[::1]:0/5]' or '[::1]:0/5' -> '::1' (IPv6 without brackets)."""
    first = addr[1:-1] if addr.startswith("[v") and addr.endswith("]") else addr
    first = first.split(",")[0]
    plain = first.split(":", 1)[1] if first.startswith(("v1:", "v2:", "any:")) else first
    return plain.rsplit(":", 1)[0].strip("[]")


def fence_entry(ip: str) -> str:
    """The OSD blocklist entry that cuts off every Ceph client of `ip`, as Ceph
    prints it: `1.2.3.4:0/0`, `[2001:db8::1]:0/0`. The only place it is built.
    (Records of older versions hold a v6 address in brackets: the same entry.)"""
    ip = ip.strip("[]")
    return f"[{ip}]:0/0" if ":" in ip else f"{ip}:0/0"


def fenced(blocklist: set[str], ip: str) -> bool:
    """True if every Ceph client from `ip` is blocklisted."""
    return bool(ip) and fence_entry(ip) in blocklist


def client_ip(session: Session) -> str:
    """The IP this session's Ceph client uses: what an open record names, and what a fence must spare."""
    return ip_of(session.rados.get_addrs())


def read_blocklist(session: Session) -> set[str]:
    return {entry["addr"] for entry in session.mon_command("osd blocklist ls") or []}


def add(session: Session, ip: str, seconds: float = FENCE_SECONDS) -> str:
    """Fence `ip` (a client key may); returns the entry added."""
    entry = fence_entry(ip)
    session.mon_command("osd blocklist", blocklistop="add", addr=entry, expire=seconds)
    return entry


def lift(session: Session, entry: str) -> None:
    """Remove one blocklist entry (needs the admin key)."""
    session.mon_command("osd blocklist", blocklistop="rm", addr=entry)
