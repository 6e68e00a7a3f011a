"""RBD volumes on librbd: the operations behind every provider action.

Each function takes an open Session and plain values, checks its input
before touching Ceph, and is idempotent where Ganeti may repeat it. Nothing
here shrinks, overwrites or removes data a user still needs.
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass

import rbd

from ganeti_ceph import naming
from ganeti_ceph.errors import Busy, CephError, NotFound, UsageError
from ganeti_ceph.naming import check_image_name, check_pool_name, check_snap_name
from ganeti_ceph.rbd import header, omap_index, prealloc_wipe
from ganeti_ceph.session import Session

MIB = 1024 * 1024
# Snapshots we make carry this prefix; only those are ever removed by us.
OUR_SNAP_PREFIX = "ganeti-"
# Metadata keys on every image we create or tag.
META_UUID, META_CNAME, META_INFO, META_ORIGIN = "ganeti.uuid", "ganeti.cname", "ganeti.metadata", "ganeti.origin"
# The disk's access mode, which hooks cannot learn from Ganeti (see doc/hooks.md).
META_ACCESS = "ganeti.access"
# + a snapshot's name: we protected it for a v1 clone, so we may unprotect it once unused (rbd/user_snapshots.py).
META_PROTECTED = "ganeti.protected."
# An adoption: {"from": old name, "to": new name, "done": bool[, "at": epoch s]}, written before the rename (adopt).
META_ADOPT = naming.META_ADOPT
# The pool's in-flight adoptions (omap): OLD -> {"at": name the image had when this attempt began, "to": VOL_NAME},
# written before the rename, removed once done: an interrupted adopt is found with one read, not a pool scan.
ADOPTIONS = "ganeti_ceph_adoptions"
# The pool's imported images (omap, see images.py): NAME -> its record; origin=NAME clones its template snapshot.
IMAGES = "ganeti_ceph_images"
# How long after an adoption a remove may be Ganeti undoing its failed wipe of it (see removable_adoption).
WIPE_UNDO_S = 600
# Safe for krbd on kernels >= 5.3 and for librbd (QEMU, rbd-nbd, rbd-fuse).
DEFAULT_FEATURES = ("layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten")
KNOWN_FEATURES = (*DEFAULT_FEATURES, "journaling")


@dataclass(frozen=True)
class ImageRef:
    """pool/image, or pool/image@snap."""

    pool: str
    image: str
    snap: str | None = None

    def __str__(self) -> str:
        return f"{self.pool}/{self.image}" + (f"@{self.snap}" if self.snap else "")


def parse_origin(text: str, default_pool: str) -> ImageRef:
    """`[pool/]image[@snap]` as given in the `origin` disk parameter. Without `@snap`, an imported image
    (images.py) is cloned from its template snapshot, any other image from one made for the purpose (clone)."""
    spec, _, snap = text.partition("@")
    pool, _, image = spec.rpartition("/")
    try:
        # The default is the volume's own location, checked already (a backend's may be pool/namespace).
        ref = ImageRef(check_pool_name(pool) if pool else default_pool, check_image_name(image), snap or None)
        if ref.snap:
            check_snap_name(ref.snap)
    except UsageError as exc:
        raise UsageError(f"invalid origin {text!r}: {exc.message}; use [pool/]image[@snapshot]") from None
    return ref


def parse_features(text: str | None) -> tuple[str, ...]:
    """Comma- or plus-separated feature names; exclusive-lock needs layering etc."""
    if not text:
        return DEFAULT_FEATURES
    names = tuple(n.strip() for n in text.replace("+", ",").split(",") if n.strip())
    unknown = sorted(set(names) - set(KNOWN_FEATURES))
    if unknown:
        raise UsageError(f"unknown image feature(s) {', '.join(unknown)}; known: {', '.join(KNOWN_FEATURES)}")
    needs = {"object-map": "exclusive-lock", "fast-diff": "object-map", "journaling": "exclusive-lock"}
    for feat, dep in needs.items():
        if feat in names and dep not in names:
            raise UsageError(f"image feature {feat} needs {dep}; add it to features")
    return names


def feature_bits(names: tuple[str, ...]) -> int:
    bits = 0
    for name in names:
        bits |= getattr(rbd, "RBD_FEATURE_" + name.upper().replace("-", "_"))
    return bits


def size_bytes(mib: int | str, what: str = "size") -> int:
    """Bytes of a size in MiB, checked as naming.mib does (bounded: no overflow in librbd)."""
    return naming.mib(mib, what) * MIB


def _open(session: Session, ioctx: object, name: str, read_only: bool = False) -> rbd.Image:
    with session.errors(f"open image {ioctx.name}/{name}"):  # type: ignore[attr-defined]
        return rbd.Image(ioctx, name, read_only=read_only)


def exists(session: Session, pool: str, name: str) -> bool:
    with session.ioctx(pool) as ioctx, session.errors(f"look up {pool}/{name}"):
        try:
            rbd.Image(ioctx, name, read_only=True).close()
            return True
        except rbd.ImageNotFound:
            return False


def create(session: Session, pool: str, name: str, size_mib: int | str, features: tuple[str, ...] = DEFAULT_FEATURES,
           data_pool: str | None = None, metadata: dict[str, str] | None = None) -> bool:
    """Create an empty image; True if created, False if this exact one exists.

    A repeat with the same VOL_UUID is a success (Ganeti retries), and so
    completes a create interrupted between the image and its metadata (see
    `_claim`); any other existing image of that name is refused, never
    overwritten.
    """
    check_image_name(name)
    nbytes = size_bytes(size_mib)
    meta = metadata or {}
    bits = feature_bits(features)
    with session.ioctx(pool) as ioctx:
        try:
            with session.errors(f"create {pool}/{name}"):
                rbd.RBD().create(ioctx, name, nbytes, old_format=False, features=bits, data_pool=data_pool)
        except Busy:  # EEXIST: a retry of this very create, or someone else's image
            _claim(session, ioctx, pool, name, meta, Shape(nbytes, bits))
            return False
        write_meta(session, ioctx, name, meta)
    return True


@dataclass(frozen=True)
class Shape:
    """What an image we made and never used looks like: size, features, or parent."""

    nbytes: int
    features: int | None = None
    origin: ImageRef | None = None


def _claim(session: Session, ioctx: object, pool: str, name: str, meta: dict[str, str], shape: Shape) -> None:
    """Accept an existing image as this volume, or refuse it (Busy).

    Ours when its ganeti.uuid is VOL_UUID. Our metadata is one write after
    the image is made, so an interrupted create leaves an image without
    metadata, and an interrupted clone one with only what librbd copied from
    the parent (its ganeti.origin is not the clone's own parent). Such an
    image is completed only when it provably holds nothing a user could
    need: unused, unsnapshotted, no data of its own, and exactly the shape
    this call makes. A clone may still lack its final size (grown after).
    """
    with session.errors(f"look at the existing image {pool}/{name}"), \
            rbd.Image(ioctx, name, read_only=True) as img:
        have = dict(img.metadata_list())
        if meta.get(META_UUID) and have.get(META_UUID) == meta[META_UUID]:
            if shape.origin is None and img.size() < shape.nbytes:
                raise Busy(f"image {pool}/{name} is this volume but smaller than asked; refusing to guess why")
            return
        written = bool(have) if shape.origin is None else have.get(META_ORIGIN) == _parent_spec(img)
        if written or not meta.get(META_UUID):  # without VOL_UUID no repeat can be told from a stranger
            raise Busy(f"image {pool}/{name} already exists and is not this volume; refusing to overwrite it")
        why, origin = _half_made(session, img, shape)
    if why:
        raise Busy(f"image {pool}/{name} already exists without ganeti-ceph metadata and {why}: not a create of "
                   "this volume that was cut short; refusing to take it over (remove or rename it, or adopt it)")
    if origin:
        drop_inherited(session, ioctx, name, {*meta, META_ORIGIN})
    write_meta(session, ioctx, name, {**meta, **({META_ORIGIN: origin} if origin else {})})


def _parent(img: rbd.Image) -> dict | None:
    try:
        return dict(img.get_parent_image_spec())
    except rbd.ImageNotFound:
        return None


def _parent_spec(img: rbd.Image) -> str | None:
    """`pool/image@snap` of a clone's parent, as recorded in ganeti.origin."""
    p = _parent(img)
    return f"{p['pool_name']}/{p['image_name']}@{p['snap_name']}" if p else None


def _half_made(session: Session, img: rbd.Image, shape: Shape) -> tuple[str | None, str | None]:
    """(why `img` is not an unused image as this create or clone makes it, or
    None; the clone's origin spec to record)."""
    why = _unused(session, img)
    if why:
        return why, None
    parent = _parent(img)
    spec = _parent_spec(img)
    want = shape.origin
    # librbd adds data-pool (with a data_pool) and operations (a clone v2 parent) by itself.
    own = img.features() & ~(rbd.RBD_FEATURE_DATA_POOL | rbd.RBD_FEATURE_OPERATIONS)
    if want is None and (parent or img.size() != shape.nbytes or own != shape.features):
        return "differs in size, features or parent from what was asked", None
    if want is not None and not (parent and (parent["pool_name"], parent["image_name"]) == (want.pool, want.image)
                                 and want.snap in (None, parent["snap_name"]) and img.size() <= shape.nbytes):
        return f"is not a clone of {want}", None
    why = _own_data(img)
    return (why, None) if why else (None, spec)


def _unused(session: Session, img: rbd.Image) -> str | None:
    """Why `img` may be in use or referenced (None: no watchers, no snapshots)."""
    if watchers(session, img):
        return "is in use"
    if list(img.list_snaps()):
        return "has snapshots"
    return None


def _own_data(img: rbd.Image) -> str | None:
    """Why `img` may hold data of its own (None: provably none, by a valid fast-diff with no extents)."""
    if not img.features() & rbd.RBD_FEATURE_FAST_DIFF or img.flags() & rbd.RBD_FLAG_FAST_DIFF_INVALID:
        return "cannot be proven empty quickly (no valid fast-diff)"
    extents: list[tuple[int, int, bool]] = []
    img.diff_iterate(0, img.size(), None, lambda *e: extents.append(e), include_parent=False, whole_object=True)
    return "holds data" if extents else None


def unproven_empty(session: Session, ioctx: object, name: str) -> str | None:
    """Why image `name` is not provably a new one nobody adopted, used or wrote (None: it is; removing it loses
    nothing): no adoption record, then the proof `_claim` takes for a half-made image, and no parent."""
    with session.errors(f"look at {ioctx.name}/{name}"), rbd.Image(ioctx, name, read_only=True) as img:  # type: ignore[attr-defined]
        rec = dict(img.metadata_list()).get(META_ADOPT)
        if rec is not None:
            return f"carries an adoption record ({rec})"
        return _unused(session, img) or ("is a clone" if _parent(img) else None) or _own_data(img)


def _check_same_volume(ioctx: object, pool: str, name: str, meta: dict[str, str], nbytes: int) -> None:
    with rbd.Image(ioctx, name, read_only=True) as img:
        have = dict(img.metadata_list())
        size = img.size()
    if not (meta.get(META_UUID) and have.get(META_UUID) == meta[META_UUID] and size >= nbytes):
        raise Busy(f"image {pool}/{name} already exists and is not this volume; refusing to overwrite it")


def exists_fast(ioctx: object, name: str) -> bool:
    """One stat of the image's id object: no open, no watch."""
    try:
        ioctx.stat(f"rbd_id.{name}")  # type: ignore[attr-defined]
        return True
    except Exception as exc:
        if getattr(exc, "errno", None) in (2, -2):
            return False
        raise


def write_meta(session: Session, ioctx: object, name: str, meta: dict[str, str]) -> None:
    """Our metadata on an image, new or in use: one OSD operation once the header is found, no image
    opened, no exclusive lock taken (header.py; opening read-write, with its watch, refresh and
    close, costs ten times this)."""
    with session.errors(f"set metadata on {ioctx.name}/{name}"):  # type: ignore[attr-defined]
        header.write(ioctx, name, meta)  # type: ignore[arg-type]


def drop_inherited(session: Session, ioctx: object, name: str, keep: set[str]) -> None:
    """librbd copies a parent's metadata into its clone: the parent's open
    records (ganeti.open.*, naming the nodes that hold the parent, which
    fencing trusts), its ganeti.uuid, setinfo text, adoption record. Every
    ganeti.* key the new volume does not set itself is removed (header.py's
    calls; only for an image nobody has open yet)."""
    with session.errors(f"clear the metadata {name} inherited from its parent"):
        oid = header.oid(ioctx, name)  # type: ignore[arg-type]
        for key in header.read(ioctx, name, oid):  # type: ignore[arg-type]
            if key.startswith("ganeti.") and key not in keep:
                header.remove(ioctx, name, key, oid)  # type: ignore[arg-type]


def clone(session: Session, origin: ImageRef, pool: str, name: str, size_mib: int | str,
          features: tuple[str, ...] = DEFAULT_FEATURES, data_pool: str | None = None,
          metadata: dict[str, str] | None = None, max_depth: int = 4, parent_depth: int | None = None) -> bool:
    """Copy-on-write clone of `origin`, grown to the size asked; flattened when
    the chain of parents would exceed `max_depth` (as Cinder's rbd_max_clone_depth)."""
    check_image_name(name)
    nbytes = size_bytes(size_mib)
    meta = metadata or {}
    with session.ioctx(pool) as ioctx:
        made = not exists_fast(ioctx, name)
        tmpl: tuple[str, int] | None = None
        if made:
            with session.ioctx(origin.pool) as pioctx:
                # An imported image: its template snapshot, no parent, its size recorded (no image opened).
                tmpl = None if origin.snap else template(session, pioctx, origin.image)
                snap = origin.snap or (tmpl and tmpl[0]) or _snapshot_for_clone(session, pioctx, origin)
                if tmpl and parent_depth is None:
                    parent_depth = 0
                depth = 1 + (_depth(session, origin.pool, origin.image) if parent_depth is None else parent_depth)
                _clone_snapshot(session, pioctx, ImageRef(origin.pool, origin.image, snap), ioctx, name,
                                feature_bits(features), data_pool)
            drop_inherited(session, ioctx, name, {*meta, META_ORIGIN})
            write_meta(session, ioctx, name, {**meta, META_ORIGIN: f"{origin.pool}/{origin.image}@{snap}"})
        else:  # a repeat: refuse what is not ours, else finish what an interrupted clone left undone
            _claim(session, ioctx, pool, name, meta, Shape(nbytes, origin=origin))
            depth = _depth(session, pool, name)  # 0 once flattened
        size = tmpl[1] if made and tmpl else _size_of(session, ioctx, name)
        if depth > max_depth or nbytes > size:
            with _open(session, ioctx, name) as img, session.errors(f"finish clone {pool}/{name}"):
                if img.size() < nbytes:
                    img.resize(nbytes, allow_shrink=False)
                if depth > max_depth:
                    img.flatten()
    return made


def _size_of(session: Session, ioctx: object, name: str) -> int:
    with _open(session, ioctx, name, read_only=True) as img, session.errors(f"size of {name}"):
        return int(img.size())


def _clone_snapshot(session: Session, pioctx: object, src: ImageRef, ioctx: object, name: str, features: int,
                    data_pool: str | None) -> None:
    """librbd clones v2 (no protected snapshot needed) where the cluster
    requires mimic clients or newer; elsewhere an unprotected snapshot is
    refused (EINVAL), and then we protect it and clone v1-style."""
    what = f"clone {src} to {name}"
    try:
        with session.errors(what):
            rbd.RBD().clone(pioctx, src.image, src.snap, ioctx, name, features=features, data_pool=data_pool)
        return
    except CephError as exc:
        if exc.errno != errno.EINVAL:
            raise
    with _open(session, pioctx, src.image) as parent, session.errors(f"protect {src}"):
        if not parent.is_protected_snap(src.snap):
            parent.metadata_set(META_PROTECTED + src.snap, "1")  # before: an unprotect must know it was us
            parent.protect_snap(src.snap)
    with session.errors(what):
        rbd.RBD().clone(pioctx, src.image, src.snap, ioctx, name, features=features, data_pool=data_pool)


def template(session: Session, ioctx: object, image: str) -> tuple[str, int] | None:
    """(protected snapshot, its size in bytes) of `image` if it is an imported image (images.py): one omap
    read. A template is a plain image (no parent) whose snapshot was taken at the size recorded."""
    rec = parse_record(omap_index.get(session, ioctx, IMAGES, image, "read the image registry"))  # type: ignore[arg-type]
    if not rec or rec.get("state") != "ready":
        return None
    snap, size = rec.get("snap"), rec.get("size")
    return (snap, size) if isinstance(snap, str) and isinstance(size, int) and size > 0 else None


def _snapshot_for_clone(session: Session, ioctx: object, origin: ImageRef) -> str:
    snap = f"{OUR_SNAP_PREFIX}clone-{os.urandom(6).hex()}"
    with _open(session, ioctx, origin.image) as img, session.errors(f"snapshot {origin} for cloning"):
        img.create_snap(snap)
    return snap


def _depth(session: Session, pool: str, name: str, limit: int = 64) -> int:
    """How many parents `pool/name` has (0 for a plain image)."""
    for depth in range(limit):
        with session.ioctx(pool) as ioctx, _open(session, ioctx, name, read_only=True) as img, \
                session.errors(f"find the parent of {pool}/{name}"):
            try:
                spec = img.get_parent_image_spec()
            except rbd.ImageNotFound:
                return depth
        pool, name = spec["pool_name"], spec["image_name"]
    return limit


def watchers(session: Session, img: rbd.Image) -> list[str]:
    """Addresses of the clients watching the image (a VM, a mapping), except ourselves."""
    with session.errors("list watchers"):
        me = session.rados.get_instance_id()
        return sorted({w["addr"] for w in img.watchers_list() if w.get("id") != me})


def adopt(session: Session, pool: str, old: str, name: str, size_mib: int | str,
          metadata: dict[str, str] | None = None) -> bool:
    """Take over image `old` as volume `name`: a rename, no data copied.

    Refused while the image is in use (watchers) or when the new volume
    would be smaller than the image. Before the rename the adoption is
    entered in the pool's index (ADOPTIONS: where the image is, where it
    goes) and recorded on the image (META_ADOPT); the record is marked done
    after the metadata, then the entry goes. So an interrupted adopt is
    found and completed by a repeat: of this create (`name` carries the
    open record), or of any create adopting `old` (the index names the
    image renamed under another name, its record confirms it, and it is
    moved on). A repeat after success is a no-op.
    """
    check_image_name(name)
    check_image_name(old)
    nbytes = size_bytes(size_mib)
    meta = metadata or {}
    with session.ioctx(pool) as ioctx:
        source = old
        if exists_fast(ioctx, name):
            if not _interrupted(adopt_record(session, ioctx, name), old, name):
                _check_same_volume(ioctx, pool, name, meta, nbytes)
                _unindex(session, ioctx, old, name)  # in case the last run died right after marking it done
                return False
            source = name  # this very adopt, interrupted after the rename
        elif not exists_fast(ioctx, old):
            found = interrupted_adoption(session, ioctx, old)
            if found is None:
                raise NotFound(f"image {pool}/{old} does not exist (nor an interrupted adoption of it); "
                               "nothing to adopt")
            source = found
        with _open(session, ioctx, source) as img:
            users = watchers(session, img)
            if users:
                raise Busy(f"image {pool}/{source} is in use by {', '.join(users)}; stop the instance before "
                           "adopting it")
            if img.size() > nbytes:
                raise UsageError(f"image {pool}/{source} is {img.size() // MIB} MiB, more than the {nbytes // MIB} "
                                 "MiB asked; give at least its size (volumes never shrink)")
            omap_index.put(session, ioctx, ADOPTIONS, old, json.dumps({"at": source, "to": name}, sort_keys=True))
            with session.errors(f"record the adoption of {pool}/{source} as {name}"):
                img.metadata_set(META_ADOPT, _adopt_text(old, name, False))
        if source != name:
            with session.errors(f"rename {pool}/{source} to {name}"):
                rbd.RBD().rename(ioctx, source, name)
        with _open(session, ioctx, name) as img, session.errors(f"finish adopting {pool}/{name}"):
            if img.size() < nbytes:
                img.resize(nbytes, allow_shrink=False)
            for key, value in meta.items():
                img.metadata_set(key, value)
            img.metadata_set(META_ADOPT, _adopt_text(old, name, True))  # complete
        _unindex(session, ioctx, old, name)
    return True


def _unindex(session: Session, ioctx: object, old: str, name: str) -> None:
    """Drop the index entry of the adoption of `old` as `name` (not one of another adoption of `old`)."""
    entry = parse_record(omap_index.get(session, ioctx, ADOPTIONS, old))  # type: ignore[arg-type]
    if entry and entry.get("to") == name:
        omap_index.put(session, ioctx, ADOPTIONS, old, None)  # type: ignore[arg-type]


def _adopt_text(old: str, name: str, done: bool) -> str:
    rec: dict[str, object] = {"from": old, "to": name, "done": done}
    if done:
        rec["at"] = int(time.time())
    return json.dumps(rec, sort_keys=True)


def parse_record(raw: str | None) -> dict | None:
    """A JSON object kept in an omap index or in image metadata (None: absent or not ours to read)."""
    try:
        rec = json.loads(raw) if raw else None
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def removable_adoption(meta: dict[str, str], pool: str, name: str, now: float | None = None,
                       lib_dir: str = prealloc_wipe.GANETI_LIB) -> None:
    """Refuse (Busy) to remove an adopted image whose data was never proven to be nobody's: one an adopt left
    halfway (recorded, or renamed), one reached through the old name a cut-short librbd rename left behind
    (its record names it as the source, not the target), or one adopted less than WIPE_UNDO_S ago while
    Ganeti's prealloc_wipe_disks is on or cannot be read (Ganeti removes a disk whose wipe failed, and an
    adopted image is not the new, empty one it believes it made)."""
    rec = parse_record(meta.get(META_ADOPT))
    if not rec:
        return
    old = rec.get("from")
    to = rec.get("to")
    if old == name and to != name and rec.get("done") is False:  # recorded, not yet renamed
        raise Busy(f"image {pool}/{name} is being adopted as {pool}/{to} (recorded before the rename); complete it "
                   f"(create with adopt_image={name}) or drop the record (rbd image-meta remove {pool}/{name} "
                   f"{META_ADOPT}); not removing it")
    if old == name and to != name:  # the adopted image, reached through the name a cut-short rename left behind
        raise Busy(f"image {pool}/{name} is {pool}/{to}, adopted from it: {name} is a name its rename left behind "
                   "(rbd info shows the same id for both); not removing it through that name")
    if rec.get("done") is False and rec.get("to") == name:
        raise Busy(f"image {pool}/{name} is {pool}/{old} in the middle of an adoption; complete it (create with "
                   f"adopt_image={old}) or undo it (rbd rename {pool}/{name} {pool}/{old}); not removing it")
    age = (time.time() if now is None else now) - float(rec.get("at") or 0)
    if rec.get("done") is not True or age >= WIPE_UNDO_S:
        return
    wipes = prealloc_wipe.wipes_new_disks(lib_dir)  # None (cannot tell) keeps the image too, as refuse_if_wiped
    if wipes is not False:
        raise Busy(f"image {pool}/{name} was adopted from {pool}/{old} {max(age, 0):.0f} s ago and Ganeti's "
                   f"prealloc_wipe_disks is {'on' if wipes else 'unknown here (it may be on)'}: this remove may be "
                   "Ganeti undoing its failed wipe, and the image holds data; not removing it (if you mean it: "
                   f"{prealloc_wipe.OFF}, or wait {WIPE_UNDO_S} s)")


def adopt_record(session: Session, ioctx: object, name: str) -> dict | None:
    """The image's META_ADOPT record ({"from", "to", "done"}), None if it was never adopted."""
    with session.errors(f"read metadata of {ioctx.name}/{name}"), rbd.Image(ioctx, name, read_only=True) as img:  # type: ignore[attr-defined]
        try:
            return parse_record(img.metadata_get(META_ADOPT))
        except KeyError:
            return None


def interrupted_adoption(session: Session, ioctx: object, old: str) -> str | None:
    """Where an interrupted adopt of `old` left the image, if anywhere: one read of the pool's index (no entry:
    none, and no image is opened), then the image it names, after the rename or before it, whose own record
    must confirm that it is `old` in an adoption not done (the index alone never moves an image)."""
    entry = parse_record(omap_index.get(session, ioctx, ADOPTIONS, old))  # type: ignore[arg-type]
    if not entry:
        return None
    for image in dict.fromkeys((entry.get("to"), entry.get("at"))):
        if not isinstance(image, str) or not image or image == old:
            continue
        try:
            rec = adopt_record(session, ioctx, image)
        except (NotFound, UsageError):  # not there (renamed meanwhile), or not a name at all
            continue
        if rec and rec.get("from") == old and rec.get("done") is False:
            return image
    return None


def _interrupted(rec: dict | None, old: str, image: str) -> bool:
    """`image` is `old` as left by an adopt that renamed it but did not finish."""
    return bool(rec) and rec.get("from") == old and rec.get("to") == image and rec.get("done") is False  # type: ignore[union-attr]


def grow(session: Session, pool: str, name: str, new_mib: int | str) -> int:
    """Grow to `new_mib`; a repeat at the same size succeeds; never shrinks."""
    nbytes = size_bytes(new_mib, "new size")
    with session.ioctx(pool) as ioctx, _open(session, ioctx, name) as img, session.errors(f"resize {pool}/{name}"):
        grow_image(img, nbytes, f"{pool}/{name}")
    return nbytes // MIB


def size_of(session: Session, pool: str, name: str) -> int:
    """The image's size in bytes (opened read-only)."""
    with session.ioctx(pool) as ioctx, _open(session, ioctx, name, read_only=True) as img, \
            session.errors(f"read the size of {pool}/{name}"):
        return int(img.size())


def grow_image(img: rbd.Image, nbytes: int, what: str) -> None:
    """Resize an open image up to `nbytes`: a shrink is refused here, and librbd
    is told so too (its resize shrinks by default)."""
    current = img.size()
    if nbytes < current:
        raise UsageError(f"refusing to shrink {what} from {current // MIB} MiB to {nbytes // MIB} MiB; "
                         "RBD volumes only grow")
    if nbytes > current:
        img.resize(nbytes, allow_shrink=False)


def set_metadata(session: Session, pool: str, name: str, meta: dict[str, str]) -> None:
    with session.ioctx(pool) as ioctx:
        write_meta(session, ioctx, name, meta)


def size_mib(session: Session, pool: str, name: str) -> int:
    with session.ioctx(pool) as ioctx, _open(session, ioctx, name, read_only=True) as img, \
            session.errors(f"size of {pool}/{name}"):
        return int(img.size()) // MIB
