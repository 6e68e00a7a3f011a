"""Imported images: a disk image file made an RBD template that disks are thin clones of.

`import_image` converts a raw or qcow2 file into a new RBD image with
`qemu-img convert` (the client's conf, id and keyring given as paths), then
snapshots and protects it: the template. The image is the RBD image NAME of
its pool, so `origin=NAME` can only ever mean that one image; the pool's
registry (an omap object, see omap_index.py) maps NAME to its record, so
that `volumes.clone` finds the template's snapshot with one read.

The copy is made under a temporary name recorded first in the registry
(NAME -> {"state": "importing", "tmp": ...}) and on the image
(META_IMPORT), and renamed to NAME only once snapshotted: an interrupted
import never leaves an image that looks complete, and a rerun removes the
partial one after proving it is that import's (registry entry and metadata
agree, nobody uses or clones it).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import rados
import rbd

from ganeti_ceph import log, naming, procs, runner
from ganeti_ceph.config import MAX_SECONDS, Config
from ganeti_ceph.errors import Busy, GanetiCephError, NotFound, ToolFailed, UsageError
from ganeti_ceph.rbd import omap_index, volumes
from ganeti_ceph.rbd.catalogue import Catalogue
from ganeti_ceph.rbd.volumes import parse_record  # a registry value as a dict
from ganeti_ceph.session import Session, one_shot

REGISTRY = volumes.IMAGES  # omap: NAME -> JSON record (see Record)
# The protected snapshot every clone of the template shares. Not named like the snapshots we make for
# a clone (volumes.OUR_SNAP_PREFIX): removing a template's last clone must not take it (snapshots.drop_if_unused),
# and the provider's remove refuses an image with it (remove.py: a snapshot it did not make).
SNAP = "template"
META_IMPORT = "ganeti.image.import"  # on the image being imported: {"name", "token"}
META_IMAGE = "ganeti.image"  # on a finished template: its record
FORMATS = ("raw", "qcow2")
MAX_NAME = 180  # room for the temporary ".import-<token>" suffix within the 200 an image name may have
# The copy's bound: generous, from the size (QEMU skips holes: a sparse image is quicker).
COPY_BASE_S, COPY_MIB_PER_S = 600.0, 4.0
# Where sessions come from (as service.Sessions): one_shot, or a pool.
Sessions = Callable[[Config], AbstractContextManager[Session]]
PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


@dataclass(frozen=True)
class Source:
    """A disk image file as qemu-img sees it."""

    path: str  # absolute
    format: str
    size: int  # virtual size, bytes


@dataclass(frozen=True)
class ImageInfo:
    """One imported image, as `image list` shows it."""

    name: str
    pool: str
    size_mib: int
    format: str
    source: str
    created: float
    clones: tuple[str, ...]  # pool/image of each clone of the template snapshot


def check_name(name: str) -> str:
    naming.check_image_name(name)
    if len(name) > MAX_NAME:
        raise UsageError(f"image name {name[:20]}... is longer than {MAX_NAME} characters; choose a shorter one")
    return name


def copy_timeout(size: int) -> float:
    """The bound of one import's copy: COPY_BASE_S plus the size at COPY_MIB_PER_S, at most MAX_SECONDS."""
    return min(float(MAX_SECONDS), COPY_BASE_S + size / (COPY_MIB_PER_S * volumes.MIB))


def qemu_escape(text: str) -> str:
    """A value inside QEMU's `rbd:` file name, where ':' separates options and '\\' escapes."""
    return text.replace("\\", "\\\\").replace(":", "\\:")


def rbd_target(cfg: Config, pool: str, image: str) -> str:
    """QEMU's name of pool/image for our client: conf and keyring as paths (never a key), bounded connect."""
    opts = {"id": cfg.client_id, "conf": cfg.conf, "keyring": cfg.keyring,
            "client_mount_timeout": str(max(1, math.ceil(cfg.timeouts.connect))),
            "rados_osd_op_timeout": str(max(1, math.ceil(cfg.timeouts.osd_op)))}
    return f"rbd:{pool}/{image}:" + ":".join(f"{k}={qemu_escape(v)}" for k, v in opts.items())


def progress_steps(text: str, last: int, step: int = 10) -> tuple[list[int], int]:
    """Whole-`step` percentages qemu-img's -p output `text` passes beyond `last`; (those, the new last)."""
    found = [float(m) for m in PROGRESS.findall(text)]
    if not found:
        return [], last
    now = int(max(found)) // step * step
    return list(range(last + step, now + 1, step)), max(last, now)


def source_of(info: dict, path: str) -> Source:
    """What `qemu-img info --output=json` said of `path`: refused unless raw or qcow2."""
    fmt = info.get("format")
    if fmt not in FORMATS:
        raise UsageError(f"{path} is a {fmt} image, not raw or qcow2; convert it first (qemu-img convert -O qcow2)")
    size = info.get("virtual-size")
    if not isinstance(size, int) or size <= 0:
        raise UsageError(f"{path}: qemu-img sees an empty image (virtual size {size}); nothing to import")
    return Source(path, fmt, size)


def probe(path: str, fmt: str | None = None) -> Source:
    """The file at `path`, checked readable and raw or qcow2 (asked of qemu-img, bounded)."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: give raw or qcow2")
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file; give the disk image file to import")
    if os.path.isdir(path) or not os.access(path, os.R_OK):
        raise UsageError(f"{path}: not a readable file; give a disk image file this user can read")
    try:
        res = runner.execute(["qemu-img", "info", "--output=json", *(["-f", fmt] if fmt else []), path],
                             f"read {path}", 60)
    except ToolFailed as exc:
        if exc.kind == "missing":
            raise ToolFailed(f"{exc.message}; install qemu-utils (and qemu-block-extra) and rerun", "missing") \
                from None
        raise
    if res.returncode != 0:
        raise UsageError(f"{path} is not a {fmt or 'disk'} image qemu-img can read: {runner.last_words(res)}")
    try:
        info = json.loads(res.stdout)
    except ValueError:
        raise ToolFailed(f"read {path}: qemu-img info printed no JSON") from None
    return source_of(info if isinstance(info, dict) else {}, path)


# -- import -------------------------------------------------------------------------------------

def import_image(cfg: Config, path: str, name: str, fmt: str | None = None, pool: str = "",
                 sessions: Sessions = one_shot) -> ImageInfo:
    """Import the file at `path` as the template `name` in `pool` (default: the config's)."""
    check_name(name)
    pool = naming.check_pool_name(Catalogue.of(cfg).pool(pool))
    src = probe(path, fmt)
    with sessions(cfg) as s, s.ioctx(pool) as ioctx:
        rec = _entry(s, ioctx, name)
        if rec and rec.get("state") == "importing":
            finished = _resume(s, ioctx, pool, name, rec)
            if finished:
                return finished
        elif rec:
            raise Busy(f"image {name} exists in pool {pool} (imported from {rec.get('from')}); remove it first "
                       f"(gnt-storage image remove {name}) or choose another name")
        if volumes.exists_fast(ioctx, name):
            raise Busy(f"an image {pool}/{name} exists already (not an imported image); choose another name")
        token = os.urandom(4).hex()
        tmp = f"{name}.import-{token}"
        _put(s, ioctx, name, {"state": "importing", "tmp": tmp, "token": token, "host": socket.gethostname(),
                              "pid": os.getpid(), "at": int(time.time())})
        nbytes = math.ceil(src.size / volumes.MIB) * volumes.MIB
        with s.errors(f"create {pool}/{tmp}"):
            rbd.RBD().create(ioctx, tmp, nbytes, old_format=False, features=volumes.feature_bits(
                volumes.DEFAULT_FEATURES))
        try:
            volumes.write_meta(s, ioctx, tmp, {META_IMPORT: json.dumps({"name": name, "token": token})})
            _copy(cfg, src, pool, tmp)
        except BaseException:  # a failed copy (or Ctrl-C): nothing half made stays behind, if Ceph lets us
            try:
                _remove_partial(s, ioctx, pool, tmp, name, token)
                if (_entry(s, ioctx, name) or {}).get("token") == token:  # not another import's entry
                    _put(s, ioctx, name, None)
            except GanetiCephError as exc:
                log.warn(f"the partial import {pool}/{tmp} stays (a rerun removes it): {exc}")
            raise
        if (_entry(s, ioctx, name) or {}).get("token") != token:  # another import of NAME began meanwhile
            _remove_partial(s, ioctx, pool, tmp, name, token)
            raise Busy(f"another import of {name} started while this one copied; this one is undone, that one "
                       "goes on (see gnt-storage image list)")
        done = {"state": "ready", "snap": SNAP, "format": src.format, "from": src.path, "size": nbytes,
                "created": int(time.time())}
        with volumes._open(s, ioctx, tmp) as img, s.errors(f"snapshot {pool}/{tmp}@{SNAP}"):
            img.create_snap(SNAP)
            img.protect_snap(SNAP)
            img.metadata_set(META_IMAGE, json.dumps(done, sort_keys=True))
        with s.errors(f"rename {pool}/{tmp} to {name}"):
            rbd.RBD().rename(ioctx, tmp, name)
        _put(s, ioctx, name, done)
    return _info(name, pool, done, ())


def _copy(cfg: Config, src: Source, pool: str, image: str) -> None:
    """qemu-img convert into the new (all-zero) image: holes skipped, progress every 10%, bounded."""
    log.progress(f"importing {src.path} ({src.format}, {src.size / volumes.MIB:.0f} MiB) into {pool}/{image}")
    last = [0]

    def show(text: str) -> None:
        steps, last[0] = progress_steps(text, last[0])
        for pct in steps:
            log.progress(f"copied {pct}%")

    try:
        runner.follow(["qemu-img", "convert", "-p", "-n", "--target-is-zero", "-f", src.format, "-O", "raw",
                       src.path, rbd_target(cfg, pool, image)], f"copy {src.path} into {pool}/{image}",
                      copy_timeout(src.size), show)
    except ToolFailed as exc:
        if "Unknown protocol 'rbd'" in exc.message:  # QEMU's rbd driver is a package of its own in Debian
            raise ToolFailed(f"{exc.message}; install qemu-block-extra (QEMU's rbd driver) and rerun") from None
        if exc.kind == "missing":
            raise ToolFailed(f"{exc.message}; install qemu-utils (and qemu-block-extra) and rerun", "missing") \
                from None
        raise


def _resume(s: Session, ioctx: rados.Ioctx, pool: str, name: str, rec: dict) -> ImageInfo | None:
    """An import of `name` was cut short: finish it if it had renamed its image (complete by then), else
    remove its partial image once proven that import's; None when the import may start afresh."""
    token, tmp = rec.get("token"), rec.get("tmp")
    if not isinstance(tmp, str) or not isinstance(token, str) or tmp != f"{name}.import-{token}":
        raise Busy(f"the image registry of pool {pool} holds an entry for {name} that is not ours to read; "
                   f"inspect it (rados -p {pool} getomapval {REGISTRY} {name}) and remove it by hand")
    pid = rec.get("pid")
    if rec.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and \
            {"image", "import"} <= set(procs.cmdline(pid)):
        raise Busy(f"an import of {name} is running here (pid {pid}); wait for it or stop it, then rerun")
    if volumes.exists_fast(ioctx, name):
        meta = _metadata(s, ioctx, name)
        if parse_record(meta.get(META_IMPORT)) == {"name": name, "token": token} and META_IMAGE in meta:
            done = parse_record(meta[META_IMAGE]) or {}
            _put(s, ioctx, name, done)
            log.warn(f"an earlier import of {name} from {done.get('from')} had finished but was not recorded; "
                     f"recorded it now (if not the one wanted: gnt-storage image remove {name}, import again)")
            return _info(name, pool, done, ())
        raise Busy(f"an image {pool}/{name} exists already (not an imported image); choose another name")
    if volumes.exists_fast(ioctx, tmp):
        _remove_partial(s, ioctx, pool, tmp, name, token)
    _put(s, ioctx, name, None)
    return None


def _remove_partial(s: Session, ioctx: rados.Ioctx, pool: str, tmp: str, name: str, token: str) -> None:
    """Remove `tmp`, an interrupted import's image, once proven so: its record is this import's (or it has
    no metadata at all: cut short before writing it), nobody has it open, nothing is cloned from it."""
    what = f"{pool}/{tmp}"
    with volumes._open(s, ioctx, tmp) as img, s.errors(f"look at the partial import {what}"):
        meta = dict(img.metadata_list())
        if meta and parse_record(meta.get(META_IMPORT)) != {"name": name, "token": token}:
            raise Busy(f"{what} is not the partial import of {name} its registry entry names; not removing it")
        users = volumes.watchers(s, img)
        if users:
            raise Busy(f"{what}, an import of {name}, is in use by {', '.join(users)} (still running?); "
                       "wait for it or stop it, then rerun")
        snaps = [x["name"] for x in img.list_snaps()]
        if set(snaps) - {SNAP}:
            raise Busy(f"{what} has snapshots of someone else ({', '.join(sorted(set(snaps) - {SNAP}))}); "
                       "not removing it")
        if SNAP in snaps:
            img.set_snap(SNAP)
            children = [f"{c['pool']}/{c['image']}" for c in img.list_children2()]
            img.set_snap(None)
            if children:
                raise Busy(f"{what} has clones ({', '.join(children)}); not removing it")
            if img.is_protected_snap(SNAP):
                img.unprotect_snap(SNAP)
            img.remove_snap(SNAP)
    log.progress(f"removing {what}, left by an interrupted import of {name}")
    with s.errors(f"remove {what}"):
        rbd.RBD().remove(ioctx, tmp)


# -- list, remove, look-up ------------------------------------------------------------------------

def list_images(cfg: Config, pool: str = "", sessions: Sessions = one_shot) -> list[ImageInfo]:
    """The imported images of `pool` (default: the config's), with their clones."""
    pool = naming.check_pool_name(Catalogue.of(cfg).pool(pool))
    with sessions(cfg) as s, s.ioctx(pool) as ioctx:
        return [_info(name, pool, rec, _clones(s, ioctx, name, rec))
                for name, rec in _entries(s, ioctx) if rec.get("state") == "ready"]


def remove_image(cfg: Config, name: str, pool: str = "", sessions: Sessions = one_shot) -> bool:
    """Remove the imported image `name`: refused while clones exist or anyone has it open; False if the
    registry named it but the image was gone already (the entry is dropped)."""
    check_name(name)
    pool = naming.check_pool_name(Catalogue.of(cfg).pool(pool))
    with sessions(cfg) as s, s.ioctx(pool) as ioctx:
        rec = _entry(s, ioctx, name)
        if not rec or rec.get("state") != "ready":
            raise NotFound(f"no imported image {name} in pool {pool}; see gnt-storage image list")
        if not volumes.exists_fast(ioctx, name):
            _put(s, ioctx, name, None)
            return False
        clones = _clones(s, ioctx, name, rec)
        if clones:
            raise Busy(f"image {name} has {len(clones)} clone(s): {', '.join(clones)}; remove those disks first "
                       "(or flatten them: rbd flatten POOL/IMAGE)")
        with volumes._open(s, ioctx, name) as img, s.errors(f"remove the template snapshot of {pool}/{name}"):
            meta = dict(img.metadata_list())
            if parse_record(meta.get(META_IMAGE)) is None:
                raise Busy(f"{pool}/{name} carries no record of an imported image; not removing it")
            users = volumes.watchers(s, img)
            if users:
                raise Busy(f"image {pool}/{name} is in use by {', '.join(users)}; not removing it")
            snaps = sorted({x["name"] for x in img.list_snaps()} - {SNAP})
            if snaps:
                raise Busy(f"image {pool}/{name} has snapshots besides {SNAP} ({', '.join(snaps)}); not removing it")
            if img.is_protected_snap(SNAP):
                img.unprotect_snap(SNAP)
            img.remove_snap(SNAP)
        with s.errors(f"remove {pool}/{name}"):
            rbd.RBD().remove(ioctx, name)
        _put(s, ioctx, name, None)
    return True


def _clones(s: Session, ioctx: rados.Ioctx, name: str, rec: dict) -> tuple[str, ...]:
    """pool/image of each clone of the template's snapshot (those in the trash too: they still depend on it)."""
    try:
        with rbd.Image(ioctx, name, snapshot=rec.get("snap") or SNAP, read_only=True) as img, \
                s.errors(f"list the clones of {name}"):
            return tuple(sorted(f"{c['pool']}/{c['image']}" + (" (in the trash)" if c.get("trash") else "")
                                for c in img.list_children2()))
    except (rbd.ImageNotFound, rbd.ObjectNotFound):
        return ()


def _info(name: str, pool: str, rec: dict, clones: tuple[str, ...]) -> ImageInfo:
    return ImageInfo(name, pool, int(rec.get("size") or 0) // volumes.MIB, str(rec.get("format", "?")),
                     str(rec.get("from", "?")), float(rec.get("created") or 0), clones)


def _metadata(s: Session, ioctx: rados.Ioctx, name: str) -> dict[str, str]:
    with volumes._open(s, ioctx, name, read_only=True) as img, s.errors(f"read metadata of {name}"):
        return dict(img.metadata_list())


def _entry(s: Session, ioctx: rados.Ioctx, name: str) -> dict | None:
    return parse_record(omap_index.get(s, ioctx, REGISTRY, name, "read the image registry"))


def _put(s: Session, ioctx: rados.Ioctx, name: str, rec: dict | None) -> None:
    omap_index.put(s, ioctx, REGISTRY, name, None if rec is None else json.dumps(rec, sort_keys=True),
                   "write the image registry")


def _entries(s: Session, ioctx: rados.Ioctx) -> Iterator[tuple[str, dict]]:
    for key, raw in omap_index.items(s, ioctx, REGISTRY, "read the image registry"):
        rec = parse_record(raw.decode())
        if rec is not None:
            yield key, rec
