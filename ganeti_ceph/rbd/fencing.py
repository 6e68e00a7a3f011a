"""Fencing: a node's whole IP in the OSD blocklist, read, added and lifted here only.

A fence cuts off every Ceph client of one IP (`ceph osd blocklist add
<ip>:0/0`): the node's QEMUs and mappings too, so a dead node's VM cannot
write after its disks were handed over. Blocklisting one client address is
not fencing: the process that recorded an open is long gone, while the
node's VM may still write. Adding an entry needs only a client key
(`profile rbd` may add blocklist entries); lifting needs the admin key, so
a fenced node cannot lift its own fence. Who is fenced, and when, is the
caller's decision (open records: locks.py; a dead primary: the hooks).

Releasing a dead client is the other use of the blocklist: one exact
address (`ip:0/nonce`) of a process of ours proven gone (clients.py), so
that its watch and lock go at once instead of after Ceph's watch timeout.
"""

from __future__ import annotations

import time

from ganeti_ceph.errors import GanetiCephError
from ganeti_ceph.session import Session

FENCE_SECONDS = 10 * 365 * 86400.0  # until lifted, not Ceph's default hour
# A dead client's address is never used again; a week, not Ceph's default hour, because remove tells a
# dead client's lasting watch (remove.py) from a live one by this entry.
RELEASE_SECONDS = 7 * 86400.0
# The OSDs drop a blocklisted client's watch with their next map, usually milliseconds after the monitors
# answered; clients.py (after a release) and remove.py (before calling a watch lasting) wait this long.
WATCH_DROP_S = 5.0


def plain_addr(addr: str) -> str:
    """One client address as watchers, lock owners and the blocklist print it:
    '[v2:1.2.3.4:0/5,v1:1.2.3.4:0/5]', 'v2:1.2.3.4:0/5', '1.2.3.4:0/5' -> '1.2.3.4:0/5'."""
    first = addr[1:-1] if addr.startswith("[v") and addr.endswith("]") else addr
    first = first.split(",")[0]
    return first.split(":", 1)[1] if first.startswith(("v1:", "v2:", "any:")) else first


def ip_of(addr: str) -> str:
    """'v2:1.2.3.4:0/5', '[v2:1.2.3.4:0/5,v1:...]', '1.2.3.4:0/5' -> '1.2.3.4';
    '[v2:[::1]:0/5]' or '[::1]:0/5' -> '::1' (IPv6 without brackets)."""
    return plain_addr(addr).rsplit(":", 1)[0].strip("[]")


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


def released_clients(session: Session) -> set[str]:
    """Blocklisted single client addresses (`ip:0/nonce`, nonce not 0): dead clients that can never
    write again. A node's fence (`ip:0/0`) is not among them: it is lifted when the node is back."""
    return {plain_addr(a) for a in read_blocklist(session) if not a.endswith("/0")}


def add(session: Session, ip: str, seconds: float = FENCE_SECONDS) -> str:
    """Fence `ip` (a client key may); returns the entry added."""
    entry = fence_entry(ip)
    session.mon_command("osd blocklist", blocklistop="add", addr=entry, expire=seconds)
    return entry


def client_nonce(addr: str) -> int:
    """'1.2.3.4:0/5' -> 5; 0 for an address that names no one client ('1.2.3.4:0/0', '1.2.3.4'):
    blocklisting such an address fences the whole node, every VM on it."""
    _, slash, nonce = plain_addr(addr).rpartition("/")
    return int(nonce) if slash and nonce.isdigit() else 0


def release_client(session: Session, addr: str, seconds: float = RELEASE_SECONDS) -> None:
    """Blocklist one dead client's exact address: the OSDs drop its watches at once. Never a
    node's `ip:0/0` (that is a fence): refused here, whatever the caller passes."""
    if not client_nonce(addr):
        raise GanetiCephError(f"refusing to release {addr!r}: it names no one client (nonce 0 or none), "
                              "and blocklisting it would fence its whole node")
    session.mon_command("osd blocklist", blocklistop="add", addr=plain_addr(addr), expire=seconds)


def watch_drop_deadline(session: Session) -> float:
    """When to stop waiting for a blocklisted client's watch to go (monotonic), within the call's osd_op."""
    return time.monotonic() + min(WATCH_DROP_S, session.cfg.timeouts.osd_op)


def lift(session: Session, entry: str) -> None:
    """Remove one blocklist entry (needs the admin key)."""
    session.mon_command("osd blocklist", blocklistop="rm", addr=entry)
