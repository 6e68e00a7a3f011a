"""Which pool holds a disk's image, and what the image says (its metadata).

Ganeti gives hooks a disk's volume name but not its `pool` parameter, so
the hook looks for the image: the configured pool first, then only pools
that can hold RBD images (no application, or `rbd`; a CephFS or RGW pool
is never touched). Each look is one OSD stat through the Session, so every
Ceph error is a GanetiCephError, never a traceback. A pool this client may
not read cannot hold a disk the provider made with the same key; it is
skipped, and named only if the image is found nowhere else.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ganeti_ceph.config import Config
from ganeti_ceph.errors import CephError, NotFound, UsageError
from ganeti_ceph.rbd.volumes import META_ACCESS
from ganeti_ceph.session import Session
from hooks.env import Disk


@dataclass(frozen=True)
class Image:
    pool: str
    meta: dict[str, str]
    features: tuple[str, ...]

    @property
    def access(self) -> str:
        """As Ganeti's default when the image has no `ganeti.access` (made by something else)."""
        return self.meta.get(META_ACCESS, "kernelspace")


def candidate_pools(listing: list[dict], first: str) -> list[str]:
    """`first`, then every pool of `osd pool ls detail` that may hold RBD images (pure)."""
    others = [p["pool_name"] for p in listing
              if p.get("pool_name") != first and (not p.get("application_metadata")
                                                  or "rbd" in p["application_metadata"])]
    return [first, *others]


def unreadable_veto(cfg: Config, disk: Disk, pools: list[str]) -> UsageError:
    names = ", ".join(pools)
    return UsageError(f"disk {disk.index} ({disk.volume}) is in no pool that client.{cfg.client_id} may read, and "
                      f"it may not read pool(s) {names}: if the disk is there, add `profile rbd pool=<that pool>` to "
                      f"the osd (and mgr) caps of client.{cfg.client_id} (ceph auth caps)")


def find(s: Session, cfg: Config, disk: Disk) -> Image:
    """The disk's image and metadata; a UsageError (a veto) if no readable pool has it."""
    unreadable: list[str] = []
    if _holds(s, cfg.pool, disk.volume, unreadable):  # the usual case: no pool listing, no other pool
        return read(s, cfg.pool, disk.volume)
    for pool in candidate_pools(s.mon_command("osd pool ls", detail="detail") or [], cfg.pool)[1:]:
        if _holds(s, pool, disk.volume, unreadable):
            return read(s, pool, disk.volume)
    if unreadable:
        raise unreadable_veto(cfg, disk, unreadable)
    raise UsageError(f"disk {disk.index} ({disk.volume}) has no image in any pool of cluster {cfg.cluster}")


def _holds(s: Session, pool: str, volume: str, unreadable: list[str]) -> bool:
    """Does `pool` have the image? A pool this client may not read is noted, not fatal."""
    try:
        s.require_image(pool, volume)
    except NotFound:
        return False
    except CephError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES):
            raise
        unreadable.append(pool)
        return False
    return True


def read(s: Session, pool: str, volume: str) -> Image:
    import rbd

    with s.ioctx(pool) as ioctx, s.errors(f"read image {pool}/{volume}"), \
            rbd.Image(ioctx, volume, read_only=True) as img:
        meta = dict(img.metadata_list())
        names = rbd.RBD().features_to_string(img.features()).split(",")
    return Image(pool, meta, tuple(n for n in names if n))
