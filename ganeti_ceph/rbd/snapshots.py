"""Point-in-time snapshots that Ganeti handles as volumes, and our origin snapshots.

Ganeti's `snapshot` asks for a copy named VOL_SNAPSHOT_NAME that it then
attaches, opens, reads, detaches and removes like any volume (gnt-backup
export). The snapshot action only takes an RBD snapshot (the point in
time) and records it in the pool's registry object; the copy-on-write
clone that Ganeti reads is made when the snapshot volume is first used
(`materialize`, from attach or open). Removing the snapshot volume removes
the clone if one was made, the RBD snapshot and the registry entry: nothing
is left behind, even when the volume was never attached. A snapshot volume
the provider reported made never vanishes behind Ganeti's back: its name must
be new, and the source's remove is refused while it is pending.
"""

from __future__ import annotations

import os

import rados
import rbd

from ganeti_ceph.errors import Busy, NotFound, UsageError
from ganeti_ceph.naming import check_image_name
from ganeti_ceph.rbd import omap_index
from ganeti_ceph.rbd.volumes import DEFAULT_FEATURES, META_ORIGIN, OUR_SNAP_PREFIX, ImageRef, clone, exists_fast
from ganeti_ceph.session import Session

REGISTRY = "ganeti_ceph_snapshots"  # omap: snapshot volume -> "image@snapshot"


def pending_for(session: Session, ioctx: rados.Ioctx, image: str) -> list[str]:
    """Snapshot volumes taken of `image` and not yet removed nor made real:
    removing `image` now would take their point in time with it."""
    return [k for k, spec in omap_index.items(session, ioctx, REGISTRY, "read the snapshot registry")
            if spec.decode().partition("@")[0] == image]


def _pending(session: Session, ioctx: rados.Ioctx, snap_volume: str) -> str | None:
    return omap_index.get(session, ioctx, REGISTRY, snap_volume, "read the snapshot registry")


def _record(session: Session, ioctx: rados.Ioctx, snap_volume: str, spec: str | None) -> None:
    omap_index.put(session, ioctx, REGISTRY, snap_volume, spec, "write the snapshot registry")


def snapshot(session: Session, pool: str, name: str, snap_volume: str) -> bool:
    """Take the point-in-time snapshot of `name` for the volume `snap_volume`.

    False if that snapshot volume of `name` already exists or is pending (a
    repeat). A `snap_volume` that is `name` itself, any other volume, or a
    snapshot volume of another image is refused: "made" must mean made.
    """
    check_image_name(snap_volume)
    if snap_volume == name:
        raise UsageError(f"VOL_SNAPSHOT_NAME {snap_volume} is the volume itself; give the snapshot its own name")
    with session.ioctx(pool) as ioctx:
        pending = _pending(session, ioctx, snap_volume)
        if pending is not None or exists_fast(ioctx, snap_volume):
            if _snapshot_of(session, ioctx, pool, snap_volume, pending) != name:
                raise Busy(f"{pool}/{snap_volume} already exists and is not a snapshot of {pool}/{name}; "
                           "give the snapshot a name no volume has")
            return False
        snap = f"{OUR_SNAP_PREFIX}snap-{os.urandom(6).hex()}"
        with session.errors(f"snapshot {pool}/{name}"), rbd.Image(ioctx, name) as img:
            img.create_snap(snap)
        _record(session, ioctx, snap_volume, f"{name}@{snap}")
    return True


def _snapshot_of(session: Session, ioctx: rados.Ioctx, pool: str, snap_volume: str, pending: str | None) -> str:
    """The image `snap_volume` is a snapshot volume of ("" if it is not one)."""
    if pending is not None:
        return pending.partition("@")[0]
    with session.errors(f"look at {pool}/{snap_volume}"), rbd.Image(ioctx, snap_volume, read_only=True) as img:
        origin = dict(img.metadata_list()).get(META_ORIGIN, "")
    source, _, snap = origin.partition("@")
    src_pool, _, image = source.rpartition("/")  # the pool may be pool/namespace
    return image if src_pool == pool and snap.startswith(f"{OUR_SNAP_PREFIX}snap-") else ""


def materialize(session: Session, pool: str, snap_volume: str) -> bool:
    """Make the pending snapshot volume a real image; False if none is pending."""
    with session.ioctx(pool) as ioctx:
        spec = _pending(session, ioctx, snap_volume)
        if spec is None:
            return False
        if not exists_fast(ioctx, snap_volume):
            image, _, snap = spec.partition("@")
            with session.errors(f"open the snapshot {pool}/{spec}"), \
                    rbd.Image(ioctx, image, read_only=True, snapshot=snap) as img:
                size = max(1, img.size() // (1024 * 1024))
            # Never flattened: the copy lives only as long as the export.
            clone(session, ImageRef(pool, image, snap), pool, snap_volume, size, DEFAULT_FEATURES,
                  max_depth=1 << 30, parent_depth=0)
        _record(session, ioctx, snap_volume, None)
    return True


def forget_pending(session: Session, ioctx: rados.Ioctx, pool: str, snap_volume: str) -> bool:
    """remove of a snapshot volume never attached: drop its RBD snapshot and entry."""
    spec = _pending(session, ioctx, snap_volume)
    if spec is None:
        return False
    drop_if_unused(session, f"{pool}/{spec}")
    _record(session, ioctx, snap_volume, None)
    return True


def children(session: Session, img: rbd.Image, snaps: list[str]) -> list[str]:
    """Clones of any of the image's snapshots (list_children sees one snapshot at a time)."""
    found = set()
    with session.errors("list clones"):
        for snap in snaps:
            img.set_snap(snap)
            found.update(f"{c['pool']}/{c['image']}" for c in img.list_children2() if not c.get("trash"))
        img.set_snap(None)
    return sorted(found)


def drop_if_unused(session: Session, spec: str) -> None:
    """Remove `pool/image@snap` if it is one we made and no clone uses it."""
    image_spec, _, snap = spec.partition("@")
    pool, _, image = image_spec.rpartition("/")  # the pool may be pool/namespace
    if not snap.startswith(OUR_SNAP_PREFIX):
        return
    with session.ioctx(pool) as ioctx:
        try:
            with session.errors(f"open {image_spec}"):
                img = rbd.Image(ioctx, image)
        except NotFound:
            return
        with img:
            with session.errors(f"list the snapshots of {image_spec}"):
                snaps = {s["name"] for s in img.list_snaps()}
            if snap not in snaps or children(session, img, [snap]):
                return
            with session.errors(f"remove snapshot {spec}"):
                if img.is_protected_snap(snap):
                    img.unprotect_snap(snap)
                img.remove_snap(snap)
