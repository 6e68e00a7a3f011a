"""The volume inventory: every image in our pools with what Ceph and Ganeti say of it (`gnt-storage volume`).

An admin asks "which instance owns this image, how big is it really, who has it
open, can I remove it?". The answer joins two sources in one pass each: one
Ganeti query for every instance's disk UUIDs (our images record their disk's
UUID as `ganeti.uuid`, volumes.META_UUID), and one session per cluster in which
each image is opened once, read-only. An image whose UUID no Ganeti disk has is
an orphan (instance "-"). The join and a volume's values are pure functions
(unit-tested; gnt_storage/cli/volume.py lays them out); reading Ceph and Ganeti
happens only in `collect` and `read_image`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

from ganeti_ceph.config import Config
from ganeti_ceph.errors import NotFound, UsageError
from ganeti_ceph.ganeti.cli import Ganeti, GDisk, GNode
from ganeti_ceph.rbd import catalogue, locks
from ganeti_ceph.rbd.fencing import ip_of
from ganeti_ceph.rbd.volumes import META_ACCESS, META_ORIGIN, META_UUID, MIB
from ganeti_ceph.session import Session, one_shot

# Images read at once within a session: librbd drops the GIL, so a listing of hundreds is not 500 round trips
# end to end; each call stays bounded by the session's timeouts.
READERS = 8


# -- where volumes live: the one place the backend catalogue is asked ---------------------------------------

@dataclass(frozen=True)
class Place:
    """One backend's pool, and the config whose session reaches its cluster."""

    backend: str
    cfg: Config
    pool: str


def places(cfg: Config) -> list[Place]:
    """Every pool (or `pool/namespace`) our volumes may live in: each backend of the catalogue, a
    place two backends share listed once, under the first."""
    out: dict[tuple, Place] = {}
    for b in catalogue.load(cfg).backends:
        bcfg = b.config(cfg)
        out.setdefault((bcfg.conf, bcfg.keyring, bcfg.client_id, b.location), Place(b.name, bcfg, b.location))
    return list(out.values())


# -- what Ceph says of one image --------------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    backend: str
    pool: str
    name: str
    size: int  # bytes
    used: int | None  # bytes allocated (fast-diff), None when the image cannot tell cheaply
    meta: dict[str, str]  # its ganeti.* metadata
    watchers: tuple[str, ...]  # client addresses, our own session's left out
    snapshots: tuple[str, ...]  # oldest first
    parent: str  # pool/image@snap, "" for none


@dataclass(frozen=True)
class Volume:
    image: Image
    disk: GDisk | None  # None: an orphan, no Ganeti disk owns it
    mapped: tuple[str, ...]  # node names (or addresses no node has) of its watchers
    holders: tuple[locks.Holder, ...]  # its open records


# -- the join (pure) --------------------------------------------------------------------------------------

def owners(disks: Iterable[GDisk]) -> dict[str, GDisk]:
    """Ganeti's disks by UUID."""
    return {d.uuid: d for d in disks}


def node_names(node_ips: dict[str, str], holders: Iterable[locks.Holder]) -> dict[str, str]:
    """IP -> node: Ganeti's node addresses (`node_ips`), else what open records say a node's Ceph client uses."""
    known = {h.ip: h.node for h in holders if h.ip}
    return {**known, **node_ips}


def join(images: Iterable[Image], disks: dict[str, GDisk], node_ips: dict[str, str]) -> list[Volume]:
    """Each image with its owner disk, where it is mapped and who has it open; sorted by backend, pool, name."""
    images = list(images)
    holders = {(i.pool, i.name): tuple(locks.parse_holders(i.meta)) for i in images}
    names = node_names(node_ips, (h for hs in holders.values() for h in hs))
    out = []
    for img in sorted(images, key=lambda i: (i.backend, i.pool, i.name)):
        uuid = img.meta.get(META_UUID, "")
        mapped = sorted({names.get(ip_of(addr), ip_of(addr)) for addr in img.watchers})
        out.append(Volume(img, disks.get(uuid) if uuid else None, tuple(mapped), holders[(img.pool, img.name)]))
    return out


def select(vols: Iterable[Volume], names: Iterable[str] = (), instance: str | None = None,
           backend: str | None = None) -> list[Volume]:
    """The volumes a listing asks for: by image name, owner instance, backend (every filter must hold)."""
    wanted = set(names)
    return [v for v in vols
            if (not wanted or v.image.name in wanted)
            and (instance is None or (v.disk is not None and v.disk.instance == instance))
            and (backend is None or v.image.backend == backend)]


def parse_target(text: str) -> tuple[str, str | None]:
    """`show`'s argument: NAME (an image) or INSTANCE:DISK (DISK Ganeti's disk index, name or UUID) -> (name or
    instance, disk or None). Image names never hold ':'."""
    first, sep, disk = text.partition(":")
    if not first or (sep and not disk):
        raise UsageError(f"{text!r}: give an image name or INSTANCE:DISK (DISK a disk index, name or UUID)")
    return first, (disk if sep else None)


def find_disk(disks: Iterable[GDisk], instance: str, disk: str) -> GDisk:
    """The disk INSTANCE:DISK names: by index, name or UUID (pure; UsageError in one line when none does)."""
    mine = [d for d in disks if d.instance == instance]
    if not mine:
        raise UsageError(f"instance {instance} does not exist (gnt-instance list)")
    for d in mine:
        if (disk.isdigit() and d.index == int(disk)) or disk in (d.name, d.uuid):
            return d
    shown = ", ".join(f"{d.index}" + (f" ({d.name})" if d.name else "") for d in mine)
    raise UsageError(f"instance {instance} has no disk {disk}; its disks: {shown}")


# -- a volume's values (pure; gnt_storage/cli/volume.py shows them) -----------------------------------------

def to_mib(nbytes: int) -> int:
    """Bytes -> MiB, rounded up: a volume holding one byte uses space."""
    return math.ceil(nbytes / MIB)


def disk_text(disk: GDisk | None) -> str:
    if disk is None:
        return "-"
    return f"{disk.index} ({disk.name})" if disk.name else str(disk.index)


def open_text(holders: Iterable[locks.Holder]) -> str:
    return ",".join(f"{h.node}:{'exclusive' if h.exclusive else 'shared'}" for h in holders) or "-"


def row(v: Volume) -> dict[str, str | int | None]:
    """One volume's fields: sizes in MiB (int, None when unknown), the rest as text."""
    img = v.image
    return {"name": img.name, "instance": v.disk.instance if v.disk else "-", "disk": disk_text(v.disk),
            "backend": img.backend, "pool": img.pool, "size": to_mib(img.size),
            "used": None if img.used is None else to_mib(img.used), "access": img.meta.get(META_ACCESS, "-"),
            "mapped": ",".join(v.mapped) or "-", "open": open_text(v.holders), "snapshots": len(img.snapshots),
            "parent": img.parent or "-"}


def owner_text(v: Volume) -> str:
    """Who owns the image, and for an orphan why it is one."""
    if v.disk is not None:
        return v.disk.instance
    uuid = v.image.meta.get(META_UUID)
    if uuid:
        return f"- (orphan: it records Ganeti disk {uuid}, which no instance has)"
    return "- (orphan: it records no Ganeti disk; not made by the rbd provider, or made outside Ganeti)"


def details(v: Volume) -> dict[str, str | int | None]:
    """`show`'s values: row()'s, with the owner disk's UUID and the why of an orphan, of an unknown use and
    of a flattened clone."""
    img = v.image
    out = {**row(v), "instance": owner_text(v)}
    if v.disk is not None:
        out["disk"] = f"{disk_text(v.disk)}, uuid {v.disk.uuid}"
    if img.used is None:
        out["used"] = "- (no fast-diff on this image, or its object map is invalid: rbd du would read it all)"
    origin = img.meta.get(META_ORIGIN)
    if origin and origin != img.parent:  # cloned from it, since flattened
        out["parent"] = f"{out['parent']} (made from {origin}, flattened since)"
    return out


# -- reading Ceph and Ganeti (I/O) ------------------------------------------------------------------------

def read_image(s: Session, place: Place, name: str, me: int | None) -> Image | None:
    """One image, opened once read-only; None when it went away since the pool was listed."""
    import rbd

    try:
        with s.ioctx(place.pool) as ioctx, s.errors(f"read image {place.pool}/{name}"), \
                rbd.Image(ioctx, name, read_only=True) as img:
            meta = {k: v for k, v in img.metadata_list() if k.startswith("ganeti.")}
            size = int(img.size())
            snaps = tuple(x["name"] for x in img.list_snaps())  # oldest first
            try:
                spec = img.get_parent_image_spec()
                parent = f"{spec['pool_name']}/{spec['image_name']}@{spec['snap_name']}"
            except rbd.ImageNotFound:
                parent = ""
            watchers = tuple(sorted({w["addr"] for w in img.watchers_list() if w.get("id") != me}))
            used = _used(img, size)
    except NotFound:
        return None
    return Image(place.backend, place.pool, name, size, used, meta, watchers, snaps, parent)


def _used(img: object, size: int) -> int | None:
    """Bytes allocated, from the object map (fast-diff, as `rbd du`); None without a valid one."""
    import rbd

    if not img.features() & rbd.RBD_FEATURE_FAST_DIFF or img.flags() & rbd.RBD_FLAG_FAST_DIFF_INVALID:  # type: ignore[attr-defined]
        return None
    total = 0

    def count(_offset: int, length: int, exists: bool) -> int:
        nonlocal total
        total += length if exists else 0
        return 0

    img.diff_iterate(0, size, None, count, include_parent=False, whole_object=True)  # type: ignore[attr-defined]
    return total


Sessions = Callable[[Config], AbstractContextManager[Session]]


def read_place(s: Session, place: Place, names: Iterable[str] | None = None) -> list[Image]:
    """The images of one pool (or those of `names` it holds), read concurrently in one session."""
    import rbd

    with s.ioctx(place.pool) as ioctx, s.errors(f"list images in pool {place.pool}"):
        listed = sorted(rbd.RBD().list(ioctx))
    if names is not None:
        wanted = set(names)
        listed = [n for n in listed if n in wanted]
    with s.errors("get our client id"):
        me = s.rados.get_instance_id()
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        found = list(pool.map(lambda n: read_image(s, place, n, me), listed))
    return [i for i in found if i is not None]


def collect(cfg: Config, names: Iterable[str] | None = None, backend: str | None = None,
            sessions: Sessions = one_shot) -> list[Image]:
    """The images of every place (one session per cluster for the whole listing)."""
    chosen = [p for p in places(cfg) if backend is None or p.backend == backend]
    if backend is not None and not chosen:
        known = ", ".join(sorted({p.backend for p in places(cfg)}))
        raise UsageError(f"no backend {backend}; backends: {known}")
    by_cluster: dict[Config, list[Place]] = {}
    for p in chosen:
        by_cluster.setdefault(p.cfg, []).append(p)
    images: list[Image] = []
    for ccfg, group in by_cluster.items():
        with sessions(ccfg) as s:
            for p in group:
                images += read_place(s, p, names)
    return images


def node_ips(nodes: Iterable[GNode]) -> dict[str, str]:
    """IP -> node name, both of Ganeti's addresses of each node (pure)."""
    return {ip: n.name for n in nodes for ip in (n.pip, n.sip) if ip}


def volumes(cfg: Config, names: Iterable[str] = (), instance: str | None = None, backend: str | None = None,
            ganeti: Ganeti | None = None, sessions: Sessions = one_shot,
            disks: list[GDisk] | None = None) -> list[Volume]:
    """`volume list`: one Ganeti query for every instance's disks (unless given), one pass over the pools
    (only the images named, if any), one more for node addresses only when some image has watchers."""
    g = ganeti or Ganeti()
    names = tuple(names)  # compared with the pools' lists only: any image's name, ours or not
    disks = g.instance_disks() if disks is None else disks
    if instance is not None and not any(d.instance == instance for d in disks):
        raise UsageError(f"instance {instance} does not exist, or has no disks (gnt-instance list)")
    images = collect(cfg, names or None, backend, sessions)
    missing = sorted(set(names) - {i.name for i in images})
    if missing:
        pools = ", ".join(sorted({f"{p.backend}:{p.pool}" for p in places(cfg)}))
        raise NotFound(f"no image {', '.join(missing)} in our pools ({pools}); see gnt-storage volume list")
    ips = node_ips(g.nodes()) if any(i.watchers for i in images) else {}
    return select(join(images, owners(disks), ips), names, instance, backend)


def one(cfg: Config, target: str, ganeti: Ganeti | None = None, sessions: Sessions = one_shot) -> Volume:
    """`volume show NAME|INSTANCE:DISK`: the one volume meant."""
    first, disk = parse_target(target)
    if disk is None:
        return volumes(cfg, [first], ganeti=ganeti, sessions=sessions)[0]
    g = ganeti or Ganeti()
    disks = g.instance_disks()
    wanted = find_disk(disks, first, disk)
    found = [v for v in volumes(cfg, instance=first, ganeti=g, sessions=sessions, disks=disks) if v.disk == wanted]
    if not found:
        pools = ", ".join(sorted({f"{p.backend}:{p.pool}" for p in places(cfg)}))
        raise NotFound(f"{target}: disk {wanted.uuid} has no image in our pools ({pools}) that records it "
                       f"(not an rbd provider disk, or its image lives elsewhere)")
    return found[0]
