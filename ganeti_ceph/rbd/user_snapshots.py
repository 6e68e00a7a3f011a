"""User snapshots of a volume: taken, listed, reverted to and removed by the admin (`gnt-storage snapshot`).

They are RBD snapshots named `user.NAME`; the provider's own snapshots
(Ganeti's `snapshot` action and clone origins, snapshots.py, volumes.py) are
named `ganeti-*` and are never listed, counted, reverted to or removed here.

A revert destroys what was written since the snapshot, so it first takes a
safety snapshot of the current state (itself a user snapshot: reverting to it
undoes the revert). Its steps are recorded before the first one: the marker
`ganeti.revert` in the image's metadata names the target and the safety
snapshot; it is cleared only once the rollback is complete. A revert that
stopped halfway leaves the marker: `list` shows it, `add`, `remove` of either
snapshot and a revert to another one are refused, and rerunning the same
revert finishes it (the safety snapshot is taken only if missing, which it
can only be if the rollback never began). `revert_pending` reads the marker
with two OSD reads and no image open, for attach/start to refuse such a disk.

A snapshot protected by us (volumes._clone_snapshot records it in
`ganeti.protected.<snap>`) is unprotected by remove once no clone needs it;
one protected by anyone else is left to them.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import rados
import rbd

from ganeti_ceph import runner
from ganeti_ceph.errors import Busy, GanetiFailed, NotFound, UsageError
from ganeti_ceph.ganeti import config_data
from ganeti_ceph.ganeti.config_data import Disk
from ganeti_ceph.log import progress
from ganeti_ceph.rbd import clients, header, volumes
from ganeti_ceph.session import Session

if TYPE_CHECKING:  # Ganeti's reader and the service: not loaded for revert_pending (a provider call may use it)
    from ganeti_ceph.rbd.access_switch import Ganeti, Instance
    from ganeti_ceph.rbd.service import VolumeService

PREFIX = "user."  # RBD snapshot name = PREFIX + the user's name
META_REVERT = "ganeti.revert"  # {"to": NAME, "safety": NAME, "size": bytes before, "at": epoch s}
META_PROTECTED = volumes.META_PROTECTED  # + snapshot: we protected it for a clone
SAFETY_PREFIX = "before-revert-"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# ---- pure --------------------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """A user snapshot name: letters, digits, '.', '_', '-', starting with a letter or digit, at most 64."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"invalid snapshot name {name!r}: use letters, digits, '.', '_' and '-', starting with "
                         "a letter or digit, at most 64 characters")
    return name


def stamp(now: float) -> str:
    """A name from a time (UTC, sortable): 20261201T051140Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def epoch(when: datetime) -> float:
    """Seconds since the epoch of librbd's snapshot time, which the binding gives as a naive UTC datetime
    (`.timestamp()` would read it as local time)."""
    return when.timestamp() if when.tzinfo else float(calendar.timegm(when.timetuple()))


def unique(base: str, taken: set[str]) -> str:
    """`base`, or `base-2`, `base-3`... whichever is not taken."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def user_name(snap: str) -> str | None:
    """The user's name of an RBD snapshot; None for any other snapshot (the provider's, an admin's)."""
    return snap[len(PREFIX):] if snap.startswith(PREFIX) and NAME_RE.fullmatch(snap[len(PREFIX):]) else None


@dataclass(frozen=True)
class Marker:
    """An unfinished revert: to `to`, the state before kept as `safety`."""

    to: str
    safety: str
    size: int
    at: float = 0.0

    def text(self) -> str:
        return json.dumps({"to": self.to, "safety": self.safety, "size": self.size, "at": round(self.at)},
                          sort_keys=True)


def parse_marker(raw: str | None) -> Marker | None:
    """The marker's JSON (None: no revert pending). An unreadable marker still means a revert is pending."""
    if raw is None:
        return None
    try:
        d = json.loads(raw)
        return Marker(check_name(str(d["to"])), check_name(str(d["safety"])), int(d["size"]), float(d.get("at", 0)))
    except (ValueError, KeyError, TypeError, UsageError):
        raise Busy(f"unreadable revert marker {META_REVERT}={raw!r} on the image: a revert stopped halfway; "
                   "read rbd image-meta list and fix it by hand") from None


@dataclass(frozen=True)
class UserSnapshot:
    name: str
    snap_id: int
    size: int  # bytes
    created: float  # epoch s
    protected: bool
    clones: tuple[str, ...]  # pool/image of each clone of it ("(in trash)" marked)
    state: str = ""  # "revert target"/"revert safety" while a revert is unfinished


def oldest_beyond(snaps: list[UserSnapshot], keep: int) -> list[UserSnapshot]:
    """The snapshots a `--keep keep` removes: all but the `keep` newest (by RBD snapshot id, i.e. age)."""
    ordered = sorted(snaps, key=lambda s: s.snap_id)
    return ordered[:max(0, len(ordered) - keep)]


def states(snaps: list[UserSnapshot], marker: Marker | None) -> list[UserSnapshot]:
    """Each snapshot with what an unfinished revert makes of it."""
    if marker is None:
        return snaps
    role = {marker.to: "revert target (unfinished)", marker.safety: "revert safety (unfinished)"}
    return [UserSnapshot(s.name, s.snap_id, s.size, s.created, s.protected, s.clones, role.get(s.name, ""))
            for s in snaps]


# ---- on the cluster ----------------------------------------------------------------------------------------


@contextmanager
def _image(s: Session, pool: str, image: str, read_only: bool = False) -> Iterator[rbd.Image]:
    with s.ioctx(pool) as ioctx, s.errors(f"open image {pool}/{image}"):
        img = rbd.Image(ioctx, image, read_only=read_only)
    with img:
        yield img


def _marker(s: Session, img: rbd.Image, what: str) -> Marker | None:
    with s.errors(f"read the metadata of {what}"):
        try:
            raw = img.metadata_get(META_REVERT)
        except KeyError:
            raw = None
    return parse_marker(raw)


def _set_marker(s: Session, img: rbd.Image, what: str, marker: Marker | None) -> None:
    with s.errors(f"write the revert marker of {what}"):
        if marker is None:
            img.metadata_remove(META_REVERT)
        else:
            img.metadata_set(META_REVERT, marker.text())


def _clones(s: Session, img: rbd.Image, snap: str) -> tuple[str, ...]:
    with s.errors(f"list the clones of @{snap}"):
        img.set_snap(snap)
        try:
            kids = img.list_children2()
        finally:
            img.set_snap(None)
    return tuple(sorted(f"{c['pool']}/{c['image']}" + (" (in trash)" if c.get("trash") else "") for c in kids))


def _snaps(s: Session, img: rbd.Image, with_clones: bool = True) -> list[UserSnapshot]:
    found = []
    with s.errors("list snapshots"):
        raw = [x for x in img.list_snaps() if x.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER)
               == rbd.RBD_SNAP_NAMESPACE_TYPE_USER]
    for x in raw:
        name = user_name(x["name"])
        if name is None:
            continue
        with s.errors(f"look at snapshot {x['name']}"):
            created = epoch(img.get_snap_timestamp(x["id"]))
            protected = bool(img.is_protected_snap(x["name"]))
        clones = _clones(s, img, x["name"]) if with_clones else ()
        found.append(UserSnapshot(name, int(x["id"]), int(x["size"]), created, protected, clones))
    return sorted(found, key=lambda u: u.snap_id)


def _named(snaps: list[UserSnapshot], name: str, what: str) -> UserSnapshot:
    for snap in snaps:
        if snap.name == name:
            return snap
    have = ", ".join(s.name for s in snaps) or "none"
    raise NotFound(f"{what} has no snapshot {name} (its snapshots: {have})")


@dataclass(frozen=True)
class Listing:
    snaps: list[UserSnapshot]
    marker: Marker | None


def listing(s: Session, pool: str, image: str) -> Listing:
    """The user snapshots of pool/image, oldest first, and its unfinished revert if any."""
    what = f"{pool}/{image}"
    with _image(s, pool, image, read_only=True) as img:
        marker = _marker(s, img, what)
        return Listing(states(_snaps(s, img), marker), marker)


@dataclass(frozen=True)
class Added:
    name: str
    pruned: list[str] = field(default_factory=list)  # removed by --keep
    spared: list[tuple[str, str]] = field(default_factory=list)  # (name, why) kept beyond --keep


def add(s: Session, pool: str, image: str, name: str | None, keep: int | None = None, rerun: str = "",
        now: float | None = None) -> Added:
    """Take snapshot `name` (default: the time) of pool/image; then, with `keep`, remove the oldest user
    snapshots beyond `keep`, sparing those with clones or protected by someone else."""
    what = f"{pool}/{image}"
    if keep is not None and keep < 1:
        raise UsageError(f"--keep {keep}: keep at least 1 snapshot")
    name = check_name(name) if name is not None else None
    with _image(s, pool, image) as img:
        marker = _marker(s, img, what)
        if marker is not None:
            raise Busy(f"a revert of {what} to {marker.to} stopped halfway: finish it first ({rerun or 'rerun it'} "
                       f"{marker.to})")
        snaps = _snaps(s, img, with_clones=False)
        taken = {x.name for x in snaps}
        if name is None:
            name = unique(stamp(time.time() if now is None else now), taken)
        elif name in taken:
            raise Busy(f"{what} has a snapshot {name} already: give another name")
        with s.errors(f"snapshot {what}"):
            img.create_snap(PREFIX + name)
        if keep is None:
            return Added(name)
        pruned, spared = [], []
        for old in oldest_beyond(_snaps(s, img), keep):
            why = _unremovable(s, img, old)
            if why:
                spared.append((old.name, why))
                continue
            progress(f"{what}: removing snapshot {old.name} (beyond --keep {keep})")
            _remove(s, img, old)
            pruned.append(old.name)
        return Added(name, pruned, spared)


def _unremovable(s: Session, img: rbd.Image, snap: UserSnapshot) -> str:
    """Why `snap` must stay ("" if nothing holds it)."""
    if snap.clones:
        return f"clones depend on it: {', '.join(snap.clones)}"
    if snap.protected and not _ours(s, img, snap.name):
        return (f"it is protected, not by ganeti-ceph (rbd snap unprotect {img.get_name()}@{PREFIX}{snap.name} "
                "if you mean to drop it)")
    return ""


def _ours(s: Session, img: rbd.Image, name: str) -> bool:
    with s.errors("read image metadata"):
        try:
            img.metadata_get(META_PROTECTED + PREFIX + name)
            return True
        except KeyError:
            return False


def _remove(s: Session, img: rbd.Image, snap: UserSnapshot) -> None:
    key = PREFIX + snap.name
    with s.errors(f"remove snapshot {key}"):
        if snap.protected:
            img.unprotect_snap(key)
        img.remove_snap(key)
        if snap.protected:
            img.metadata_remove(META_PROTECTED + key)


def remove(s: Session, pool: str, image: str, name: str) -> None:
    """Remove user snapshot `name`: refused while clones depend on it, while an unfinished revert needs it,
    and while it is protected by someone else."""
    what = f"{pool}/{image}"
    check_name(name)
    with _image(s, pool, image) as img:
        marker = _marker(s, img, what)
        snap = _named(_snaps(s, img), name, what)
        if marker is not None and name in (marker.to, marker.safety):
            raise Busy(f"snapshot {name} of {what} is needed by a revert to {marker.to} that stopped halfway: "
                       "finish that revert first")
        why = _unremovable(s, img, snap)
        if why:
            raise Busy(f"snapshot {name} of {what} stays: {why}" +
                       ("; remove or flatten them first (rbd flatten POOL/IMAGE)" if snap.clones else ""))
        _remove(s, img, snap)


@dataclass(frozen=True)
class Reverted:
    to: str
    safety: str  # the user snapshot holding the state before the revert
    resumed: bool  # an unfinished revert was finished


def revert(s: Session, pool: str, image: str, name: str, rerun: str = "", now: float | None = None,
           stop_after_safety: bool = False) -> Reverted:
    """Roll pool/image back to user snapshot `name`, the current state first kept as a safety snapshot.
    Refused while anyone else has the image open (a VM, a mapping). `stop_after_safety` stops where an
    interruption during the rollback would (the marker and safety snapshot written): for tests."""
    what = f"{pool}/{image}"
    check_name(name)
    with _image(s, pool, image) as img:
        marker = _marker(s, img, what)
        snaps = _snaps(s, img, with_clones=False)
        _named(snaps, name, what)
        if marker is not None and marker.to != name:
            raise Busy(f"a revert of {what} to {marker.to} stopped halfway: finish it first ({rerun or 'rerun it'} "
                       f"{marker.to})")
        users = volumes.watchers(s, img)
        if users:
            raise Busy(f"{what} is open elsewhere ({', '.join(users)}): a VM or a mapping uses it; stop the "
                       "instance and deactivate its disks (gnt-instance deactivate-disks), then revert")
        resumed = marker is not None
        if marker is None:
            with s.errors(f"size of {what}"):
                size = int(img.size())
            safety = unique(SAFETY_PREFIX + stamp(time.time() if now is None else now), {x.name for x in snaps})
            marker = Marker(name, safety, size, time.time() if now is None else now)
            _set_marker(s, img, what, marker)  # before any change: from here on a rerun finishes
        if marker.safety not in {x.name for x in snaps}:  # missing only if the rollback never began
            progress(f"{what}: keeping the current state as snapshot {marker.safety}")
            with s.errors(f"snapshot {what}"):
                img.create_snap(PREFIX + marker.safety)
        if stop_after_safety:
            return Reverted(name, marker.safety, resumed)
        progress(f"{what}: rolling back to snapshot {name} (rewrites every object that changed since)")
        with s.errors(f"roll {what} back to {name}"):
            img.rollback_to_snap(PREFIX + name)
            if img.size() < marker.size:  # Ganeti still knows the disk at its later size: keep that size
                img.resize(marker.size, allow_shrink=False)
        _set_marker(s, img, what, None)
    return Reverted(name, marker.safety, resumed)


@contextmanager
def recorded_session(svc: VolumeService, pool: str, image: str) -> Iterator[Session]:
    """A session of the volume service whose client is recorded for the call (clients.py), as the service's
    own calls are: a run killed mid-way (a revert in its rollback) leaves a watch and the image's lock that
    would refuse its rerun until Ceph's watch timeout; the next run releases what dead runs left first."""
    with svc.sessions(svc.cfg) as s:
        fsid = s.fsid()
        clients.release_dead(svc.cfg.run_dir, s, fsid)
        with clients.recorded(svc.cfg.run_dir, s, fsid, pool, image):
            yield s


def revert_pending(s: Session, ioctx: rados.Ioctx, image: str) -> Marker | None:
    """The unfinished revert of `image` (None: none), read without opening it: its id object, then one
    omap key of its header (librbd keeps metadata there as `metadata_<key>`, the value as it was set)."""
    what = f"read the revert marker of {image}"
    if not volumes.exists_fast(ioctx, image):
        return None
    with s.errors(what):
        oid = header.oid(ioctx, image)
        with rados.ReadOpCtx() as op:
            it, _ = ioctx.get_omap_vals_by_keys(op, (f"metadata_{META_REVERT}",))
            ioctx.operate_read_op(op, oid)
            raw = next((v for _, v in it), None)
    if raw is None:
        return None
    if raw[:1] != b"{" and len(raw) >= 4:  # a length-prefixed bufferlist, should a librbd store it so
        (length,) = struct.unpack_from("<I", raw)
        raw = raw[4:4 + length] if length == len(raw) - 4 else raw
    return parse_marker(raw.decode(errors="replace"))


# ---- an instance's disk, as Ganeti names it (on the master) ------------------------------------------------


def resolve_disk(instance: str, disks: tuple[Disk, ...], spec: str) -> Disk:
    """The disk `spec` names: Ganeti's index, the disk's name or its UUID (pure); only rbd disks."""
    found = [d for d in disks if spec in (str(d.index), d.name, d.uuid)]
    if not found:
        have = ", ".join(f"{d.index}" + (f" ({d.name})" if d.name else "") for d in disks) or "none"
        raise UsageError(f"instance {instance} has no disk {spec!r} (its disks: {have}); give its index, name or UUID")
    disk = found[0]
    if not disk.is_rbd:
        kind = "/".join(filter(None, (disk.dev_type, disk.params.get("provider"))))
        raise UsageError(f"disk/{disk.index} of {instance} is not a disk of the {config_data.RBD_PROVIDER} "
                         f"ExtStorage provider (it is {kind}); its snapshots are not ours to take")
    return disk


def check_stopped(inst: Instance) -> None:
    """A revert rewrites the disk under the guest: the instance must be down and meant to stay down."""
    name = inst.name
    if inst.running:
        raise Busy(f"instance {name} is running: stop it first (gnt-instance shutdown {name}), then revert")
    if inst.running is None:
        raise Busy(f"cannot tell whether instance {name} runs (status {inst.status}); bring its node back first")
    if inst.admin_state == "up":
        raise Busy(f"instance {name} is meant to run (status {inst.status}) and Ganeti's watcher may start it: "
                   f"gnt-instance shutdown {name} first")


@dataclass(frozen=True)
class DiskVolume:
    """One rbd disk of an instance and the image holding it."""

    instance: str
    disk: Disk
    pool: str
    svc: VolumeService  # pinned to the volume's backend (its cluster)

    @property
    def image(self) -> str:
        return self.disk.volume

    @property
    def label(self) -> str:
        return f"{self.instance} disk/{self.disk.index}"


class InstanceSnapshots:
    """The user snapshots of an instance's rbd disks: Ganeti names the disk (access_switch.Ganeti, the
    master's reader), the volume service's sessions reach its image."""

    def __init__(self, svc: VolumeService, ganeti: Ganeti | None = None) -> None:
        from ganeti_ceph.rbd import access_switch

        self.svc = svc
        self.ganeti = ganeti or access_switch.Ganeti()

    def _volume(self, inst: Instance, disk: Disk) -> DiskVolume:
        from ganeti_ceph.rbd.service import VolumeRef

        ref = VolumeRef(disk.params.get("pool", ""), disk.volume, None, disk.params.get("backend", ""))
        svc, ref = self.svc.route(ref)  # a placed disk is where its record says
        return DiskVolume(inst.name, disk, ref.pool, svc)

    def volumes(self, instance: str, spec: str | None) -> list[DiskVolume]:
        """The disk `spec` names, or (None) every rbd disk of the instance."""
        self.ganeti.check_master()
        inst = self.ganeti.instance(instance)
        if spec is not None:
            return [self._volume(inst, resolve_disk(inst.name, inst.disks, spec))]
        return [self._volume(inst, d) for d in inst.disks if d.is_rbd]

    @contextmanager
    def _locked(self, instance: str, spec: str, action: str) -> Iterator[tuple[Instance, DiskVolume]]:
        """The instance read again under its lock (the one rbd-access and rbd-convert take too)."""
        self.ganeti.check_master()
        first = self.ganeti.instance(instance)

        def busy(holder: str) -> Busy:
            return Busy(f"another gnt-storage command changes instance {first.name} (pid {holder or 'unknown'}); "
                        "wait for it")

        from ganeti_ceph.rbd.access_switch import LOCK_WAIT

        path = os.path.join(self.ganeti.lock_dir, f"{first.uuid}.lock")
        with runner.held(path, LOCK_WAIT, f"{os.getpid()} (gnt-storage snapshot {action})", busy, GanetiFailed):
            inst = self.ganeti.instance(instance)
            yield inst, self._volume(inst, resolve_disk(inst.name, inst.disks, spec))

    def _rerun(self, vol: DiskVolume) -> str:
        return f"gnt-storage snapshot revert {vol.instance} {vol.disk.index}"

    def add(self, instance: str, spec: str, name: str | None, keep: int | None) -> tuple[DiskVolume, Added]:
        if name is not None:
            check_name(name)
        with self._locked(instance, spec, "add") as (_, vol), recorded_session(vol.svc, vol.pool, vol.image) as s:
            return vol, add(s, vol.pool, vol.image, name, keep, self._rerun(vol))

    def listing(self, instance: str, spec: str | None) -> list[tuple[DiskVolume, Listing]]:
        vols = self.volumes(instance, spec)
        out = []
        for vol in vols:
            with vol.svc.session() as s:
                out.append((vol, listing(s, vol.pool, vol.image)))
        return out

    def remove(self, instance: str, spec: str, name: str) -> DiskVolume:
        check_name(name)
        with self._locked(instance, spec, "remove") as (_, vol), \
                recorded_session(vol.svc, vol.pool, vol.image) as s:
            remove(s, vol.pool, vol.image, name)
            return vol

    def revert(self, instance: str, spec: str, name: str) -> tuple[DiskVolume, Reverted]:
        check_name(name)
        with self._locked(instance, spec, "revert") as (inst, vol):
            check_stopped(inst)
            with recorded_session(vol.svc, vol.pool, vol.image) as s:
                return vol, revert(s, vol.pool, vol.image, name, self._rerun(vol))
