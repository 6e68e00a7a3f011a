"""`gnt-storage rbd-convert INSTANCE`: take over, without copying, the disks GRNET's ExtStorage provider `rbd` made.

GRNET's provider (github.com/grnet/gnt-extstorage-rbd, ext_scripts/ext_rbd.py, read at commit 0a7f4d43) is also
named `rbd`, so its disks are already `ext` disks of provider rbd; once ours replaces it on the nodes they do not
attach: it names the image after the disk's name (VOL_CNAME, `rbd create [RBD_POOL/]NAME`), ours after
VOL_NAME, and its parameters (EXTP_RBD_POOL, USERSPACE_ONLY, CEPHX_*, IMAGE_FORMAT...) are unknown to ours.
Each such disk is moved as `gnt-storage rbd-access` moves one (ganeti_ceph.rbd.access_switch.move_disk): a
disk added at its index adopts (renames) its image, `rbd_pool` translated to `pool`, `userspace_only` to
`access=userspace`; the old entry is removed (its attach fails: our provider refuses its parameters, so
Ganeti drops only the entry). Parameters that only mattered when the image was made (origin, reuse_data,
image_format, image_features, stripe_*) or name a Ceph identity (cephx_*: ours uses /etc/ganeti/ceph.yaml's)
are dropped; any other parameter is refused.

An instance of Ganeti's own `-t rbd` template (or one whose conversion stopped halfway) goes through a carrier
instance instead: ganeti_ceph.rbd.convert_template (doc/convert.md).

A rerun resumes: an adopt stopped after its rename is completed by its add (the pool's adoption index), and an
old entry left by a run killed after its add is removed once the disk before it proves (its completed
adoption record) that it holds that image.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from ganeti_ceph.errors import UsageError
from ganeti_ceph.ganeti.config_data import Disk
from ganeti_ceph.log import progress
from ganeti_ceph.naming import check_image_name, check_pool_name
from ganeti_ceph.rbd import convert_template
from ganeti_ceph.rbd.access_switch import (
    PROVIDER,
    CephImages,
    Ganeti,
    Instance,
    Move,
    Refused,
    check_stopped,
    check_wipe,
    esc,
    execute,
    locked,
    modify,
)

COMMAND = "rbd-convert"
GRNET_POOL = "rbd"  # its create passes no pool without rbd_pool: the rbd CLI's default pool
TRUE = re.compile(r"(yes|true|on|1|set)", re.IGNORECASE)  # its TRUE_PATTERN
# Its parameters that describe how the image was made, or which Ceph identity it used: nothing to carry.
DROPPED = frozenset({"origin", "reuse_data", "image_format", "image_features", "stripe_unit", "stripe_count",
                     "cephx_id", "cephx_keyring", "cephx_keyfile"})
TRANSLATED = frozenset({"rbd_pool", "userspace_only"})
GRNET_ONLY = (DROPPED | TRANSLATED) - {"origin"}  # ours takes origin too
GANETI_OWN = frozenset({"provider", "access"})


@dataclass(frozen=True)
class Source:
    """Where a GRNET disk's data is, and what the disk that adopts it gets."""

    pool: str
    image: str
    access: str


def grnet_source(disk: Disk) -> Source:
    """Translate a GRNET disk's parameters (pure); Refused when one is unknown or its image name is not ours to take."""
    params = disk.params
    unknown = sorted(set(params) - DROPPED - TRANSLATED - GANETI_OWN)
    if unknown:
        raise Refused(f"disk/{disk.index}: parameter(s) {', '.join(unknown)} are neither GRNET's rbd provider's nor "
                      "ours; remove them (gnt-instance modify --disk N:modify,KEY=default) if they mean nothing")
    if params.get("image_format", "").strip() == "1":
        raise Refused(f"disk/{disk.index}: image_format=1: a format 1 image holds no metadata, which the rbd provider "
                      "keeps on its images; make it format 2 first (rbd migration prepare --image-format 2)")
    if not disk.name:
        raise Refused(f"disk/{disk.index} has no name, and GRNET's provider names its image after the disk's name: "
                      "find its image (rbd ls) and name the disk after it (gnt-instance modify --disk N:modify,name=)")
    try:
        pool = check_pool_name(params.get("rbd_pool") or GRNET_POOL)
        image = check_image_name(disk.name)
    except UsageError as exc:
        raise Refused(f"disk/{disk.index}: {exc.message}; the rbd provider cannot adopt it (rbd rename the image, "
                      "and give the disk that name or rbd_pool, first)") from None
    userspace = TRUE.fullmatch(params.get("userspace_only", "").strip()) is not None
    return Source(pool, image, "userspace" if userspace else disk.access)


def is_grnet(disk: Disk) -> bool:
    """By its parameters alone; one without any is told apart in Ceph (see `classify`)."""
    return disk.is_rbd and bool(GRNET_ONLY & set(disk.params))


def classify(images: CephImages, disk: Disk) -> Source | None:
    """The GRNET source of disk, or None when it is ours (its volume exists where our provider looks)."""
    if is_grnet(disk):
        return grnet_source(disk)
    pool = images.pool_of(disk)
    if images.exists(pool, disk.volume):
        return None
    if disk.name and not set(disk.params) - GANETI_OWN:
        source = grnet_source(disk)
        if images.exists(source.pool, source.image) or images.interrupted(source.pool, source.image):
            return source
    raise Refused(f"disk/{disk.index}: image {pool}/{disk.volume} does not exist, and the disk is not one of "
                  "GRNET's whose image is found; find its data first (rbd ls, rbd trash ls), change nothing until then")


def check_kinds(inst: Instance) -> None:
    for d in inst.disks:
        if not d.is_rbd:
            raise Refused(f"disk/{d.index} of {inst.name} is {'an' if d.dev_type[0] in 'aeiou' else 'a'} "
                          f"{d.dev_type} disk"
                          + (f" of provider {d.params.get('provider')}" if d.dev_type == "ext" else "")
                          + "; rbd-convert takes only GRNET's rbd provider's disks")


def stale_entry(images: CephImages, inst: Instance) -> int | None:
    """The index of an old GRNET entry a killed run left after its adopting disk (None: none): its image is gone and
    the disk before it, ours, records the completed adoption of exactly that image."""
    for before, d in zip(inst.disks, inst.disks[1:], strict=False):
        if is_grnet(before) or not (is_grnet(d) or (d.name and not set(d.params) - GANETI_OWN)):
            continue
        try:
            src = grnet_source(d)
        except Refused:
            continue
        pool = images.pool_of(before)
        if (pool == src.pool and images.adopted_from(pool, before.volume) == src.image
                and not images.exists(src.pool, src.image)
                and not images.exists(images.pool_of(d), d.volume)):
            return d.index
    return None


def finish_stale(ganeti: Ganeti, images: CephImages, inst: Instance, dry_run: bool) -> Instance:
    """Remove the entries a killed run left (each proven by `stale_entry`), giving the adopting disk their name."""
    while (index := stale_entry(images, inst)) is not None:
        old, adopter = inst.disks[index], inst.disks[index - 1]
        cmds = [modify(inst.name, f"{old.uuid}:remove")]  # by UUID: an index may name another disk by then
        if old.name:
            cmds.append(modify(inst.name, f"{adopter.uuid}:modify,name={esc(old.name)}"))
        if dry_run:
            raise Refused(f"disk/{index} is the old entry of disk/{index - 1}, which adopted its image in an "
                          f"interrupted run; a run without --dry-run removes it first")
        progress(f"disk/{index}: its image is disk/{index - 1}'s (adopted by an interrupted run); removing the entry")
        for argv in cmds:
            ganeti.run(argv)
        inst = ganeti.instance(inst.name)
    return inst


def convert(name: str, dry_run: bool = False, ganeti: Ganeti | None = None, images: CephImages | None = None) -> int:
    """Move every GRNET disk of `name` to our provider; see the module docstring."""
    ganeti = ganeti or Ganeti()
    ganeti.check_master()
    with locked(ganeti, name) as inst:  # shared with rbd-access and both paths here (doc/convert.md)
        check_stopped(inst)
        journal = convert_template.Journal(ganeti.state_dir)
        if convert_template.wants(inst, journal):
            with contextlib.closing(images or CephImages()) as ceph:
                return convert_template.convert(inst, ganeti, ceph, dry_run, journal)
        return convert_grnet(ganeti, inst, dry_run, images)


def convert_grnet(ganeti: Ganeti, inst: Instance, dry_run: bool, images: CephImages | None) -> int:
    """Move every GRNET disk of `inst` (locked, stopped) to our provider."""
    name = inst.name
    check_kinds(inst)
    if not inst.disks:
        raise Refused(f"instance {inst.name} has no disks")
    check_wipe(ganeti)
    images = images or CephImages()
    try:
        inst = finish_stale(ganeti, images, inst, dry_run)
        moves = []
        for d in inst.disks:
            src = classify(images, d)
            if src is None:
                continue
            if images.exists(src.pool, src.image):
                if watched := images.watchers(src.pool, src.image):
                    raise Refused(f"disk/{d.index}: image {src.pool}/{src.image} is in use (watched by "
                                  f"{', '.join(watched)}): GRNET's provider may still map it (rbd showmapped, then "
                                  "rbd unmap on that node), or something else opened it; nothing changed")
            elif not images.interrupted(src.pool, src.image):
                raise Refused(f"disk/{d.index}: image {src.pool}/{src.image} does not exist and no adoption of it "
                              "was found; find its data first (rbd ls, rbd trash ls), change nothing until then")
            else:
                progress(f"disk/{d.index}: image {src.pool}/{src.image} was left halfway by an interrupted "
                         "adoption; its add resumes it")
            moves.append(Move(d, src.pool, src.image, src.access, {"pool": src.pool}, f"gnt-storage {COMMAND} {name}"))
        if not moves:
            print(f"{inst.name}: all {len(inst.disks)} disk(s) are the {PROVIDER} provider's own; nothing to do")
            return 0
        done = execute(ganeti, images, inst.name, moves, "converted", dry_run)
    finally:
        images.close()
    if done is not None:
        print(f"{inst.name}: {', '.join(f'disk/{d.index}' for d in done)} converted to the {PROVIDER} provider")
    return 0
