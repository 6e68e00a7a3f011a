"""The volume service: every use case of an RBD volume, whatever the front end.

A front end (today extstorage/provider.py) turns its input into the
frozen dataclasses below, calls one method and formats the result. The
decisions live only here: create vs adopt vs clone, attach as "make a
pending snapshot volume real, then map", the target guard armed by close
and disarmed by open, a grow that a mapped device must see. Errors are
GanetiCephErrors with the messages front ends show as they are.

Built from a Config and a session source; building it connects to nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace

from ganeti_ceph.config import Config, conf_fsid
from ganeti_ceph.errors import Busy, GanetiCephError, NotFound, UsageError
from ganeti_ceph.naming import check_image_name
from ganeti_ceph.rbd import (
    backends,
    catalogue,
    clients,
    locks,
    mappers,
    placement,
    prealloc_wipe,
    snapshots,
    target_guard,
    volumes,
)
from ganeti_ceph.rbd import remove as removal
from ganeti_ceph.rbd.access import check_qemu_conf, userspace_uri
from ganeti_ceph.rbd.catalogue import Backend, Catalogue
from ganeti_ceph.rbd.volumes import ImageRef
from ganeti_ceph.session import Session, one_shot

# Where sessions come from: one_shot (connect per call) or the agent's SessionPool.
Sessions = Callable[[Config], AbstractContextManager[Session]]


@dataclass(frozen=True)
class VolumeRef:
    """A volume: its pool ("": its backend's), its image name, Ganeti's disk UUID, and its backend
    ("": the one its placement record names, else the default; see catalogue.py)."""

    pool: str
    name: str
    uuid: str | None = None
    backend: str = ""


@dataclass(frozen=True)
class VolumeSpec:
    """What create makes (verify checks the same). `origin` is `[pool/]image[@snap]`,
    its pool defaulting to the volume's; `adopt_image` and `origin` exclude each other."""

    ref: VolumeRef
    size_mib: int = 0
    access: str = "kernelspace"
    features: tuple[str, ...] = volumes.DEFAULT_FEATURES
    data_pool: str | None = None
    origin: str | None = None
    adopt_image: str | None = None
    cname: str | None = None
    tags: tuple[str, ...] = ()  # placement: a backend with all of them (none named: any)


@dataclass(frozen=True)
class Created:
    made: bool  # False: this very volume existed already (a repeat)
    adopted_from: str | None = None  # pool/image
    cloned_from: ImageRef | None = None


@dataclass(frozen=True)
class Attachment:
    device: str  # empty in userspace access: QEMU opens the image itself
    uri: str  # rbd:<pool>/<image>[:id=<client>], for QEMU


@dataclass(frozen=True)
class Grown:
    size_mib: int
    device: str | None  # the mapped device that was resized, if mapped here


@dataclass(frozen=True)
class Guard:
    """A mapping left unused by a close, unmapped unless an open follows within `window_s`."""

    device: str
    window_s: float


@dataclass(frozen=True)
class Closed:
    was_open: bool
    guard: Guard | None


def routed(method: Callable) -> Callable:
    """Run a use case on the service of the volume's backend (its cluster's config), with the
    ref's pool and backend named: the first argument is a VolumeRef or a VolumeSpec."""
    @functools.wraps(method)
    def on_backend(self: VolumeService, what: VolumeRef | VolumeSpec, *args: object, **kwargs: object) -> object:
        ref = what.ref if isinstance(what, VolumeSpec) else what
        svc, ref = self.route(ref)
        return method(svc, replace(what, ref=ref) if isinstance(what, VolumeSpec) else ref, *args, **kwargs)
    return on_backend


@dataclass(frozen=True)
class VolumeService:
    """The use cases, over one config and a session source. `pinned`: this service works on that
    backend's cluster (route() makes one per call); unpinned, each call is routed first."""

    cfg: Config
    sessions: Sessions = one_shot
    pinned: Backend | None = None
    home: Config | None = None  # pinned: ceph.yaml's config, which the catalogue's backends refine

    @functools.cached_property
    def catalogue(self) -> Catalogue:
        return catalogue.load(self.cfg)

    def on(self, b: Backend) -> VolumeService:
        """This service pinned to backend `b` (sharing the catalogue read)."""
        home = self.home or self.cfg
        svc = replace(self, cfg=b.config(home), pinned=b, home=home)
        svc.__dict__["catalogue"] = self.catalogue
        return svc

    def resolve(self, ref: VolumeRef) -> VolumeRef:
        """`ref` with its pool and backend named."""
        return self.route(ref)[1]

    def route(self, ref: VolumeRef) -> tuple[VolumeService, VolumeRef]:
        """The service of `ref`'s backend, and `ref` with pool and backend named: the backend it
        names, else (a pool named, or no catalogue file) the default cluster's, else the one its
        placement record names (one read), else the default."""
        if self.pinned is not None:
            return self, VolumeRef(ref.pool or self.pinned.location, ref.name, ref.uuid, self.pinned.name)
        cat = self.catalogue
        if ref.backend:
            b = cat.get(ref.backend)
        elif ref.pool or not cat.declared:
            b = cat.backend_of(cat.pool(ref.pool))
        else:
            rec = self._record(ref.name)
            b = cat.get(rec.backend) if rec else cat.default
        pool = ref.pool if ref.pool and not ref.backend else b.location
        return self.on(b), VolumeRef(pool, ref.name, ref.uuid, b.name)

    def session(self) -> AbstractContextManager[Session]:
        """A session on this service's cluster, for work that is not one volume's (listings)."""
        return self._session()

    def index(self) -> tuple[VolumeService, str]:
        """The service of the placement records' cluster, and their pool."""
        b = self.catalogue.get(self.catalogue.index)
        return self.on(b), b.location

    def _record(self, name: str) -> backends.Record | None:
        svc, location = self.index()
        with svc._session() as s:
            return backends.lookup(s, location, name)

    def _put_record(self, name: str, rec: backends.Record | None) -> None:
        """Write (None: drop) volume `name`'s placement record, in a session of the index's own."""
        svc, location = self.index()
        with svc._session() as s:
            backends.put(s, location, name, rec)

    @contextmanager
    def _session(self, ref: VolumeRef | None = None) -> Iterator[Session]:
        """A session for one use case. Working on the volume `ref`, it first releases what dead clients
        of ours on this node still hold, then is recorded as ours for the call (clients.py)."""
        with self.sessions(self.cfg) as s:
            if ref is None:
                yield s
                return
            fsid = self._fsid(ref, s)
            clients.release_dead(self.cfg.run_dir, s, fsid)
            with clients.recorded(self.cfg.run_dir, s, fsid, ref.pool, ref.name):
                yield s

    def _conf_fsid(self, ref: VolumeRef) -> str | None:
        """The fsid written in the conf of the volume's backend: known without asking Ceph."""
        return conf_fsid(self.cfg.conf)

    def _fsid(self, ref: VolumeRef, session: Session | None = None) -> str:
        """The cluster's fsid: from its conf if written there, else asked (in `session` if given)."""
        fsid = self._conf_fsid(ref)
        if fsid:
            return fsid
        if session is not None:
            return session.fsid()
        with self._session() as s:
            return s.fsid()

    @staticmethod
    def _target(ref: VolumeRef, fsid: str) -> mappers.Target:
        return mappers.Target(fsid, ref.pool, ref.name)

    def _require_volume(self, s: Session, ref: VolumeRef) -> None:
        """The image exists, or is a pending snapshot volume, made real now; a disk whose revert to a
        user snapshot stopped halfway is refused (a guest must not start on it)."""
        try:
            s.require_image(ref.pool, ref.name)
        except NotFound:
            if not snapshots.materialize(s, ref.pool, ref.name):
                raise
            return
        from ganeti_ceph.rbd import user_snapshots  # here only: a create does not load it (nor datetime)

        with s.ioctx(ref.pool) as ioctx:
            pending = user_snapshots.revert_pending(s, ioctx, ref.name)
        if pending is not None:
            raise Busy(f"{ref.pool}/{ref.name}: its revert to snapshot {pending.to} stopped halfway; finish it "
                       f"(gnt-storage snapshot revert INSTANCE DISK {pending.to}) before using the disk")

    def create(self, spec: VolumeSpec) -> Created:
        """A new image, an adopted one (renamed, no copy) or a clone of `origin`, on the backend
        placement picks (catalogue.py, placement.py); a repeat is a success."""
        if self.pinned is not None or not self.catalogue.declared:
            svc, ref = self.route(spec.ref)
            return svc._create(replace(spec, ref=ref))
        if (spec.origin or spec.adopt_image) and not (spec.ref.backend or spec.ref.pool):
            if spec.tags:  # a clone or an adopted image lives where its source is: no choosing
                raise UsageError("origin and adopt_image take the backend of their image: name it (backend=) "
                                 "instead of tags")
            spec = replace(spec, ref=replace(spec.ref, backend=self.catalogue.default.name))
        svc, ref, reserved = self._place(spec)
        try:
            return svc._create(replace(spec, ref=ref, data_pool=spec.data_pool or svc.pinned.data_pool or None))
        except BaseException:
            if reserved:  # the reservation goes only if no image was made (else it counts what exists)
                with contextlib.suppress(GanetiCephError):
                    with svc._session() as vs, vs.ioctx(ref.pool) as ioctx:
                        made = volumes.exists_fast(ioctx, ref.name)
                    if not made:
                        self._put_record(ref.name, None)
            raise

    def _place(self, spec: VolumeSpec) -> tuple[VolumeService, VolumeRef, bool]:
        """Pick the backend and record it, under the records' lock: the one `spec` names (within its
        limits), the one already recorded (a repeat), else placement.choose. True: recorded now."""
        cat, ref, size = self.catalogue, spec.ref, spec.size_mib * volumes.MIB
        named = (cat.get(ref.backend) if ref.backend else cat.backend_of(ref.pool)) if ref.backend or ref.pool \
            else None
        asked = [named] if named else list(cat.backends)
        said = self.ask([b.name for b in asked if limited(b) or named is None])  # outside the lock
        isvc, location = self.index()
        with isvc._session() as s, backends.locked(s, location):
            rec = backends.lookup(s, location, ref.name)
            if rec is not None:
                return (*self.on(cat.get(rec.backend)).route(VolumeRef("", ref.name, ref.uuid)), False)
            figs = backends.figures(cat, said, backends.records(s, location)) if said else {}
            if named is not None:
                b = named
                self._refuse_over(b, figs, size, 1, f"create of {ref.name}")
            else:
                b = placement.choose(cat, figs, size, spec.tags)
            backends.put(s, location, ref.name, backends.Record(b.name, size))
        svc, routed_ref = self.on(b).route(replace(ref, backend=b.name))
        return svc, routed_ref, True

    def ask(self, names: Iterable[str], io: bool = False) -> dict[str, backends.Said]:
        """What the clusters of the backends `names` say of their pools (backends.ask)."""
        return backends.ask(self.catalogue, names, lambda b: self.on(b)._session(), io)

    def figures(self, names: Iterable[str], recs: dict[str, backends.Record], io: bool = False) -> dict:
        return backends.figures(self.catalogue, self.ask(names, io), recs)

    @staticmethod
    def _refuse_over(b: Backend, figs: dict, add: int, volumes_: int, doing: str) -> None:
        """Refuse `doing` past `b`'s overcommit or quotas (`figs` holds b's figures when it has limits)."""
        if not limited(b):
            return
        f = figs.get(b.name, "not asked")
        if isinstance(f, str):
            raise UsageError(f"{doing} refused: backend {b.name}'s limits cannot be checked ({f})")
        placement.refuse_over(b, f, add, volumes_, doing)

    def _create(self, spec: VolumeSpec) -> Created:
        ref = spec.ref
        pool = ref.pool
        bad = [f for f in spec.features if f in mappers.get(self.cfg.mapper).unsupported_features]
        if spec.access == "kernelspace" and bad:
            raise UsageError(f"feature {', '.join(bad)} is not supported by {self.cfg.mapper}; drop it or use "
                             "access=userspace")
        origin = volumes.parse_origin(spec.origin, pool) if spec.origin else None
        if spec.adopt_image or origin:  # Ganeti's wipe would zero them: see ganeti_ceph/rbd/prealloc_wipe.py
            prealloc_wipe.refuse_if_wiped(f"the adopted image {pool}/{spec.adopt_image}"
                                          if spec.adopt_image else f"this clone of {origin}")
        meta = metadata(spec)
        with self._session(ref) as s:
            if spec.adopt_image:
                made = volumes.adopt(s, pool, spec.adopt_image, ref.name, spec.size_mib, meta)
                return Created(made, adopted_from=f"{pool}/{spec.adopt_image}")
            if origin:
                made = volumes.clone(s, origin, pool, ref.name, spec.size_mib, spec.features, spec.data_pool,
                                     meta, self.cfg.clone_max_depth)
                return Created(made, cloned_from=origin)
            return Created(volumes.create(s, pool, ref.name, spec.size_mib, spec.features, spec.data_pool, meta))

    @routed
    def attach(self, ref: VolumeRef, access: str) -> Attachment:
        """userspace: the URI only; kernelspace: the volume mapped here (if not yet), and the URI."""
        ref = self.resolve(ref)
        elsewhere = self.home is not None and self.cfg.conf != self.home.conf  # a backend's own cluster
        uri = userspace_uri(ref.pool, ref.name, self.cfg.client_id, *((self.cfg.conf, self.cfg.keyring)
                                                                       if elsewhere else ()))
        if access == "userspace":
            with self._session(ref) as s:
                self._require_volume(s, ref)
                if not elsewhere:
                    check_qemu_conf(self._fsid(ref, s), self.cfg.source)
            return Attachment("", uri)
        mapper = mappers.for_config(self.cfg)
        fsid = self._conf_fsid(ref)
        # Only sysfs and a link are read here: nothing that could block on a
        # wedged mapping (a stat of an rbd-fuse file can hang with its cluster).
        dev = mapper.find(self._target(ref, fsid)) if fsid else None
        if dev is None:
            with self._session(ref) as s:
                self._require_volume(s, ref)
                dev = mapper.map(self._target(ref, self._fsid(ref, s)))
        return Attachment(dev, uri)

    @routed
    def detach(self, ref: VolumeRef) -> bool:
        """Unmap what attach mapped, in either access mode; False if nothing was mapped."""
        ref = self.resolve(ref)
        return mappers.for_config(self.cfg).unmap(self._target(ref, self._fsid(ref)))

    def detach_all(self, names: Iterable[str]) -> list[VolumeRef]:
        """Unmap every mapping on this node of the volumes `names`, in whichever pool (the post hooks'
        cleanup of an instance's disks: Ganeti does not say their pools); the ones unmapped."""
        wanted = set(names)
        if self.pinned is None:  # the default cluster, then every other cluster of the catalogue
            out = self.on(self.catalogue.default).detach_all(wanted)
            others = {backends.cluster_key(b): b for b in self.catalogue.backends}
            others.pop(backends.cluster_key(self.catalogue.default), None)
            for b in others.values():
                svc = self.on(b)
                if svc._conf_fsid(VolumeRef("", "")):  # mapped only if known without asking that cluster
                    out += svc.detach_all(wanted)
            return out
        fsid = self._fsid(VolumeRef("", ""))
        mapper = mappers.for_config(self.cfg)
        return [VolumeRef(m.target.pool, m.target.image) for m in mappers.table.mapped(self.cfg.run_dir, fsid)
                if m.target.image in wanted and mapper.unmap(m.target)]

    @routed
    def remove(self, ref: VolumeRef) -> bool:
        """Remove the image (False: already gone). A mapping still present, here or elsewhere,
        is a watcher: remove refuses rather than pull a disk from under a VM."""
        ref = self.resolve(ref)
        with self._session(ref) as s:
            gone = removal.remove(s, ref.pool, ref.name, ref.uuid)
        if self.catalogue.declared:  # the image is gone: so goes its record (and its provisioned bytes)
            self._put_record(ref.name, None)
        return gone

    @routed
    def grow(self, ref: VolumeRef, new_size_mib: int) -> Grown:
        """Grow (never shrink) to `new_size_mib`; a device mapped here is resized with it."""
        ref = self.resolve(ref)
        if self.catalogue.declared:
            self._reserve_growth(ref, new_size_mib * volumes.MIB)
        with self._session(ref) as s:
            size = volumes.grow(s, ref.pool, ref.name, new_size_mib)
            fsid = self._fsid(ref, s)
        mapper = mappers.for_config(self.cfg)
        dev = mapper.find(self._target(ref, fsid))
        if dev:  # mapped here: the device must show the new size before Ganeti looks
            mapper.refresh(dev, self._target(ref, fsid), size * volumes.MIB)
        return Grown(size, dev)

    def _reserve_growth(self, ref: VolumeRef, new_size: int) -> None:
        """Check the backend's limits for the growth and record the new size, under the lock."""
        assert self.pinned is not None
        b = self.pinned
        said = self.ask([b.name]) if limited(b) else {}  # outside the lock
        isvc, location = self.index()
        with isvc._session() as s, backends.locked(s, location):
            rec = backends.lookup(s, location, ref.name)
            if rec is None:  # made before the catalogue: counted from now on
                with self._session() as vs:
                    rec = backends.Record(b.name, volumes.size_of(vs, ref.pool, ref.name))
            if new_size > rec.size:
                figs = backends.figures(self.catalogue, said, backends.records(s, location)) if said else {}
                self._refuse_over(b, figs, new_size - rec.size, 0, f"grow of {ref.name}")
                backends.put(s, location, ref.name, backends.Record(rec.backend, new_size, rec.kind))

    @routed
    def set_info(self, ref: VolumeRef, text: str) -> None:
        """Ganeti's free-form text about the volume, kept as image metadata."""
        ref = self.resolve(ref)
        with self._session(ref) as s:
            volumes.set_metadata(s, ref.pool, ref.name, {volumes.META_INFO: text})

    @routed
    def snapshot(self, ref: VolumeRef, snapshot_volume: str) -> bool:
        """Snapshot now, as the volume `snapshot_volume` (made real at its first attach or open);
        False if that snapshot exists already."""
        ref = self.resolve(ref)
        check_image_name(snapshot_volume)  # bad input changes nothing, not even this node's records
        if self.catalogue.declared and self.pinned is not None:
            # Ganeti attaches and removes the snapshot volume with the disk's parameters, which name no
            # backend: its record sends those calls where the snapshot is (kept out of the counts).
            self._put_record(snapshot_volume, backends.Record(self.pinned.name, 0, backends.SNAPSHOT))
        with self._session(ref) as s:
            return snapshots.snapshot(s, ref.pool, ref.name, snapshot_volume)

    @routed
    def open(self, ref: VolumeRef, exclusive: bool) -> str:
        """Record this node as opener (see locks.open_volume); returns what was done."""
        ref = self.resolve(ref)
        with self._session(ref) as s:
            self._require_volume(s, ref)
            done = locks.open_volume(s, ref.pool, ref.name, self.cfg.node_name, exclusive)
            fsid = self._fsid(ref, s)
        target_guard.disarm(self.cfg, self._target(ref, fsid))
        return done

    @routed
    def close(self, ref: VolumeRef) -> Closed:
        """Close; an unused mapping left here gets a guard (ganeti_ceph/rbd/target_guard.py): after a
        failed live migration to this node, Ganeti would never unmap it. The guard is armed before
        Ceph is asked: a close that fails because this node lost Ceph is such a migration."""
        ref = self.resolve(ref)
        fsid = self._conf_fsid(ref)
        guard = self._guard(ref, fsid) if fsid else None
        with self._session(ref) as s:
            if not fsid:
                guard = self._guard(ref, s.fsid())
            had = locks.close_volume(s, ref.pool, ref.name, self.cfg.node_name)
        return Closed(had, guard)

    def _guard(self, ref: VolumeRef, fsid: str) -> Guard | None:
        dev = mappers.for_config(self.cfg).find(self._target(ref, fsid))
        if dev is None or not target_guard.arm(self.cfg, self._target(ref, fsid), dev):
            return None
        return Guard(dev, target_guard.window(self.cfg))

    @routed
    def verify(self, spec: VolumeSpec) -> str:
        """The cluster answers, the pool (and data pool, origin) exist; the name of the cluster checked."""
        ref = self.resolve(spec.ref)
        with self._session() as s:
            for pool in filter(None, (ref.pool, spec.data_pool)):
                with s.ioctx(pool):
                    pass
            if spec.origin:
                origin = volumes.parse_origin(spec.origin, ref.pool)
                s.require_image(origin.pool, origin.image)
        return self.cfg.cluster

    @staticmethod
    def switch_access(instance: str, mode: str, dry_run: bool = False) -> int:
        """Move an instance's disks to access `mode` (see ganeti_ceph/rbd/access_switch.py)."""
        from ganeti_ceph.rbd import access_switch  # Ganeti's CLI and state: not loaded for a provider call

        return access_switch.switch(instance, mode, dry_run=dry_run)


def limited(b: Backend) -> bool:
    """Whether a create or grow on `b` must be checked against figures (overcommit or a quota)."""
    return bool(b.overcommit or b.quota_gib or b.quota_volumes)


def metadata(spec: VolumeSpec) -> dict[str, str]:
    """Our image metadata for a new volume: its access mode, Ganeti's disk UUID and name."""
    meta = {volumes.META_ACCESS: spec.access}
    if spec.ref.uuid:
        meta[volumes.META_UUID] = spec.ref.uuid
    if spec.cname:
        meta[volumes.META_CNAME] = spec.cname
    return meta
