"""Placement and quotas: pure decisions over the catalogue and each backend's live figures.

A disk with `backend=NAME` goes there; one with `tags=a+b`, or no choice at
all, goes to the backend that has every tag, room under its overcommit and
quota, and the lowest cost, ties broken by the most free space. A refusal
names every backend and why it was passed over, so the admin sees at once
whether to add capacity, raise a quota or fix a tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd.catalogue import Backend, Catalogue, Project

GIB = 1 << 30


@dataclass(frozen=True)
class Figures:
    """One backend, live: bytes of its pool (shared by its namespaces) and of our recorded volumes."""

    capacity: int  # the pool's stored + max_avail: what it could hold with its replication
    free: int  # the pool's max_avail
    used: int  # the pool's stored bytes
    provisioned: int  # sum of the sizes of the volumes recorded on this backend
    volumes: int  # how many are recorded on it
    io: dict[str, float] = field(default_factory=dict, compare=False)  # summed rates (iostats.RATE_KEYS), if asked


def gib(n: float) -> str:
    return f"{n / GIB:.1f}".rstrip("0").rstrip(".") + " GiB"


def why_not(b: Backend, f: Figures | str, size: int, tags: tuple[str, ...] = ()) -> str | None:
    """Why `b` cannot take a new volume of `size` bytes (None: it can); `f` is its figures or why
    they could not be had."""
    missing = [t for t in tags if t not in b.tags]
    if missing:
        return f"lacks tag {'+'.join(missing)}"
    if isinstance(f, str):
        return f"unreachable ({f})"
    return over_limits(b, f, size, 1)


def over_limits(b: Backend, f: Figures, add_bytes: int, add_volumes: int) -> str | None:
    """Why `b` cannot take `add_bytes` more provisioned bytes and `add_volumes` more volumes."""
    want = f.provisioned + add_bytes
    if b.quota_gib and want > b.quota_gib * GIB:
        return f"quota {gib(b.quota_gib * GIB)} would be exceeded ({gib(f.provisioned)} provisioned, " \
               f"+{gib(add_bytes)})"
    if b.quota_volumes and f.volumes + add_volumes > b.quota_volumes:
        return f"volume quota {b.quota_volumes} reached ({f.volumes} volumes)"
    if b.overcommit and want > f.capacity * b.overcommit:
        return f"no room: {gib(want)} provisioned would pass {b.overcommit:g} x capacity {gib(f.capacity)}"
    return None


def choose(cat: Catalogue, figures: Mapping[str, Figures | str], size: int, tags: tuple[str, ...] = ()) -> Backend:
    """The backend a new volume of `size` bytes with `tags` goes to, or one UsageError naming every
    backend and why it was passed over."""
    fit: list[tuple[float, int, int, Backend]] = []
    reasons = []
    for i, b in enumerate(cat.backends):
        f = figures.get(b.name, "not asked")
        reason = why_not(b, f, size, tags)
        if reason is None and isinstance(f, Figures):
            fit.append((b.cost, -f.free, i, b))
        else:
            reasons.append(f"{b.name}: {reason}")
    if not fit:
        wanted = f" with tags {'+'.join(tags)}" if tags else ""
        raise UsageError(f"no backend can take a {gib(size)} volume{wanted}: {'; '.join(reasons)}; "
                         "see gnt-storage backend list")
    return min(fit)[3]


def refuse_over(b: Backend, f: Figures, add_bytes: int, add_volumes: int, doing: str) -> None:
    """One line when `b` cannot take the change (a named backend, a grow)."""
    reason = over_limits(b, f, add_bytes, add_volumes)
    if reason:
        raise UsageError(f"{doing} refused: backend {b.name}: {reason}; raise it (gnt-storage backend modify) "
                         "or free space")


@dataclass(frozen=True)
class Usage:
    """A project's disks now: bytes and count."""

    size: int
    volumes: int


def project_of(tags: list[str] | tuple[str, ...], prefix: str) -> str | None:
    """The project an instance's tags name (`<prefix>NAME`); two different ones are refused."""
    names = sorted({t[len(prefix):] for t in tags if t.startswith(prefix) and len(t) > len(prefix)})
    if len(names) > 1:
        raise UsageError(f"the instance is tagged with projects {', '.join(names)}; keep one {prefix}NAME tag")
    return names[0] if names else None


def refuse_project(p: Project, now: Usage, add_bytes: int, add_volumes: int) -> None:
    """One line when project `p` with usage `now` cannot take the change."""
    want = now.size + add_bytes
    if p.quota_gib and want > p.quota_gib * GIB:
        raise UsageError(f"project {p.name}: quota {gib(p.quota_gib * GIB)} would be exceeded ({gib(now.size)} "
                         f"in use, +{gib(add_bytes)}); remove disks or raise the quota (gnt-storage backend "
                         "project)")
    if p.quota_volumes and now.volumes + add_volumes > p.quota_volumes:
        raise UsageError(f"project {p.name}: disk quota {p.quota_volumes} reached ({now.volumes} disks); remove "
                         "disks or raise the quota")
