"""Storage options (`-S ceph:key=value,...`) and their defaults for a node group (pure).

Options come from the command line and from the cluster-wide defaults set
with `gnt-storage -S ceph:key=value` (kept as Ganeti cluster tags, so every
master candidate sees them). A value list continues after a comma until the
next `key=`: `-S ceph:disk=/dev/sdb,/dev/sdc,mons=3`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields, replace

from ganeti_ceph.errors import UsageError
from ganeti_ceph.naming import check_client_id, check_pool_name

KEYS = ("disk", "mons", "pool", "client", "size", "min_size", "pg_num", "cluster_network", "db", "wal", "dmcrypt",
        "osd_layout")
DEVICE_KEYS = ("disk", "db", "wal")  # value lists: db and wal pair with disk by position
# Accepted only at their default; the reason the other values are refused (see volume.py).
FIXED = {"dmcrypt": ("no", "ceph-volume raw in Ceph 16 cannot reopen an encrypted OSD at boot, and lvm (which "
                           "can) needs device-mapper"),
         "osd_layout": ("raw", "ceph-volume lvm needs device-mapper and LVM; OSDs are made with ceph-volume raw")}
TAG_PREFIX = "ganeti-ceph:opt:"
STORAGE_TAG = "ganeti-ceph:storage"  # on the node group that is the storage cluster
FSID_TAG_PREFIX = "ganeti-ceph:fsid:"
DEVICE = re.compile(r"^/[A-Za-z0-9._/+-]+$")


@dataclass(frozen=True)
class StorageOptions:
    """What the admin asked for; None means "choose from the group's size"."""

    disk: tuple[str, ...] = ()
    db: tuple[str, ...] = ()  # the i-th disk's RocksDB on a faster device (ceph-volume --block.db)
    wal: tuple[str, ...] = ()  # the i-th disk's write-ahead log (ceph-volume --block.wal)
    mons: int | None = None
    pool: str = "rbd"
    client: str = "ganeti"
    size: int | None = None
    min_size: int | None = None
    pg_num: int = 64
    cluster_network: str = ""  # CIDR for OSD replication; "": Ganeti's secondary network, if any


def _int(key: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise UsageError(f"ceph:{key}={value} is not a whole number from {low} to {high}")
    return int(value)


def _set(opts: StorageOptions, key: str, values: list[str]) -> StorageOptions:
    if key in DEVICE_KEYS:
        for dev in values:
            if not DEVICE.match(dev) or "/../" in dev:
                raise UsageError(f"ceph:{key}={dev} is not an absolute device or file path (e.g. /dev/sdb)")
        if len(set(values)) != len(values):
            raise UsageError(f"ceph:{key} lists a device twice: {','.join(values)}")
        return replace(opts, **{key: tuple(values)})
    if len(values) != 1:
        raise UsageError(f"ceph:{key} takes one value, not {','.join(values)}")
    value = values[0]
    if key in FIXED:
        if value != FIXED[key][0]:
            raise UsageError(f"ceph:{key}={value} is not supported: {FIXED[key][1]}")
        return opts
    if key == "mons":
        n = _int(key, value, 1, 5)
        if n % 2 == 0:
            raise UsageError(f"ceph:mons={n}: monitors need an odd count (1, 3 or 5) to keep a majority")
        return replace(opts, mons=n)
    if key == "pool":
        check_pool_name(value)
        return replace(opts, pool=value)
    if key == "client":
        check_client_id(value)
        return replace(opts, client=value)
    if key == "cluster_network":
        try:
            return replace(opts, cluster_network=str(ipaddress.ip_network(value)))
        except ValueError:
            raise UsageError(f"ceph:cluster_network={value} is not a network in CIDR form "
                             "(e.g. 192.168.10.0/24, host bits zero)") from None
    if key == "pg_num":
        n = _int(key, value, 8, 4096)
        if n & (n - 1):
            raise UsageError(f"ceph:pg_num={n} is not a power of two (8, 16, ... 4096)")
        return replace(opts, pg_num=n)
    return replace(opts, **{key: _int(key, value, 1, 10)})


def parse(specs: list[str], base: StorageOptions | None = None) -> StorageOptions:
    """Apply `-S ceph:...` strings, in order, over `base`."""
    opts = base or StorageOptions()
    for spec in specs:
        kind, sep, rest = spec.partition(":")
        if kind != "ceph" or not sep or not rest:
            raise UsageError(f"-S {spec}: storage options look like ceph:key=value[,key=value] "
                             f"(keys: {', '.join(KEYS)})")
        pending: list[tuple[str, list[str]]] = []
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if eq:
                if key not in KEYS:
                    raise UsageError(f"-S ceph:{key}: unknown option; known: {', '.join(KEYS)}")
                pending.append((key, [value]))
            elif pending and pending[-1][0] in DEVICE_KEYS and item:
                pending[-1][1].append(item)
            else:
                raise UsageError(f"-S {spec}: '{item}' is not key=value (keys: {', '.join(KEYS)})")
        for key, values in pending:
            opts = _set(opts, key, values)
    return opts


def to_tags(opts: StorageOptions) -> list[str]:
    """Cluster tags that store the options differing from the defaults."""
    default = StorageOptions()
    tags = []
    for f in fields(StorageOptions):
        value = getattr(opts, f.name)
        if value != getattr(default, f.name):
            text = "+".join(value) if f.name in DEVICE_KEYS else str(value)
            tags.append(f"{TAG_PREFIX}{f.name}:{text}")
    return tags


def from_tags(tags: list[str]) -> StorageOptions:
    specs = []
    for tag in tags:
        if tag.startswith(TAG_PREFIX):
            key, _, value = tag.removeprefix(TAG_PREFIX).partition(":")
            specs.append(f"ceph:{key}={value.replace('+', ',')}")
    return parse(specs)


@dataclass(frozen=True)
class Layout:
    """The options resolved against the group: how many of what, where."""

    mons: tuple[str, ...]
    size: int
    min_size: int


def resolve(opts: StorageOptions, nodes: list[str]) -> Layout:
    """Mons on the first nodes by name (odd count), pool size from the node count."""
    n = len(nodes)
    mons = opts.mons or (3 if n >= 3 else 1)
    if mons > n:
        raise UsageError(f"ceph:mons={mons} but the group has {n} node(s); use at most "
                         f"{n if n % 2 else n - 1}")
    size = opts.size or min(3, n)
    if size > n:
        raise UsageError(f"ceph:size={size} needs OSDs on {size} nodes (one copy per node); the group has {n}")
    min_size = opts.min_size or size - size // 2
    if min_size > size:
        raise UsageError(f"ceph:min_size={min_size} is above ceph:size={size}")
    if not opts.disk:
        raise UsageError("no OSD devices given: add -S ceph:disk=DEV[,DEV] (the same paths on every node)")
    for key in ("db", "wal"):
        given = getattr(opts, key)
        if given and len(given) != len(opts.disk):
            raise UsageError(f"ceph:{key} names {len(given)} device(s) for {len(opts.disk)} disk(s): give one "
                             f"per disk, in the order of ceph:disk")
    shared = set(opts.disk) & set(opts.db) | set(opts.disk) & set(opts.wal) | set(opts.db) & set(opts.wal)
    if shared:
        raise UsageError(f"{sorted(shared)[0]} is named twice among ceph:disk, ceph:db and ceph:wal: "
                         "each OSD needs devices of its own")
    return Layout(tuple(sorted(nodes)[:mons]), size, min_size)
