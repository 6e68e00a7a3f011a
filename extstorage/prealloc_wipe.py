"""Ganeti's `prealloc_wipe_disks`: the cluster setting that zeroes every disk Ganeti adds.

With it on, Ganeti follows the provider's create with WipeDisks: attach, then
`dd if=/dev/zero oflag=direct of=<device>` over the whole disk, and if that
fails it calls the provider's remove to undo the create. Right for a new,
empty image; it destroys the data of an adopted image (`adopt_image=`, the
access switch) or of a clone (`origin=`). In userspace mode attach gives no
device and Ganeti 3.0 runs dd with `of=None`: the zeros go to a file `None`
in ganeti-noded's working directory, `/` (seen on the test bed), so the
image survives by accident. Ganeti tells the provider nothing of the setting;
it is in config.data, which only the master and the master candidates hold.
See doc/extstorage.md and doc/access-switch.md.
"""

from __future__ import annotations

import json
import os

from ganeti_ceph.errors import UsageError

GANETI_LIB = "/var/lib/ganeti"
OFF = "gnt-cluster modify --prealloc-wipe-disks no"


def from_config(cfg: dict) -> bool:
    """The setting in a parsed config.data."""
    return bool((cfg.get("cluster") or {}).get("prealloc_wipe_disks"))


def wipes_new_disks(lib_dir: str = GANETI_LIB) -> bool | None:
    """True or False as this node's config.data says; False on a host in no Ganeti cluster (no ssconf);
    None when this node is in a cluster but cannot read config.data (not a master candidate)."""
    try:
        with open(os.path.join(lib_dir, "config.data")) as fh:
            return from_config(json.load(fh))
    except FileNotFoundError:
        return None if os.path.exists(os.path.join(lib_dir, "ssconf_cluster_name")) else False
    except (OSError, ValueError, AttributeError):
        return None


def refuse_if_wiped(what: str, lib_dir: str = GANETI_LIB) -> None:
    """Refuse, before any change, a create whose data Ganeti's wipe would zero (or may, unknown here)."""
    state = wipes_new_disks(lib_dir)
    if state:
        raise UsageError(f"Ganeti's prealloc_wipe_disks is on and would zero {what} right after this create; "
                         f"turn it off for this ({OFF}), add the disk, then turn it on again")
    if state is None:
        raise UsageError(f"cannot tell whether Ganeti's prealloc_wipe_disks (which would zero {what}) is on: this "
                         f"node has no readable {lib_dir}/config.data (not a master candidate?); make it one "
                         "(gnt-node modify --master-candidate=yes) or use a master candidate as primary node")
