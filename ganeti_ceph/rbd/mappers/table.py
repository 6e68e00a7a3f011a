"""The mapping table: which image of which cluster is mapped to which device here.

One symlink a mapping, `<run_dir>/dev/<fsid>/<pool>/<image>` -> the block
device (the cluster fsid keeps two clusters or pools with the same image
name apart, as Proxmox's /dev/rbd-pve/<fsid>/... does). The mappers write
it; attach finds a mapping in O(1) by reading it (nothing ever parses
`rbd showmapped`); hooks and the data collector list it. This module is the
only place that knows the layout, and imports nothing heavy (the config
reads the mapper names next to it).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import NamedTuple

from ganeti_ceph import atomic

LINKS = "dev"


@dataclass(frozen=True)
class Target:
    """One image of one cluster, as seen by a node."""

    fsid: str
    pool: str
    image: str

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.image}"


class Mapping(NamedTuple):
    """One row of the table: an image and the device its link names (unchecked)."""

    target: Target
    device: str


# A namespaced pool ("pool/namespace", catalogue.Backend.location) is one path component: '%' is
# in neither a pool's nor a namespace's name (naming.POOL_RE).
NS_SEP = "%"


def _component(pool: str) -> str:
    return pool.replace("/", NS_SEP)


def tree_path(run_dir: str, kind: str, t: Target) -> str:
    """`<run_dir>/<kind>/<fsid>/<pool>/<image>`: t's link (kind "dev") or its rbd-fuse mount ("fuse")."""
    return os.path.join(run_dir, kind, t.fsid, _component(t.pool), t.image)


def flat_path(run_dir: str, kind: str, t: Target) -> str:
    """`<run_dir>/<kind>/<fsid>.<pool>.<image>`: one file an image (its map lock, its guard's marker)."""
    return os.path.join(run_dir, kind, f"{t.fsid}.{_component(t.pool)}.{t.image}")


def link(run_dir: str, t: Target) -> str:
    return tree_path(run_dir, LINKS, t)


def device(run_dir: str, t: Target) -> str | None:
    """The device t's link names, or None; whether it still maps t is the mapper's to say."""
    try:
        return os.readlink(link(run_dir, t))
    except OSError:
        return None


def publish(run_dir: str, t: Target, dev: str) -> None:
    """Point t's link at `dev`. Only t's own lock is held here, so another
    image's unpublish runs meanwhile: that is why no link directory is ever
    removed (an emptied <pool> dir vanishing between this makedirs and the
    symlink left the other image mapped without its link)."""
    path = link(run_dir, t)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    atomic.symlink(dev, path)


def unpublish(run_dir: str, t: Target) -> None:
    """Drop t's link; its directories stay (see publish)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link(run_dir, t))


def mapped(run_dir: str, fsid: str | None) -> list[Mapping]:
    """Every link of one cluster on this node, by pool and image (none without an fsid)."""
    if not fsid:
        return []
    base = os.path.join(run_dir, LINKS, fsid)
    out: list[Mapping] = []
    for pool in _names(base):
        for image in _names(os.path.join(base, pool)):
            t = Target(fsid, pool.replace(NS_SEP, "/"), image)
            dev = device(run_dir, t)
            if dev is not None and not image.endswith(atomic.SUFFIX):
                out.append(Mapping(t, dev))
    return out


def _names(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
