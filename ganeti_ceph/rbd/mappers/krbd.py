"""krbd: the kernel RBD client (`rbd device map`), the default on real hosts."""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING

from ganeti_ceph import runner
from ganeti_ceph.errors import ToolFailed
from ganeti_ceph.rbd.mappers.base import SYS_BLOCK, MapError, Mapper, module_available, read
from ganeti_ceph.rbd.mappers.table import Target

if TYPE_CHECKING:
    from ganeti_ceph.config import Config

SYS_RBD = "/sys/bus/rbd/devices"


class Krbd(Mapper):
    """The kernel RBD client; sysfs tells pool, image and cluster of /dev/rbdN."""

    name = "krbd"
    preference = 10
    tools = (("rbd", "the rbd tool is missing; install ceph-common"),)
    no_kernel = "this kernel has no krbd (rbd module); set mapper: rbd-nbd or fuse-loop in {source}"
    unsupported_features = ("journaling",)  # Linux >= 5.3 maps the rest of our defaults

    def __init__(self, cfg: Config, sys_block: str = SYS_BLOCK, sys_rbd: str = SYS_RBD) -> None:
        super().__init__(cfg, sys_block)
        self.sys_rbd = sys_rbd

    @classmethod
    def available(cls) -> bool:
        return os.path.isdir(os.path.dirname(SYS_RBD)) or module_available("rbd")

    def is_mapping_of(self, dev: str, t: Target) -> bool:
        base = os.path.join(self.sys_rbd, os.path.basename(dev).removeprefix("rbd"))
        pool, _, namespace = t.pool.partition("/")  # a namespaced backend's location: pool/namespace
        return (read(f"{base}/pool") == pool and (read(f"{base}/pool_ns") or "") == namespace
                and read(f"{base}/name") == t.image
                and read(f"{base}/current_snap") in ("-", None) and read(f"{base}/cluster_fsid") == t.fsid)

    def map_device(self, t: Target) -> str:
        if not self.available():
            raise MapError("krbd is not available on this kernel (no rbd module); "
                           f"set mapper: rbd-nbd or fuse-loop in {self.cfg.source}")
        try:
            return runner.run(["rbd", "device", "map", *self.client_args(), t.spec], f"map {t.spec} with krbd",
                              self.cfg.timeouts.osd_op).strip()
        except ToolFailed as exc:
            # The kernel says only "No such device or address" (ENXIO) for an image with a feature it
            # lacks: name the feature, as the start hook's veto does. Asked only after a prompt failure:
            # a late map has used its bound already, and a feature refusal is never late.
            if exc.kind == "failed" and (line := self.feature_problem(self.features(t))):
                raise MapError(f"{t.spec}: {line}") from None
            raise

    def features(self, t: Target) -> list[str]:
        """The image's features by `rbd info`; [] when that fails too (the map's own error is reported)."""
        with contextlib.suppress(ToolFailed, ValueError, AttributeError):
            out = runner.run(["rbd", "info", "--format", "json", *self.client_args(), t.spec],
                             f"read the features of {t.spec}", self.cfg.timeouts.osd_op)
            return [str(f) for f in json.loads(out).get("features", [])]
        return []

    def unmap_device(self, dev: str, t: Target) -> None:
        runner.run(["rbd", "device", "unmap", dev], f"unmap {dev}", self.cfg.timeouts.osd_op)
