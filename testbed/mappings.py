"""What the provider's fuse-loop mapper left on the host: rbd-fuse mounts and loop devices.

Mounts live in a node's mount namespace and die with it; loop devices are
global and would not, so the test bed looks for them by the device of the
rbd-fuse mount they are backed by, and (for mounts already gone) by the
backing path `<run_dir>/fuse/<fsid>/...` of our Ceph cluster (each node's run dir is under RUN_DIR).
"""

from __future__ import annotations

import json

from testbed import netns
from testbed.nodefs import RUN_DIR


def loops(under: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Attached loop devices whose backing file is under one of `under`: name, backing device
    (major:minor) and backing file. The backing file comes from sysfs; the device number needs
    LOOP_GET_STATUS, which stats the file and hangs for good on a wedged FUSE mount (another
    test bed's), so it is asked only for the devices we care about."""
    def listing(columns: str, *names: str) -> list[dict]:
        res = netns.sh(["losetup", "--list", "--json", "--output", columns, *names], check=False)
        try:
            return json.loads(res.stdout or "{}").get("loopdevices", [])
        except ValueError:
            return []

    files = {d.get("name") or "": (d.get("back-file") or "").strip() for d in listing("NAME,BACK-FILE")}
    wanted = sorted(n for n, f in files.items() if n and f.startswith(under))
    devs = {d.get("name"): (d.get("back-maj:min") or "").strip()
            for name in wanted for d in listing("NAME,BACK-MAJ:MIN", name)}
    return [{"name": n, "dev": devs.get(n, ""), "file": files[n]} for n in wanted]


def of_node(holder: netns.Holder) -> dict[str, list[str]]:
    """The rbd-fuse mounts under the node's run dir, and the loop devices backed by them."""
    fuse = {dev: point for point, fstype, dev in netns.mounts(holder.pid)
            if fstype.startswith("fuse.") and point.startswith(RUN_DIR + "/")}
    found = loops(tuple(p + "/" for p in fuse.values())) if fuse else []
    return {"mounts": sorted(fuse.values()), "loops": sorted(d["name"] for d in found if d["dev"] in fuse)}


def of_cluster(fsid: str) -> list[str]:
    """Loop devices backed by a fuse-loop mapping of cluster `fsid`, on any node."""
    return sorted(d["name"] for d in loops((f"{RUN_DIR}/",)) if f"/fuse/{fsid}/" in d["file"]) if fsid else []


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
