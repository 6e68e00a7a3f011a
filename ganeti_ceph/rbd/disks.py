"""Find a volume's image when its pool is not known, and read what it says.

Ganeti gives hooks a disk's volume name but not its `pool` parameter, so
the image is looked for: the configured pool first, then only pools that
can hold RBD images (no application, or `rbd`; a CephFS or RGW pool is
never touched). Each look is one OSD stat through the Session, so every
Ceph error is a GanetiCephError, never a traceback. A pool this client may
not read cannot hold a volume the provider made with the same key: it is
skipped and reported to the caller, which decides what to say.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ganeti_ceph.errors import CephError, NotFound
from ganeti_ceph.rbd.volumes import META_ACCESS
from ganeti_ceph.session import Session


@dataclass(frozen=True)
class Image:
    pool: str
    meta: dict[str, str]
    features: tuple[str, ...]
    size: int

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


def locate(s: Session, first: str, volume: str) -> tuple[Image | None, list[str]]:
    """(the volume's image or None, the pools this client may not read)."""
    unreadable: list[str] = []
    if _holds(s, first, volume, unreadable):  # the usual case: no pool listing, no other pool
        return read(s, first, volume), unreadable
    for pool in candidate_pools(s.mon_command("osd pool ls", detail="detail") or [], first)[1:]:
        if _holds(s, pool, volume, unreadable):
            return read(s, pool, volume), unreadable
    return None, unreadable


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
    """The image's metadata, features and size (opened read-only)."""
    import rbd

    with s.ioctx(pool) as ioctx, s.errors(f"read image {pool}/{volume}"), \
            rbd.Image(ioctx, volume, read_only=True) as img:
        meta = dict(img.metadata_list())
        names = rbd.RBD().features_to_string(img.features()).split(",")
        size = img.size()
    return Image(pool, meta, tuple(n for n in names if n), size)
