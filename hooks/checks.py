"""Can this node serve an `rbd` disk in its access mode? One problem per line.

Each check returns problems as text naming what is missing and the fix;
the hook vetoes with the first. The probes (files, modules) are
parameters, so the logic is unit-tested on a fake filesystem.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from ganeti_ceph import runner
from ganeti_ceph.config import Config
from ganeti_ceph.rbd import access, mappers

QEMU_MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/qemu", "/usr/lib/qemu", "/usr/lib64/qemu")
PATH = runner.PATH  # where the tools a child of ours runs with are looked for


@dataclass(frozen=True)
class Probe:
    """Where to look; tests point these at a fake tree."""

    root: str = "/"
    qemu_module_dirs: tuple[str, ...] = QEMU_MODULE_DIRS

    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/"))

    def readable(self, p: str) -> bool:
        return os.access(self.path(p), os.R_OK) and os.path.isfile(self.path(p))

    def exists(self, p: str) -> bool:
        return os.path.exists(self.path(p))

    def which(self, binary: str) -> bool:
        return shutil.which(binary, path=":".join(self.path(d) for d in PATH.split(":"))) is not None


def qemu_rbd(probe: Probe) -> bool:
    return any(probe.exists(os.path.join(d, "block-rbd.so")) for d in probe.qemu_module_dirs)


def userspace(cfg: Config, probe: Probe, chroot: str | None = None) -> list[str]:
    """QEMU opens `rbd:pool/image:id=client`: it needs its rbd driver and
    /etc/ceph/ceph.conf plus the client's keyring (the URI carries neither)."""
    problems = []
    if not qemu_rbd(probe):
        problems.append("QEMU has no rbd block driver (block-rbd.so); install qemu-block-extra")
    conf, keyring = access.QEMU_CONF, access.qemu_keyring(cfg.client_id)
    for need in (conf, keyring):
        if not probe.readable(need):
            problems.append(f"{need} is missing or unreadable; QEMU needs it for userspace access "
                            "(copy it from the cluster, mode 0600 for the keyring)")
    if chroot is not None:
        for need in (conf, keyring):
            if not probe.readable(os.path.join(chroot, need.lstrip("/"))):
                problems.append(f"{need} is missing inside the KVM chroot {chroot}; QEMU cannot hot-plug "
                                "userspace disks there")
    return problems


def kernelspace(cfg: Config, probe: Probe, available: bool, features: tuple[str, ...]) -> list[str]:
    """The configured mapper can run here and the image's features suit it (the mapper says what it needs)."""
    return mappers.get(cfg.mapper).problems(cfg.source, probe.which, probe.exists, available, features)


OSD_DIR = "/var/lib/ceph/osd"


def krbd_beside_osds(cfg: Config, probe: Probe) -> list[str]:
    """A warning, not a veto: krbd on a node that runs Ceph OSDs can deadlock under memory pressure (the
    kernel client's writeback waits on an OSD that waits for memory; Ceph's own warning)."""
    if cfg.mapper != "krbd":
        return []
    try:
        osds = sorted(e for e in os.listdir(probe.path(OSD_DIR)) if e.startswith("ceph-"))
    except OSError:
        return []
    if not osds:
        return []
    return [f"warning: krbd on a node that runs Ceph OSDs ({', '.join(osds)}) can deadlock under memory "
            "pressure; set mapper: rbd-nbd in /etc/ganeti/ceph.yaml, or use userspace access "
            "(gnt-storage rbd-access INSTANCE userspace)"]
