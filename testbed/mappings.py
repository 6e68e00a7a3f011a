"""What the provider's fuse-loop mapper left on the host: rbd-fuse mounts and loop devices.

Mounts live in a node's mount namespace and die with it; loop devices are
global and would not, so the test bed looks for them by the device of the
rbd-fuse mount they are backed by, and (for mounts already gone) by the
backing path `<run_dir>/fuse/<fsid>/...` of our Ceph cluster.
"""

from __future__ import annotations

import json

from testbed import netns
from testbed.nodefs import RUN_DIR


def loops() -> list[dict[str, str]]:
    """Every attached loop device: name, backing device (major:minor) and backing file."""
    res = netns.sh(["losetup", "--list", "--json", "--output", "NAME,BACK-MAJ:MIN,BACK-FILE"], check=False)
    try:
        devices = json.loads(res.stdout or "{}").get("loopdevices", [])
    except ValueError:
        return []
    return [{"name": d.get("name") or "", "dev": (d.get("back-maj:min") or "").strip(),
             "file": (d.get("back-file") or "").strip()} for d in devices]


def of_node(holder: netns.Holder) -> dict[str, list[str]]:
    """The rbd-fuse mounts under the node's run dir, and the loop devices backed by them."""
    fuse = {dev: point for point, fstype, dev in netns.mounts(holder.pid)
            if fstype.startswith("fuse.") and point.startswith(RUN_DIR + "/")}
    return {"mounts": sorted(fuse.values()), "loops": sorted(d["name"] for d in loops() if d["dev"] in fuse)}


def of_cluster(fsid: str) -> list[str]:
    """Loop devices backed by a fuse-loop mapping of cluster `fsid`, on any node (paths are per-node alike)."""
    prefix = f"{RUN_DIR}/fuse/{fsid}/"
    return sorted(d["name"] for d in loops() if fsid and d["file"].startswith(prefix))


def ceph_fsid(ceph_conf: str) -> str:
    """The fsid in a ceph.conf, or "" if it is gone or has none."""
    try:
        with open(ceph_conf) as fh:
            for line in fh:
                key, _, value = line.partition("=")
                if key.strip() == "fsid":
                    return value.strip()
    except OSError:
        pass
    return ""
