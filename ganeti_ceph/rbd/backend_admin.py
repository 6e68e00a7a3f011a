"""Changing the catalogue (`gnt-storage backend add|modify|remove|project`) and reading it live.

A change is made under one lock on this node, checked against Ceph (the pool
exists, the cluster answers; a namespace is made), written atomically and
copied to every node with `gnt-cluster copyfile`, like Ganeti's own files.
A backend that still holds volumes is never removed or moved: its volumes'
placement records would point nowhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any

import rbd

from ganeti_ceph import atomic, runner
from ganeti_ceph.errors import Busy, GanetiCephError, UsageError
from ganeti_ceph.ganeti import Ganeti, ssconf
from ganeti_ceph.rbd import backends, catalogue
from ganeti_ceph.rbd.catalogue import DEFAULT, Backend, Catalogue, Project
from ganeti_ceph.rbd.placement import Figures
from ganeti_ceph.rbd.service import VolumeService

LOCK_WAIT_S = 10.0
# What may change on a backend that holds volumes: not where they are.
MOVABLE = frozenset({"pool", "namespace", "conf", "keyring", "client_id", "cluster"})


@dataclass(frozen=True)
class Live:
    backend: Backend
    figures: Figures | str  # or why there are none


def live(svc: VolumeService, names: list[str] | None = None, io: bool = False) -> list[Live]:
    """The backends `names` (all by default) with their figures: one read of the placement
    records, one `df detail` per cluster, and with `io` the mgr's rates of their pools."""
    cat = svc.catalogue
    wanted = names or cat.names()
    for n in wanted:
        cat.get(n)
    recs = records(svc)
    figs = svc.figures(wanted, recs, io)
    return [Live(cat.get(n), figs[n]) for n in wanted]


def records(svc: VolumeService) -> dict[str, backends.Record]:
    isvc, location = svc.index()
    with isvc.session() as s:
        return backends.records(s, location)


# -- changes --------------------------------------------------------------------------------

@contextmanager
def _changing(svc: VolumeService) -> Iterator[Catalogue]:
    """The catalogue as the file has it now, under this node's lock for catalogue changes."""
    def busy(holder: str) -> Exception:
        return Busy(f"another catalogue change runs ({holder or 'unknown'}); wait for it, then rerun")

    with runner.held(os.path.join(svc.cfg.run_dir, "catalogue.lock"), LOCK_WAIT_S, f"pid {os.getpid()}", busy):
        yield catalogue.load(svc.home or svc.cfg)


def save(svc: VolumeService, cat: Catalogue) -> list[str]:
    """Write the catalogue file and copy it to every node; what was done, as lines."""
    path = (svc.home or svc.cfg).catalogue
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic.write(path, "# The ganeti-ceph backend catalogue (doc/backends.md); changed by gnt-storage backend.\n"
                 + catalogue.dump(cat))
    if not ssconf.in_cluster():
        return [f"{path} written (not in a Ganeti cluster: copy it to the other nodes yourself)"]
    Ganeti().copy_file(path)
    return [f"{path} written and copied to every node (gnt-cluster copyfile)"]


def check_reachable(svc: VolumeService, b: Backend) -> None:
    """The backend's cluster answers and its pools exist; a missing namespace is made."""
    with svc.on(b).session() as s:
        for pool in filter(None, (b.pool, b.data_pool)):
            with s.ioctx(pool):
                pass
        if b.namespace:
            with s.ioctx(b.pool) as ioctx, s.errors(f"make namespace {b.location}"):
                if not rbd.RBD().namespace_exists(ioctx, b.namespace):
                    rbd.RBD().namespace_create(ioctx, b.namespace)


def add(svc: VolumeService, values: dict[str, Any]) -> list[str]:
    b = _read(Backend, values)
    with _changing(svc) as cat:
        if b.name in cat.names() and cat.get(b.name) == b:  # a rerun: copied again (a node may have missed it)
            return [f"backend {b.name} is in the catalogue already, as given", *save(svc, cat)]
        if b.name in cat.names() and not (b.name == DEFAULT and catalogue.implicit(cat.default)):
            raise UsageError(f"backend {b.name} exists; change it with gnt-storage backend modify")
        if b.name == cat.index and b.name in cat.names() and _moved(cat.get(b.name), b):
            _refuse_moving_index(svc, b.name)  # a declared default over the implicit one, elsewhere
        check_reachable(svc, b)
        kept = [x for x in cat.backends if x.name != b.name]
        return save(svc, replace(cat, backends=(*kept, b)))


def modify(svc: VolumeService, name: str, changes: dict[str, Any]) -> list[str]:
    with _changing(svc) as cat:
        old = cat.get(name)
        b = _read(Backend, {**_values(old), **changes})
        moved = _moved(old, b)
        if moved and name == cat.index:
            _refuse_moving_index(svc, name)
        if moved:
            held = _holding(svc, name)
            if held:
                raise UsageError(f"backend {name} holds {held} volume(s): its {', '.join(moved)} cannot change "
                                 "(they would be lost to Ganeti); add a new backend instead")
            check_reachable(svc, b)
        return save(svc, replace(cat, backends=tuple(b if x.name == name else x for x in cat.backends)))


def remove(svc: VolumeService, name: str) -> list[str]:
    with _changing(svc) as cat:
        cat.get(name)
        if name == DEFAULT:
            raise UsageError("the default backend is /etc/ganeti/ceph.yaml's cluster and pool; it cannot be removed")
        if name == cat.index:
            raise UsageError(f"backend {name} holds the placement records (the catalogue's index); it cannot be "
                             "removed")
        held = _holding(svc, name)
        if held:
            raise UsageError(f"backend {name} holds {held} volume(s); remove or move them first "
                             f"(gnt-storage volume list --backend {name})")
        return save(svc, replace(cat, backends=tuple(x for x in cat.backends if x.name != name)))


def set_project(svc: VolumeService, values: dict[str, Any]) -> list[str]:
    p = _read(Project, values)
    with _changing(svc) as cat:
        kept = tuple(x for x in cat.projects if x.name != p.name)
        return save(svc, replace(cat, projects=(*kept, p)))


def remove_project(svc: VolumeService, name: str) -> list[str]:
    with _changing(svc) as cat:
        if cat.project(name) is None:
            raise UsageError(f"no project {name} in the catalogue; see gnt-storage backend list-projects")
        return save(svc, replace(cat, projects=tuple(x for x in cat.projects if x.name != name)))


def _moved(old: Backend, new: Backend) -> list[str]:
    """The settings that say where a backend's volumes are, changed from `old` to `new`."""
    return sorted(f for f in MOVABLE if getattr(new, f) != getattr(old, f))


def _refuse_moving_index(svc: VolumeService, name: str) -> None:
    """The index backend's pool holds every placement record: it may move only while there are none."""
    try:
        count = len(records(svc))
    except GanetiCephError as exc:
        raise UsageError(f"cannot tell whether placement records exist ({exc.message}); retry") from None
    if count:
        raise UsageError(f"backend {name} holds the placement records of {count} volume(s) (the catalogue's "
                         "index): where it is cannot change; add a new backend instead")


def _holding(svc: VolumeService, name: str) -> int:
    """How many volumes are recorded on backend `name` (the cluster must answer: unproven is refused)."""
    try:
        return sum(1 for r in records(svc).values() if r.backend == name)
    except GanetiCephError as exc:
        raise UsageError(f"cannot tell whether backend {name} holds volumes ({exc.message}); retry when the "
                         "placement records can be read") from None


def _values(b: Backend) -> dict[str, Any]:
    return {f.metadata.get("key") or f.name: getattr(b, f.name) for f in fields(Backend)}


def _read(cls: type, values: dict[str, Any]) -> Any:
    from ganeti_ceph.config import read_keys

    try:
        return read_keys(cls, {k: v for k, v in values.items() if v is not None}, "gnt-storage backend")
    except GanetiCephError as exc:
        raise UsageError(exc.message.removeprefix("gnt-storage backend: ")) from None
