"""Safe delete and point-in-time snapshots of RBD volumes.

remove refuses while anyone holds the image (watchers: a VM or a mapping on
any node) or while clones depend on it, removes only snapshots we made, and
goes through the RBD trash so an interrupted remove never leaves a
half-deleted image under the volume's name (Cinder's safe-delete idea).
"""

from __future__ import annotations

import os

import rbd

from extstorage.volumes import DEFAULT_FEATURES, META_ORIGIN, OUR_SNAP_PREFIX, ImageRef, clone, exists_fast
from ganeti_ceph.errors import Busy
from ganeti_ceph.log import warn
from ganeti_ceph.naming import check_image_name
from ganeti_ceph.session import Session


def watchers(session: Session, img: rbd.Image) -> list[str]:
    """Addresses of the clients watching the image, except ourselves."""
    me = session.rados.get_instance_id()
    with session.errors("list watchers"):
        return sorted({w["addr"] for w in img.watchers_list() if w.get("id") != me})


def remove(session: Session, pool: str, name: str) -> bool:
    """Remove the volume; True if removed, False if it was already gone."""
    check_image_name(name)
    with session.ioctx(pool) as ioctx:
        try:
            img = rbd.Image(ioctx, name)
        except rbd.ImageNotFound:
            return False
        with img:
            holders = watchers(session, img)
            if holders:
                raise Busy(f"image {pool}/{name} is in use by {', '.join(holders)} (a running VM or a mapping); "
                           "stop the instance or detach the disk on that node first")
            snaps = [s["name"] for s in img.list_snaps()]
            children = _children(session, img, snaps)
            if children:
                raise Busy(f"image {pool}/{name} is the origin of {', '.join(children)}; "
                           "remove or flatten those volumes first")
            foreign = [s for s in snaps if not s.startswith(OUR_SNAP_PREFIX)]
            if foreign:
                raise Busy(f"image {pool}/{name} has snapshots not made by ganeti-ceph ({', '.join(foreign)}); "
                           "remove or keep them deliberately with `rbd snap rm` first")
            parent = dict(img.metadata_list()).get(META_ORIGIN)
            for snap in snaps:
                with session.errors(f"remove snapshot {pool}/{name}@{snap}"):
                    if img.is_protected_snap(snap):
                        img.unprotect_snap(snap)
                    img.remove_snap(snap)
        _trash_and_purge(session, ioctx, pool, name)
    if parent:
        _drop_snapshot_if_unused(session, parent)
    return True


def _children(session: Session, img: rbd.Image, snaps: list[str]) -> list[str]:
    """Clones of any of the image's snapshots (list_children sees one snapshot at a time)."""
    found = set()
    with session.errors("list clones"):
        for snap in snaps:
            img.set_snap(snap)
            found.update(f"{c['pool']}/{c['image']}" for c in img.list_children2() if not c.get("trash"))
        img.set_snap(None)
    return sorted(found)


def _trash_and_purge(session: Session, ioctx: object, pool: str, name: str) -> None:
    """Move to trash (atomic), then delete; a failed delete leaves it in the trash."""
    with session.errors(f"move {pool}/{name} to trash"):
        rbd.RBD().trash_move(ioctx, name, 0)
    image_id = next((e["id"] for e in rbd.RBD().trash_list(ioctx) if e["name"] == name), None)
    if image_id is None:
        return
    try:
        with session.errors(f"delete {pool}/{name} from trash"):
            rbd.RBD().trash_remove(ioctx, image_id, True)
    except Exception as exc:
        warn(f"{pool}/{name} is in the RBD trash (id {image_id}) but not yet deleted: {exc}; "
             f"`rbd trash rm {pool}/{image_id}` finishes it")


def _drop_snapshot_if_unused(session: Session, spec: str) -> None:
    """After a clone or snapshot volume goes, remove the origin snapshot we made for it."""
    image_spec, _, snap = spec.partition("@")
    pool, _, image = image_spec.partition("/")
    if not snap.startswith(OUR_SNAP_PREFIX):
        return
    with session.ioctx(pool) as ioctx:
        try:
            img = rbd.Image(ioctx, image)
        except rbd.ImageNotFound:
            return
        with img:
            if snap not in {s["name"] for s in img.list_snaps()}:
                return
            if _children(session, img, [snap]):
                return
            with session.errors(f"remove snapshot {spec}"):
                if img.is_protected_snap(snap):
                    img.unprotect_snap(snap)
                img.remove_snap(snap)


def snapshot(session: Session, pool: str, name: str, snap_volume: str) -> bool:
    """A point-in-time copy of `name` as the volume `snap_volume`.

    Ganeti then attaches, opens, reads, detaches and removes `snap_volume`
    like any volume, so it is a real image: a copy-on-write clone of a
    snapshot we take now. Removing it removes that snapshot too.
    """
    check_image_name(snap_volume)
    snap = f"{OUR_SNAP_PREFIX}snap-{os.urandom(6).hex()}"
    with session.ioctx(pool) as ioctx:
        if exists_fast(ioctx, snap_volume):
            return False  # a repeat after success: the copy is already there
        with rbd.Image(ioctx, name) as img, session.errors(f"snapshot {pool}/{name}"):
            img.create_snap(snap)
            size = max(1, img.size() // (1024 * 1024))
    # The copy is a clone of the snapshot, never flattened (max_depth unbounded,
    # so the parent chain need not be walked).
    clone(session, ImageRef(pool, name, snap), pool, snap_volume, size, DEFAULT_FEATURES, max_depth=1 << 30,
          parent_depth=0)
    return True
