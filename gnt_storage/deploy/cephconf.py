"""Pure rendering of what a Ceph cluster is made from: keys, keyrings, conf.

This is the bootstrapper's core, shared by `local-cluster` (one host) and
`init-distributed-storage` (a node group): no I/O here, so every byte we
write to a node is unit-tested.
"""

from __future__ import annotations

import base64
import os
import struct
import time
from dataclasses import dataclass

# Caps per entity type, as Ceph's own bootstrap profiles define them.
ADMIN_CAPS = {"mon": "allow *", "osd": "allow *", "mds": "allow *", "mgr": "allow *"}
MGR_CAPS = {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"}
OSD_CAPS = {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"}
MON_CAPS = {"mon": "allow *"}


def rbd_client_caps(pool: str) -> dict[str, str]:
    """Ganeti's client: RBD on its pool only. `profile rbd` may add blocklist
    entries (fencing) but not remove them: a fenced node must not lift its
    own fence, so only the master's admin key lifts one (hooks/fence.py)."""
    return {"mon": "profile rbd", "osd": f"profile rbd pool={pool}",
            "mgr": f"profile rbd pool={pool}"}


def new_key(secret: bytes | None = None, now: float | None = None) -> str:
    """A cephx AES key, encoded as `ceph-authtool --gen-print-key` prints it.

    Layout (CryptoKey::encode): u16 type=1 (AES), u32 sec, u32 nsec,
    u16 length, then the 16-byte secret; base64 of the lot.
    """
    secret = os.urandom(16) if secret is None else secret
    now = time.time() if now is None else now
    header = struct.pack("<HIIH", 1, int(now), int((now % 1) * 1e9), len(secret))
    return base64.b64encode(header + secret).decode("ascii")


def keyring(entries: dict[str, tuple[str, dict[str, str]]]) -> str:
    """Render a keyring file: {entity: (key, caps)} in Ceph's INI format."""
    out = []
    for entity, (key, caps) in entries.items():
        out.append(f"[{entity}]\n\tkey = {key}\n")
        out.extend(f'\tcaps {kind} = "{cap}"\n' for kind, cap in caps.items())
    return "".join(out)


@dataclass(frozen=True)
class Mon:
    """One monitor: its id and the address it binds (msgr v2 and v1 ports)."""

    id: str
    addr: str
    port_v2: int
    port_v1: int

    @property
    def addrvec(self) -> str:
        return f"[v2:{self.addr}:{self.port_v2},v1:{self.addr}:{self.port_v1}]"


@dataclass(frozen=True)
class ClusterSpec:
    """Everything that decides a cluster's conf; paths are rooted at `root`."""

    fsid: str
    root: str
    mons: tuple[Mon, ...]
    public_network: str
    port_min: int
    port_max: int
    pool: str = "rbd"
    pg_num: int = 32
    pool_size: int = 2
    pool_min_size: int = 1
    client_id: str = "ganeti"
    osd_bytes: int = 10 * 1024**3
    single_host: bool = True
    # A node group uses Ceph's own layout (/etc/ceph, /var/lib/ceph/<type>/ceph-<id>,
    # /var/log/ceph, /run/ceph), so Ceph's packaged tools and systemd units work as is.
    standard_paths: bool = False
    # (entity, address): a node's mgr and OSDs bind that address only.
    daemon_addrs: tuple[tuple[str, str], ...] = ()
    # OSD replication and heartbeats between OSDs: a network of its own (Ganeti's secondary one).
    cluster_network: str = ""
    # (osd entity, address) on cluster_network; an OSD missing here replicates on its public address.
    cluster_addrs: tuple[tuple[str, str], ...] = ()

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def conf_path(self) -> str:
        return "/etc/ceph/ceph.conf" if self.standard_paths else self.path("ceph.conf")

    def keyring_path(self, entity: str) -> str:
        return f"/etc/ceph/ceph.{entity}.keyring" if self.standard_paths else self.path(f"ceph.{entity}.keyring")

    def data_dir(self, kind: str, ident: str) -> str:
        """Where daemon `kind.ident` keeps its store and keyring."""
        return f"/var/lib/ceph/{kind}/ceph-{ident}" if self.standard_paths else self.path(kind, ident)

    @property
    def run_dir(self) -> str:
        return "/run/ceph" if self.standard_paths else self.path("run")

    @property
    def log_dir(self) -> str:
        return "/var/log/ceph" if self.standard_paths else self.path("log")


def render_conf(spec: ClusterSpec) -> str:
    """ceph.conf for daemons and clients alike (local: everything under root)."""
    r = spec.root
    glob: dict[str, object] = {
        "fsid": spec.fsid,
        "mon_host": ",".join(m.addrvec for m in spec.mons),
        "mon_initial_members": ",".join(m.id for m in spec.mons),
        "public_network": spec.public_network,
        "cluster_network": spec.cluster_network,
        "ms_bind_ipv6": "false",
        "ms_bind_port_min": spec.port_min,
        "ms_bind_port_max": spec.port_max,
        "auth_cluster_required": "cephx",
        "auth_service_required": "cephx",
        "auth_client_required": "cephx",
        "auth_allow_insecure_global_id_reclaim": "false",
        "osd_pool_default_size": spec.pool_size,
        "osd_pool_default_min_size": spec.pool_min_size,
        "osd_pool_default_pg_num": spec.pg_num,
        "osd_pool_default_pgp_num": spec.pg_num,
        "osd_pool_default_pg_autoscale_mode": "off",
        "osd_crush_chooseleaf_type": 0 if spec.single_host else 1,
        "mon_warn_on_pool_no_redundancy": "false",
        "mon_allow_pool_size_one": "true" if spec.pool_size == 1 else "false",
    }
    mon: dict[str, object] = {
        # Fast paxos: snapshot create/remove ~25 ms instead of ~0.9 s.
        "paxos_propose_interval": 0.05,
        "paxos_min_wait": 0.01,
        "mon_election_timeout": 1,
        "mon_data_avail_warn": 2,
        "mon_data_avail_crit": 1,
        "mon_allow_pool_delete": "false" if spec.standard_paths else "true",
        # Read by the mon: only light optional mgr modules (halves mgr RSS).
        "mgr_initial_modules": "iostat",
    }
    # PG stats every second, not five: health settles sooner after start.
    mgr: dict[str, object] = {"mgr_stats_period": 1}
    osd: dict[str, object] = {
        "osd_objectstore": "bluestore",
        "bluestore_fsck_on_mkfs": "false",
        "bluestore_fsck_on_mount": "false",
        "bluestore_cache_autotune": "false",
        "bluestore_cache_size": 64 * 1024**2,
        "osd_memory_target": 896 * 1024**2,
    }
    client: dict[str, object] = {"log_to_file": "false"}
    if not spec.standard_paths:
        glob.update({"run_dir": f"{r}/run", "crash_dir": f"{r}/crash"})
        # The cluster and audit logs too, not only the daemon logs, stay under root.
        mon.update({"mon_data": f"{r}/mon/$id", "keyring": f"{r}/mon/$id/keyring",
                    "mon_cluster_log_file": f"default={r}/log/ceph.$channel.log cluster={r}/log/ceph.log"})
        mgr.update({"mgr_data": f"{r}/mgr/$id", "keyring": f"{r}/mgr/$id/keyring"})
        osd.update({"osd_data": f"{r}/osd/$id", "keyring": f"{r}/osd/$id/keyring",
                    "bluestore_block_create": "true", "bluestore_block_size": spec.osd_bytes})
        client["keyring"] = f"{r}/ceph.$name.keyring"
        daemon = {"pid_file": f"{r}/run/$name.pid", "admin_socket": f"{r}/run/$name.asok",
                  "log_file": f"{r}/log/$name.log"}
        for section in (mon, mgr, osd):
            section.update(daemon)
    else:
        # Devices are given: never create a block file inside an OSD's directory.
        osd["bluestore_block_create"] = "false"
        for section in (mon, mgr, osd):  # Ceph's default would lack the cluster prefix
            section["pid_file"] = "/run/ceph/$cluster-$name.pid"
    sections: dict[str, dict[str, object]] = {"global": glob, "mon": mon, "mgr": mgr, "osd": osd, "client": client}
    cluster_addrs = dict(spec.cluster_addrs)
    for entity, addr in spec.daemon_addrs:
        sections[entity] = {"public_addr": addr} | (
            {"cluster_addr": cluster_addrs.get(entity, addr)} if entity.startswith("osd.") else {})
    out = ["# Written by ganeti-ceph (gnt-storage); regenerated on re-run.\n"]
    for section, opts in sections.items():
        out.append(f"[{section}]\n")
        out.extend(f"\t{key} = {value}\n" for key, value in opts.items() if value not in ("", None))
    return "".join(out)
