"""rbd-nbd: librbd in a userspace daemon behind /dev/nbdN (needs the nbd module)."""

from __future__ import annotations

import os

from ganeti_ceph import procs, runner
from ganeti_ceph.errors import Busy
from ganeti_ceph.rbd.mappers.base import WRITE_THROUGH, MapError, Mapper, module_available, read
from ganeti_ceph.rbd.mappers.table import Target


class RbdNbd(Mapper):
    """rbd-nbd: librbd in a userspace daemon behind /dev/nbdN."""

    name = "rbd-nbd"
    preference = 20
    tools = (("rbd-nbd", "rbd-nbd is missing; install the rbd-nbd package"),)
    no_kernel = "this kernel has no nbd module; set mapper: krbd or fuse-loop in {source}"
    serving = ("rbd-nbd",)

    @classmethod
    def available(cls) -> bool:
        return module_available("nbd")

    def is_mapping_of(self, dev: str, t: Target) -> bool:
        pid = read(os.path.join(self.sys_block, os.path.basename(dev), "pid"))
        if not pid:
            return False
        argv = procs.cmdline(pid)
        return bool(argv) and os.path.basename(argv[0]) == "rbd-nbd" and t.spec in argv and self.cfg.conf in argv

    def map_device(self, t: Target) -> str:
        if not self.available():
            raise MapError("rbd-nbd needs the nbd kernel module, which this kernel lacks; "
                           f"set mapper: krbd or fuse-loop in {self.cfg.source}")
        return runner.run(["rbd-nbd", "map", *self.client_args(), *WRITE_THROUGH, t.spec], f"map {t.spec} with rbd-nbd",
                          self.cfg.timeouts.osd_op, leaves_daemon=True).strip()

    def unmap_device(self, dev: str, t: Target) -> None:
        """Refused while anyone but its rbd-nbd holds `dev` open: the kernel would disconnect it from under
        them (their I/O fails with EIO), where krbd refuses with EBUSY."""
        from ganeti_ceph.rbd.target_guard import users  # it imports the mappers: not at module level

        if used := users(dev, sys_block=self.sys_block, serving=self.serving):
            raise Busy(f"{dev} ({t.spec}) is in use by {', '.join(used)}; stop that first, then detach again "
                       "(nothing was unmapped)")
        runner.run(["rbd-nbd", "unmap", dev], f"unmap {dev}", self.cfg.timeouts.osd_op)
