"""What every mapper shares: the interface, its locking, and the host probes.

A mapper maps an RBD image to a local block device and back; the device
specifics (and what the host needs for them) are a subclass's, one module
each next to this one. The mapping's link is the table's (table.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from ganeti_ceph import runner
from ganeti_ceph.errors import Busy, GanetiCephError
from ganeti_ceph.rbd.mappers import table
from ganeti_ceph.rbd.mappers.table import Target

if TYPE_CHECKING:  # config reads the mapper names: no import of it at run time
    from ganeti_ceph.config import Config

SYS_BLOCK = "/sys/block"
# librbd's write-back cache acknowledges a write before Ceph has it: an
# rbd-fuse or rbd-nbd killed then loses it, although the kernel device (an
# O_DIRECT loop write, no flush) said done. Off, a mapped write completes in
# Ceph before it is acknowledged, as with krbd, which has no such cache.
WRITE_THROUGH = ("--rbd_cache=false",)


class MapError(GanetiCephError):
    """A mapping could not be made or removed."""


def _always() -> bool:
    return True


# Whether the call running here is still wanted: an agent worker sets it to "my agent lives". Its guard
# notices a dead agent within 0.1 s, but a lock let go at the agent's death may be taken sooner.
still_wanted: Callable[[], bool] = _always


def read(path: str) -> str | None:
    """A sysfs or /proc value, stripped; None if it cannot be read."""
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def module_available(name: str) -> bool:
    """Whether kernel module `name` is loaded or could be (`modprobe -n`)."""
    return os.path.isdir(f"/sys/module/{name}") or runner.succeeds(["modprobe", "-n", name], 10)


class Mapper:
    """Map, find and unmap images; subclasses supply the device specifics.

    A subclass in a module of this package is a mapper (the registry finds
    it): it names itself (`name`, the config's `mapper`), ranks itself
    (`preference`, lowest first, for detect) and says whether this host can
    run it (`available`), and what a node needs to serve it: `tools`
    (binary, the line when it is missing), `devices` (node, the line),
    `no_kernel` (the line when `available` is false, {source} the config),
    `unsupported_features` (image features it cannot map) and `serving` (its
    own daemons that hold the device open: not users of it)."""

    name = "base"
    preference = 0
    tools: tuple[tuple[str, str], ...] = ()
    devices: tuple[tuple[str, str], ...] = ()
    no_kernel = ""
    unsupported_features: tuple[str, ...] = ()
    serving: tuple[str, ...] = ()  # programs of the mapper's own that hold its device open (not users)

    def __init__(self, cfg: Config, sys_block: str = SYS_BLOCK) -> None:
        self.cfg = cfg
        self.sys_block = sys_block

    @classmethod
    def available(cls) -> bool:
        """Whether this host has what the mapper needs from the kernel."""
        raise NotImplementedError

    @classmethod
    def problems(cls, source: str, which: Callable[[str], bool], exists: Callable[[str], bool], available: bool,
                 features: tuple[str, ...]) -> list[str]:
        """What keeps this node from serving an image with `features` (the start and migrate hooks veto
        with these); `which` and `exists` are the probes, so a fake tree tests it."""
        found = [line for tool, line in cls.tools if not which(tool)]
        if not available and cls.no_kernel:
            found.append(cls.no_kernel.format(source=source))
        if line := cls.feature_problem(features):
            found.append(line)
        return found + [line for dev, line in cls.devices if not exists(dev)]

    @classmethod
    def feature_problem(cls, features: Sequence[str]) -> str | None:
        """The line for image `features` this mapper cannot map, or None (the hooks' veto, attach's error)."""
        bad = [f for f in features if f in cls.unsupported_features]
        if not bad:
            return None
        return f"{cls.name} cannot map images with {', '.join(bad)}; use access=userspace or another mapper"

    def find(self, t: Target) -> str | None:
        """The block device of a live mapping of `t`, or None."""
        dev = table.device(self.cfg.run_dir, t)
        return dev if dev and self.is_mapping_of(dev, t) else None

    @contextlib.contextmanager
    def locked(self, t: Target) -> Iterator[None]:
        """Serialise map/unmap of one image on this node (Ganeti runs jobs in
        parallel). The wait is bounded by timeouts.osd_op: a holder is a call
        of its own, itself bounded, and a killed one lets go at once."""
        path = table.flat_path(self.cfg.run_dir, "lock", t)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            wait = self.cfg.timeouts.osd_op
            if not runner.flock(fd, wait):
                raise Busy(f"another map or unmap of {t.spec} on this node did not end within {wait:.0f} s "
                           "(timeouts.osd_op); retry")
            if not still_wanted():  # its agent died while this waited: the caller was told it failed
                raise MapError(f"the call that waited to map or unmap {t.spec} was abandoned")
            yield
        finally:
            os.close(fd)

    def map(self, t: Target) -> str:
        with self.locked(t):
            dev = self.find(t)
            if dev:
                return dev
            self.cleanup(t)  # whatever a crashed map left behind
            dev = self.map_device(t)
            table.publish(self.cfg.run_dir, t, dev)
            return dev

    def unmap(self, t: Target) -> bool:
        """Remove the mapping; True if one was removed. Succeeds when none exists."""
        with self.locked(t):
            return self.unmap_locked(t)

    def unmap_locked(self, t: Target) -> bool:
        """`unmap` for a caller that holds t's lock (and checked under it that it may)."""
        dev = self.find(t)
        if dev:
            self.unmap_device(dev, t)
        self.cleanup(t)
        table.unpublish(self.cfg.run_dir, t)
        return dev is not None

    def unmap_all(self, fsid: str) -> list[str]:
        """Unmap every mapping of one cluster on this node (its teardown)."""
        return [m.target.spec for m in table.mapped(self.cfg.run_dir, fsid) if self.unmap(m.target)]

    # -- device specifics ----------------------------------------------------------
    def is_mapping_of(self, dev: str, t: Target) -> bool:
        raise NotImplementedError

    def map_device(self, t: Target) -> str:
        raise NotImplementedError

    def unmap_device(self, dev: str, t: Target) -> None:
        raise NotImplementedError

    def cleanup(self, t: Target) -> None:
        """Remove leftovers of a half-made mapping (nothing for most mappers)."""

    def refresh(self, dev: str, t: Target, nbytes: int | None = None) -> None:
        """Make the device show the image's new size after a grow (krbd and
        rbd-nbd do this by themselves)."""

    def client_args(self) -> list[str]:
        return ["-c", self.cfg.conf, "--id", self.cfg.client_id, "--keyring", self.cfg.keyring]
