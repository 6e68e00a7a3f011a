"""Fencing a dead primary on failover, and lifting the fence when it is back (on the master).

Fencing blocklists whole IPs, which cuts off every Ceph client there: the
wrong IP would cut off a healthy node (the master, say). So the IP fenced
is only one that an open record of the dead node itself names (exactly that
node name, see ganeti_ceph/rbd/locks.py), and never the IP of any other Ganeti
node or of this master's own Ceph client. The blocklist itself is read,
added to and lifted in ganeti_ceph/rbd/fencing.py; lifting needs the admin
key, which only the master holds.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterable

from ganeti_ceph.config import Config, conf_fsid
from ganeti_ceph.errors import UsageError
from ganeti_ceph.ganeti import ssconf as ganeti_state
from ganeti_ceph.rbd import fencing
from ganeti_ceph.rbd.locks import Holder, parse_holders
from ganeti_ceph.session import Session
from gnt_storage import deploy
from hooks import images, say
from hooks.env import HookEnv, same_node

SSCONF = ganeti_state.LIB_DIR
NODED_PORT = 1811


def ssconf(name: str) -> list[str]:
    return ganeti_state.lines(name, SSCONF)


def node_ips() -> list[tuple[str, str]]:
    """(node, ip) for every Ganeti IP of every node: primary and secondary."""
    return ganeti_state.pairs(ssconf("node_primary_ips") + ssconf("node_secondary_ips"))


def ips_of(node: str, pairs: list[tuple[str, str]]) -> set[str]:
    return {ip for name, ip in pairs if same_node(name, node)}


def reachable(ip: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((ip, NODED_PORT), timeout=timeout):
            return True
    except OSError:
        return False


def fence_targets(node: str, holders: Iterable[Holder], protected: set[str]) -> tuple[list[str], list[str]]:
    """(IPs to fence, why others were not): the IPs of `node`'s own open records,
    exactly that node name, never a protected IP. Pure."""
    ips, notes = set(), []
    for h in holders:
        if not same_node(h.node, node):
            continue
        if not h.ip:
            notes.append(f"{node}'s open record names no address")
        elif h.ip in protected:
            notes.append(f"{node}'s open record names {h.ip}, an address of another node or of this master")
        else:
            ips.add(h.ip)
    return sorted(ips), notes


def primary_ip(node: str) -> str:
    """The node's primary IP: where Ganeti's RPC reaches its node daemon. The secondary network may carry
    only replication (noded bound to the primary IP, or firewalled), so it proves nothing about liveness."""
    return next(iter(sorted(ips_of(node, ganeti_state.pairs(ssconf("node_primary_ips"))))), "")


def fence_if_dead(h: HookEnv, cfg: Config) -> None:
    """Fence the old primary if Ganeti marks it offline or its node daemon does not answer on its primary IP."""
    node = h.old_primary or h.primary
    pairs = node_ips()
    ip = primary_ip(node)
    offline = any(same_node(n, node) for n in ssconf("offline_nodes"))
    if not ip or (not offline and reachable(ip)):
        return
    protected = {addr for name, addr in pairs if not same_node(name, node)}
    with Session(cfg) as s:
        with s.errors("get this client's address"):
            protected.add(fencing.client_ip(s))  # this master's own Ceph clients
        holders = [r for d in h.rbd_disks for r in parse_holders(images.find(s, cfg, d).meta)]
        targets, notes = fence_targets(node, holders, protected)
        for note in notes:
            say(f"not fencing: {note}")
        for target in targets:
            fencing.add(s, target)  # for ten years: until lifted
            say(f"fenced {node}: every Ceph client from {target} is blocklisted until the node is back")
    if not targets and not notes:
        say(f"{node} holds no open record of {h.instance}'s disks: nothing to fence")


def admin_config(cfg: Config) -> Config | None:
    """This master's admin access to cfg's cluster, if it keeps one: the keyring
    init-distributed-storage leaves in /var/lib/ganeti-ceph, or the admin keyring
    next to the configured conf (/etc/ceph, a local-cluster's directory)."""
    cluster = os.path.basename(cfg.conf).removesuffix(".conf") or "ceph"
    candidates = [deploy.admin_files(),
                  (cfg.conf, os.path.join(os.path.dirname(cfg.conf), f"{cluster}.client.admin.keyring"))]
    fsid = conf_fsid(cfg.conf)
    for conf, keyring in candidates:
        if os.access(conf, os.R_OK) and os.access(keyring, os.R_OK) and conf_fsid(conf) == fsid:
            return dataclasses.replace(cfg, conf=conf, keyring=keyring, client_id="admin")
    return None


def lift_fence(name: str, cfg: Config, ip: str = "") -> None:
    """Lift the fence of a node back in service: the entries of its Ganeti IPs (admin key)."""
    entries = sorted(fencing.fence_entry(a) for a in ({ip} | ips_of(name, node_ips())) if a)
    admin = admin_config(cfg)
    with Session(admin or cfg) as s:
        blocklist = fencing.read_blocklist(s) if entries else set()
        fenced = [e for e in entries if e in blocklist]
        if fenced and admin is None:
            raise UsageError(f"{name} is still fenced ({', '.join(fenced)}): lifting needs the admin key, and this "
                             f"master has none for {cfg.conf}; run `ceph osd blocklist rm <entry>` as client.admin")
        for entry in fenced:
            fencing.lift(s, entry)
            say(f"lifted the fence of {name} ({entry})")
