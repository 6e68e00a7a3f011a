"""Ganeti's runtime directory on this node, and the paths in it that we read or write.

Ganeti keeps its runtime state under LOCALSTATEDIR/run/ganeti (its pathutils.RUN_DIR),
/var/run/ganeti for a packaged Ganeti: the instance-disks links of kernelspace disks and,
under kvm-hypervisor/, each KVM instance's runtime file, QMP socket and chroot (its hv_kvm
_CONF_DIR, _CTRL_DIR, _CHROOT_DIR). A Ganeti built with another localstatedir keeps them
elsewhere; `run_dir` finds it as ssconf.state_dirs finds the state dir, from that Ganeti's
own constants. The path functions are pure.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ganeti_ceph.ganeti import ssconf

RUN_DIR = "/var/run/ganeti"


def run_dirs(run_dir: str = RUN_DIR, trees: Iterable[str] = ssconf.GANETI_TREES) -> list[str]:
    """`run_dir`, then LOCALSTATEDIR/run/ganeti of every Ganeti installed here, as its own constants name it."""
    dirs = [run_dir]
    for tree in trees:
        try:
            with open(os.path.join(tree, "ganeti", "_constants.py")) as fh:
                var = ssconf.localstatedir(fh.read(1 << 22))
        except (OSError, UnicodeDecodeError):
            continue
        if var and os.path.join(var, "run", "ganeti") not in dirs:
            dirs.append(os.path.join(var, "run", "ganeti"))
    return dirs


def run_dir(default: str = RUN_DIR, trees: Iterable[str] = ssconf.GANETI_TREES) -> str:
    """This node's Ganeti runtime dir: `default` when it is there (a packaged Ganeti: one stat), else the
    first existing one an installed Ganeti names, else `default`."""
    if os.path.isdir(default):
        return default
    return next((d for d in run_dirs(default, trees)[1:] if os.path.isdir(d)), default)


def instance_disks_dir(run_dir: str = RUN_DIR) -> str:
    """Where Ganeti links each kernelspace disk of a running instance (pathutils.DISK_LINKS_DIR)."""
    return os.path.join(run_dir, "instance-disks")


def instance_disk_link(instance: str, index: int, run_dir: str = RUN_DIR) -> str:
    """The link Ganeti gives QEMU for disk `index` of `instance` (kernelspace access)."""
    return os.path.join(instance_disks_dir(run_dir), f"{instance}:{index}")


def kvm_dir(run_dir: str = RUN_DIR) -> str:
    return os.path.join(run_dir, "kvm-hypervisor")


def kvm_conf_dir(run_dir: str = RUN_DIR) -> str:
    """The KVM instances' runtime files, <instance>.runtime (hv_kvm _CONF_DIR)."""
    return os.path.join(kvm_dir(run_dir), "conf")


def kvm_ctrl_dir(run_dir: str = RUN_DIR) -> str:
    """The KVM instances' control sockets (hv_kvm _CTRL_DIR)."""
    return os.path.join(kvm_dir(run_dir), "ctrl")


def kvm_qmp_socket(instance: str, run_dir: str = RUN_DIR) -> str:
    """The QMP socket of a running KVM instance."""
    return os.path.join(kvm_ctrl_dir(run_dir), f"{instance}.qmp")


def kvm_chroot(instance: str, run_dir: str = RUN_DIR) -> str:
    """The chroot a KVM instance runs in when use_chroot is set (hv_kvm _CHROOT_DIR)."""
    return os.path.join(kvm_dir(run_dir), "chroot", instance)
