"""Safe delete of RBD volumes.

remove refuses while anyone holds the image (watchers: a VM or a mapping on
any node) or while clones depend on it, removes only snapshots we made, and
goes through the RBD trash so an interrupted remove never leaves a
half-deleted image under the volume's name (Cinder's safe-delete idea).
"""

from __future__ import annotations

import struct
import time

import rados
import rbd

from ganeti_ceph import runner
from ganeti_ceph.errors import Busy, GanetiCephError, NotFound
from ganeti_ceph.log import warn
from ganeti_ceph.naming import check_image_name
from ganeti_ceph.rbd import fencing, header, snapshots
from ganeti_ceph.rbd.volumes import META_ORIGIN, META_UUID, OUR_SNAP_PREFIX, removable_adoption, watchers
from ganeti_ceph.session import Session


def remove(session: Session, pool: str, name: str, uuid: str | None = None) -> bool:
    """Remove the volume; True if removed, False if it was already gone.

    `uuid` (Ganeti's VOL_UUID) lets a repeat finish a remove cut short after
    its move to the trash: the trashed image whose own ganeti.uuid says so."""
    check_image_name(name)
    with session.ioctx(pool) as ioctx:
        try:
            with session.errors(f"open {pool}/{name}"):
                img = rbd.Image(ioctx, name)
        except NotFound:
            finished = _finish_trashed(session, ioctx, pool, name, uuid) | _drop_half_made(session, ioctx, pool, name)
            return snapshots.forget_pending(session, ioctx, pool, name) or finished
        with img, session.errors(f"inspect {pool}/{name} before removing it"):
            pending = snapshots.pending_for(session, ioctx, name)
            if pending:
                raise Busy(f"image {pool}/{name} has the snapshot volume(s) {', '.join(pending)}, made and not yet "
                           "read or removed (an export in progress); remove those first")
            _refuse_while_watched(session, img, pool, name)
            snaps = [s["name"] for s in img.list_snaps()]
            children = snapshots.children(session, img, snaps)
            if children:
                raise Busy(f"image {pool}/{name} is the origin of {', '.join(children)}; "
                           "remove or flatten those volumes first")
            foreign = [s for s in snaps if not s.startswith(OUR_SNAP_PREFIX)]
            if foreign:
                raise Busy(f"image {pool}/{name} has snapshots not made by ganeti-ceph ({', '.join(foreign)}); "
                           "remove or keep them deliberately with `rbd snap rm` first")
            meta = dict(img.metadata_list())
            removable_adoption(meta, pool, name)  # Ganeti's undo of a failed wipe must not take adopted data
            parent = meta.get(META_ORIGIN)
            for snap in snaps:
                with session.errors(f"remove snapshot {pool}/{name}@{snap}"):
                    if img.is_protected_snap(snap):
                        img.unprotect_snap(snap)
                    img.remove_snap(snap)
        _trash_and_purge(session, ioctx, pool, name)
    if parent:
        snapshots.drop_if_unused(session, parent)
    return True


def _refuse_while_watched(session: Session, img: rbd.Image, pool: str, name: str) -> None:
    """Busy while a client watches the image. A watcher whose exact address is blocklisted is a dead
    client (released by clients.py, or cut off by librbd's lock break) that can never write again; its
    watch goes a moment after the blocklist, except one that Ceph 16 registered after its client had
    gone (tracker.ceph.com/issues/58120): that one stays until its OSD re-peers, and librbd refuses to
    delete the image meanwhile. So the refusal names it and the admin's way out."""
    spec = f"{pool}/{name}"
    holders = watchers(session, img)
    dead = set(holders) & fencing.released_clients(session) if holders else set()
    if dead and not set(holders) - dead:
        holders = runner.until(fencing.watch_drop_deadline(session),
                               lambda: watchers(session, img), lambda left: not left or set(left) - dead)
    live = [h for h in holders if h not in dead]
    if live:
        raise Busy(f"image {spec} is in use by {', '.join(live)} (a running VM or a mapping); "
                   "stop the instance or detach the disk on that node first")
    if holders:
        raise Busy(f"image {spec} is still watched by the dead, blocklisted client(s) {', '.join(holders)}, a "
                   f"watch Ceph 16 keeps until the OSD re-peers: as the Ceph admin, `ceph pg repeer "
                   f"{_header_pg(session, img, pool)}`, then remove again")


def _header_pg(session: Session, img: rbd.Image, pool: str) -> str:
    """The placement group of the image's header object (where its watches live), or how to find it."""
    obj = header.of_id(img.id())
    try:
        found = session.mon_command("osd map", pool=pool, object=obj)
    except GanetiCephError:
        found = None
    return str(found["pgid"]) if found and "pgid" in found else f"<its pg: ceph osd map {pool} {obj}>"


def _trash_and_purge(session: Session, ioctx: object, pool: str, name: str) -> None:
    """Move to trash (atomic), then delete; a failed delete leaves it in the trash."""
    with session.errors(f"move {pool}/{name} to trash"):
        rbd.RBD().trash_move(ioctx, name, 0)
    with session.errors(f"list the RBD trash of {pool}"):
        image_id = next((e["id"] for e in rbd.RBD().trash_list(ioctx) if e["name"] == name), None)
    if image_id is not None:
        _purge(session, ioctx, pool, name, image_id)


def _purge(session: Session, ioctx: object, pool: str, name: str, image_id: str) -> None:
    """Delete a trashed image of ours. A concurrent look at it (another remove's inspection, a retry)
    holds a watch for a moment: retry that within timeouts.osd_op, then leave it in the trash, said.
    An entry gone meanwhile was purged by a concurrent remove: done. (librbd also says not found while
    the entry stays, when a concurrent purge took the header first: then it is said, as any failure.)"""
    def attempt() -> Exception | None:
        try:
            with session.errors(f"delete {pool}/{name} from trash"):
                rbd.RBD().trash_remove(ioctx, image_id, True)
        except NotFound as exc:
            with session.errors(f"look up {pool}/{name} in the RBD trash (id {image_id})"):
                return exc if _trash_state(ioctx, image_id) is not None else None
        except Exception as exc:  # Busy is retried; anything else ends the retries at once
            return exc
        return None

    failure = runner.until(time.monotonic() + session.cfg.timeouts.osd_op, attempt,
                           lambda exc: not isinstance(exc, Busy), interval=0.2)
    if failure is not None:
        warn(f"{pool}/{name} is in the RBD trash (id {image_id}) but not yet deleted: {failure}; "
             f"removing the volume again, or `rbd trash rm {pool}/{image_id}`, finishes it")


TRASH_REMOVING = 2  # cls::rbd::TrashImageState: librbd has begun to purge the entry


def trash_state(raw: bytes) -> int:
    """The state in cls_rbd's encoded TrashImageSpec (struct version 1 has none: normal)."""
    version, (length,) = raw[0], struct.unpack_from("<I", raw, 2)
    body = raw[6:6 + length]
    (name_len,) = struct.unpack_from("<I", body, 1)  # after the source byte
    at = 1 + 4 + name_len + 16  # then deletion and deferment times
    return body[at] if version >= 2 and len(body) > at else 0


def _trash_state(ioctx: rados.Ioctx, image_id: str) -> int | None:
    """The trash entry's state, None if it is gone (cls_rbd's trash_get: the binding hides the state)."""
    try:
        _, out = ioctx.execute("rbd_trash", "rbd", "trash_get", header.encode(image_id), length=4096)
    except rados.ObjectNotFound:
        return None
    return trash_state(out)


def _drop_half_made(session: Session, ioctx: rados.Ioctx, pool: str, name: str) -> bool:
    """A create cut short (its process killed) can leave the name in the pool's directory with no image
    header: it cannot be opened, so it holds no data, but it keeps the name taken. Remove it. One
    directory read, on this already-gone path only. A header there proves an image made meanwhile (a
    create of the name that ran since this remove looked): refused, never taken for a half-made one."""
    with session.errors(f"list the images of {pool}"):
        if name not in rbd.RBD().list(ioctx):
            return False
    with session.errors(f"look at the half-made {pool}/{name}"):
        try:
            made = header.exists(ioctx, header.oid(ioctx, name))
        except rados.ObjectNotFound:  # no id object either: half-made all the same
            made = False
    if made:
        raise Busy(f"image {pool}/{name} was made while it was being removed (a create of that name ran "
                   "meanwhile); remove it again if it is to go")
    with session.errors(f"remove the half-made {pool}/{name}"):
        rbd.RBD().remove(ioctx, name)
    return True


def _finish_trashed(session: Session, ioctx: object, pool: str, name: str, uuid: str | None) -> bool:
    """A remove cut short between trash move and purge left the image in the trash: purge the entries
    of this name whose own ganeti.uuid is this volume's (never an admin's deferred delete), and those
    whose purge librbd began and whose header is gone. True if any.

    librbd's purge marks the entry removing, deletes the image's data, then its header, then the
    entry: killed between the last two it leaves an entry that names no image, with no ganeti.uuid
    left to read. Finishing that purge loses nothing: librbd then deletes only the image's leftover
    records (journal, object map, mirror record) and the entry. A header lost any other way (its
    data may still be there) leaves the entry in its own state: never taken."""
    if not uuid:
        return False
    with session.errors(f"list the RBD trash of {pool}"):
        ids = [e["id"] for e in rbd.RBD().trash_list(ioctx) if e["name"] == name]
    done = False
    for image_id in ids:
        with session.errors(f"inspect the trashed {pool}/{name} (id {image_id})"):
            try:
                ours = header.read(ioctx, name, header.of_id(image_id)).get(META_UUID) == uuid
            except rados.ObjectNotFound:  # no header: ours only if librbd's own purge of it was cut short
                ours = _trash_state(ioctx, image_id) == TRASH_REMOVING
        if ours:
            _purge(session, ioctx, pool, name, image_id)
            done = True
    return done
