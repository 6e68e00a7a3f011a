"""Ganeti's config.data: the private file read only where no query interface carries what we need.

No gnt-* command shows a disk's parameters (access, pool...), so the access
switch reads them here. The file's layout is Ganeti's own and changes between
versions: the parts that depend on it are read only for a layout this module
knows, and any other version fails in one line. The cluster's
prealloc_wipe_disks sits in `cluster` in every version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ganeti_ceph.errors import GanetiFailed

FILE = "config.data"
RBD_PROVIDER = "rbd"
# (major, minor) of the config layouts read here; Ganeti writes version = major*1000000 + minor*10000 + rev.
KNOWN_LAYOUTS = {(3, 0)}


def load(lib_dir: str) -> dict | None:
    """The parsed config.data in `lib_dir`; None when there is none (the node is no master candidate)."""
    try:
        with open(os.path.join(lib_dir, FILE)) as fh:
            cfg = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GanetiFailed(f"cannot read Ganeti's {FILE}: {exc}") from None
    if not isinstance(cfg, dict):
        raise GanetiFailed(f"cannot read Ganeti's {FILE}: not a JSON object")
    return cfg


def layout(cfg: dict) -> tuple[int, int] | None:
    """(major, minor) of the Ganeti that wrote `cfg` (pure); None without a version."""
    version = cfg.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    return version // 1000000, version % 1000000 // 10000


def check_layout(cfg: dict) -> None:
    """Refuse, in one line, a config.data of a layout this module does not know."""
    got = layout(cfg)
    if got not in KNOWN_LAYOUTS:
        known = ", ".join(f"{a}.{b}" for a, b in sorted(KNOWN_LAYOUTS))
        seen = "has no version" if got is None else f"is of Ganeti {got[0]}.{got[1]}"
        raise GanetiFailed(f"Ganeti's {FILE} {seen}; ganeti-ceph reads disk parameters only from the layout of "
                           f"Ganeti {known} (ganeti_ceph/ganeti/config_data.py)")


def wipes_new_disks(cfg: dict) -> bool:
    """The cluster's prealloc_wipe_disks (pure; GanetiFailed when `cluster` is not an object)."""
    cluster = cfg.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise GanetiFailed(f"unexpected cluster entry in Ganeti's {FILE}")
    return bool(cluster.get("prealloc_wipe_disks"))


@dataclass(frozen=True)
class Disk:
    index: int
    uuid: str
    dev_type: str
    size_mib: int
    mode: str
    name: str | None
    volume: str
    params: dict[str, str]
    access: str  # effective: disk, else group, else cluster default

    @property
    def is_rbd(self) -> bool:
        return self.dev_type == "ext" and self.params.get("provider") == RBD_PROVIDER


def instance_disks(cfg: dict, instance_uuid: str, disk_uuids: list[str]) -> tuple[Disk, ...]:
    """The instance's disks in Ganeti's order (`disk_uuids`, as gnt-instance list gives them), with
    parameters as Ganeti fills them in: disk, else node group, else cluster default (pure)."""
    check_layout(cfg)
    inst = cfg.get("instances", {}).get(instance_uuid)
    if inst is None or list(inst.get("disks", [])) != list(disk_uuids):
        raise GanetiFailed(f"the master's {FILE} does not match gnt-instance list (changed meanwhile?); "
                           "run again")
    node = cfg.get("nodes", {}).get(inst.get("primary_node"), {})
    group = cfg.get("nodegroups", {}).get(node.get("group"), {})
    disks = []
    for index, uuid in enumerate(disk_uuids):
        d = cfg["disks"][uuid]
        defaults = {**cfg["cluster"].get("diskparams", {}).get(d["dev_type"], {}),
                    **(group.get("diskparams") or {}).get(d["dev_type"], {})}
        params = {k: str(v) for k, v in (d.get("params") or {}).items()}
        logical = d.get("logical_id") or ["", ""]
        disks.append(Disk(index=index, uuid=uuid, dev_type=d["dev_type"], size_mib=int(d["size"]),
                          mode=d.get("mode", "rw"), name=d.get("name"), volume=str(logical[-1]), params=params,
                          access=params.get("access") or defaults.get("access") or "kernelspace"))
    return tuple(disks)
