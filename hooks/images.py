"""Which pool holds a disk's image, and what it says: the core's look
(ganeti_ceph/rbd/disks.py) turned into a hook's veto when no readable pool has it.

A pool this client may not read cannot hold a disk the provider made with
the same key; it is named only if the image is found nowhere else.
"""

from __future__ import annotations

from ganeti_ceph.config import Config
from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd import disks
from ganeti_ceph.rbd.catalogue import DEFAULT
from ganeti_ceph.rbd.service import VolumeRef, VolumeService
from ganeti_ceph.session import Session
from hooks.env import Disk


def unreadable_veto(cfg: Config, disk: Disk, pools: list[str]) -> UsageError:
    names = ", ".join(pools)
    return UsageError(f"disk {disk.index} ({disk.volume}) is in no pool that client.{cfg.client_id} may read, and "
                      f"it may not read pool(s) {names}: if the disk is there, add `profile rbd pool=<that pool>` to "
                      f"the osd (and mgr) caps of client.{cfg.client_id} (ceph auth caps)")


def find(s: Session, cfg: Config, disk: Disk) -> disks.Image:
    """The disk's image and metadata; a UsageError (a veto) if no readable pool has it. A volume
    placed on a backend of the catalogue is read where its record says (one read)."""
    svc = VolumeService(cfg)
    if svc.catalogue.declared:
        bsvc, ref = svc.route(VolumeRef("", disk.volume))
        if ref.backend != DEFAULT:
            with bsvc.session() as bs:
                return disks.read(bs, ref.pool, disk.volume)
    image, unreadable = disks.locate(s, svc.catalogue.pool(""), disk.volume)
    if image is not None:
        return image
    if unreadable:
        raise unreadable_veto(cfg, disk, unreadable)
    raise UsageError(f"disk {disk.index} ({disk.volume}) has no image in any pool of cluster {cfg.cluster}")
