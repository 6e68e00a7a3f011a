"""The backends live: their figures from Ceph, and the placement records.

Where a volume was placed is recorded in one omap object, `ganeti_ceph_placement`, in the pool
of the catalogue's index backend: key the volume's name, value its backend and provisioned size.
Every later call finds the volume's backend with one read of one key, however many volumes and
backends there are. The same records give each backend's provisioned bytes and volume count in
one listing, and a create or grow checks quotas and reserves its bytes under the object's RADOS
lock, so two creates cannot both take the last room.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ganeti_ceph.errors import Busy, GanetiCephError
from ganeti_ceph.rbd import iostats, omap_index
from ganeti_ceph.rbd.catalogue import Backend, Catalogue
from ganeti_ceph.rbd.placement import Figures
from ganeti_ceph.session import Session

INDEX = "ganeti_ceph_placement"
LOCK = "ganeti-ceph-placement"
LOCK_S = 30  # a holder that died lets go after this (RADOS lock duration)
LOCK_WAIT_S = 45.0  # how long a create waits for another's placement (held for a listing and a write)
PAGE = 1000
VOLUME, SNAPSHOT = "volume", "snapshot"


@dataclass(frozen=True)
class Record:
    backend: str
    size: int  # provisioned bytes
    kind: str = VOLUME  # or SNAPSHOT: a snapshot volume of Ganeti's export, routed but not counted

    def dump(self) -> str:
        data: dict[str, Any] = {"backend": self.backend, "size": self.size}
        if self.kind != VOLUME:
            data["kind"] = self.kind
        return json.dumps(data, sort_keys=True)


def parse_record(text: str | None) -> Record | None:
    """A record as written by `Record.dump`; anything else is None (never trusted)."""
    try:
        data = json.loads(text or "")
        kind = str(data.get("kind", VOLUME))
        return Record(str(data["backend"]), int(data["size"]), kind) if kind in (VOLUME, SNAPSHOT) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def lookup(s: Session, location: str, name: str) -> Record | None:
    """The record of volume `name`: one omap read."""
    with s.ioctx(location) as ioctx:
        return parse_record(omap_index.get(s, ioctx, INDEX, name, "read the placement records"))


def put(s: Session, location: str, name: str, rec: Record | None) -> None:
    """Write (or, None, drop) the record of volume `name`."""
    with s.ioctx(location) as ioctx:
        omap_index.put(s, ioctx, INDEX, name, rec.dump() if rec else None, "write the placement records")


def records(s: Session, location: str) -> dict[str, Record]:
    """Every record: one listing of the index object's omap, in pages."""
    out: dict[str, Record] = {}
    with s.ioctx(location) as ioctx:
        for key, value in omap_index.items(s, ioctx, INDEX, "list the placement records", PAGE):
            rec = parse_record(value.decode(errors="replace"))
            if rec:
                out[key] = rec
    return out


@contextmanager
def locked(s: Session, location: str, wait: float = LOCK_WAIT_S) -> Iterator[None]:
    """The placement records' lock, held by this call (waits at most `wait` s for another's)."""
    import uuid  # here only: its import (platform) is not paid by every provider call

    cookie = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    with s.ioctx(location) as ioctx:
        while True:
            try:
                with s.errors("lock the placement records"):
                    ioctx.lock_exclusive(INDEX, LOCK, cookie, "ganeti-ceph placement", LOCK_S, 0)
                break
            except Busy:
                if time.monotonic() >= deadline:
                    raise Busy(f"the placement records are locked by another create or grow for over {wait:.0f} s;"
                               " retry (a dead holder lets go within 30 s)") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            try:
                with s.errors("unlock the placement records"):
                    ioctx.unlock(INDEX, LOCK, cookie)
            except GanetiCephError:
                pass  # it expires by itself after LOCK_S


# -- figures --------------------------------------------------------------------------------

def pool_stats(df: dict[str, Any]) -> dict[str, dict[str, int]]:
    """pool -> its `ceph df detail` stats (stored, max_avail, ...), pure."""
    return {p["name"]: p.get("stats") or {} for p in (df or {}).get("pools") or []}


def figures_of(b: Backend, stats: dict[str, dict[str, int]], recs: Iterable[Record]) -> Figures | str:
    """One backend's figures, or why there are none (pure)."""
    st = stats.get(b.pool)
    if st is None:
        return f"pool {b.pool} is not in ceph df (missing, or made moments ago)"
    mine = [r.size for r in recs if r.backend == b.name and r.kind == VOLUME]
    stored, free = int(st.get("stored", 0)), int(st.get("max_avail", 0))
    return Figures(capacity=stored + free, free=free, used=stored, provisioned=sum(mine), volumes=len(mine))


def cluster_key(b: Backend) -> tuple[str, str, str]:
    return (b.conf, b.keyring, b.client_id)


# What a cluster said of its pools: (`df detail`'s pool stats, the mgr's per-image rates), or why nothing.
Said = tuple[dict[str, dict[str, int]], dict[str, dict[str, dict[str, float]]]] | str


def ask(cat: Catalogue, names: Iterable[str], session_for: Callable[[Backend], Any],
        io: bool = False) -> dict[str, Said]:
    """What the clusters of the backends `names` say: one `df detail` per cluster, in a session of its
    own (`session_for(backend)` is a context manager), with `io` the mgr's rates of their pools. Asked
    outside the records' lock: connecting to a slow cluster must not hold everyone's creates."""
    out: dict[str, Said] = {}
    clusters: dict[tuple, list[Backend]] = {}
    for b in (cat.get(n) for n in names):
        clusters.setdefault(cluster_key(b), []).append(b)
    for group in clusters.values():
        try:
            with session_for(group[0]) as s:
                stats = pool_stats(s.mon_command("df", detail="detail"))
                rates = pool_io(s, {b.pool for b in group if b.pool in stats}) if io else {}
        except GanetiCephError as exc:
            out.update((b.name, exc.message) for b in group)
            continue
        out.update((b.name, (stats, rates)) for b in group)
    return out


def figures(cat: Catalogue, said: dict[str, Said], recs: dict[str, Record]) -> dict[str, Figures | str]:
    """Each asked backend's figures from what its cluster said and the records (pure)."""
    out: dict[str, Figures | str] = {}
    for name, answer in said.items():
        if isinstance(answer, str):
            out[name] = answer
            continue
        stats, rates = answer
        b = cat.get(name)
        f = figures_of(b, stats, recs.values())
        if isinstance(f, Figures) and rates:
            f.io.update(iostats.location_io(rates, b.location))
        out[name] = f
    return out


def pool_io(s: Session, pools: Iterable[str]) -> dict[str, dict[str, dict[str, float]]]:
    """pool -> image -> rates from the mgr (iostats.py); a pool it cannot answer for is left out."""
    answers = {}
    for pool in sorted(pools):
        try:
            answers[pool] = s.mgr_command(iostats.IMAGE_STATS, pool_spec=pool)
        except GanetiCephError:
            continue
    return iostats.image_io(answers)
