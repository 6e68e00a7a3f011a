"""init-distributed-storage with OSDs on block devices (ceph-volume raw), on 3 real Ganeti nodes over SSH.

The disk option names the same path on every node, /srv/osd-blk (each node
has a private /srv): on node 0 and 1 a link to a loop device of its own (a
real block device: these OSDs are made by ceph-volume), on node 2 a link to
a sparse file (made by ceph-osd --mkfs, as on the other test beds). So the
master's side is tested for real: ceph-volume registers its OSDs itself
(with the bootstrap-osd key the master hands out), their uuids and stable
names come back into the state, a re-run changes nothing. Only 2 loop
devices: the machine has 8, shared with other tests. No systemd runs in the
nodes: the OSDs are activated by the node's start, not by the drop-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from testbed.ganeti import Testbed
from tests.storage.conftest import ROOT
from tests.storage.test_distributed import ceph, init, wait_health

LINK = "/srv/osd-blk"
STATE = "/var/lib/ganeti-ceph/storage.json"


@pytest.fixture(scope="module")
def loops(bed: Testbed) -> Iterator[list[str]]:
    """Two loop devices over sparse files; detached at the end (lazily while the bed's OSDs still hold them:
    the kernel frees them when the bed goes down)."""
    os.makedirs(ROOT, exist_ok=True)
    devs: list[str] = []
    try:
        for i in range(2):
            path = os.path.join(ROOT, f"h4b-osd{i}.img")
            subprocess.run(["truncate", "-s", "4G", path], check=True)
            devs.append(subprocess.run(["losetup", "--find", "--show", path], check=True, capture_output=True,
                                       text=True, timeout=30).stdout.strip())
        yield devs
    finally:
        for i, dev in enumerate(devs):
            subprocess.run(["losetup", "-d", dev], check=False, timeout=30)
            os.chown(dev, 0, 6)  # root:disk, as before ceph-volume gave it to ceph
            os.unlink(os.path.join(ROOT, f"h4b-osd{i}.img"))


def test_init_with_osds_on_block_devices(bed: Testbed, loops: list[str]) -> None:
    bed.run(2, ["truncate", "-s", "10G", "/srv/osd-blk.img"])
    for i, target in enumerate([*loops, "/srv/osd-blk.img"]):
        bed.run(i, ["ln", "-sfn", target, LINK])
        # ceph-volume asks LVM about its device and LVM scans every block device: other tests' loop devices
        # may sit on hung rbd-fuse mounts (seen: lvs stuck for good), so each node's LVM sees its own only.
        bed.run(i, ["sh", "-c", f'mkdir -p /etc/lvm && printf \'devices {{ global_filter = [ "a|^{target}$|", '
                                f'"r|.*|" ] }}\\n\' > /etc/lvm/lvm.conf'])
    res = init(bed, f"ceph:disk={LINK}")
    assert res.returncode == 0, res.stderr
    assert wait_health(bed) == "HEALTH_OK"

    state = json.loads(bed.run(0, ["cat", STATE]).stdout)
    by_node = {o["node"]: o for o in state["osds"]}
    nodes = sorted(by_node)
    assert [bool(by_node[n].get("volume")) for n in nodes] == [True, True, False]
    assert "client.bootstrap-osd" in state["keys"]
    dump = {str(o["osd"]): o for o in json.loads(ceph(bed, "osd", "dump", "-f", "json"))["osds"]}
    for i, n in enumerate(nodes):
        o = by_node[n]
        assert dump[o["id"]]["up"] == 1 and dump[o["id"]]["uuid"] == o["uuid"], (o, dump[o["id"]])
        if i < 2:  # made by ceph-volume: its list names the OSD and its uuid, the state its device name
            assert o["stable"] == {"dev": LINK}
            # --log-level error: its log would hold the labels it read, OSD keys included (the product's
            # own ceph-volume runs are redacted: gnt_storage/deploy/volume.py)
            listed = json.loads(bed.run(i, ["ceph-volume", "--log-level", "error", "raw", "list", loops[i],
                                            "--format", "json"]).stdout)
            assert listed[o["uuid"]]["osd_id"] == int(o["id"])
            assert os.stat(loops[i]).st_uid != 0  # given to ceph by ceph-volume's activation

    again = init(bed, f"ceph:disk={LINK}")
    assert again.returncode == 0, again.stderr
    assert "files and stores in place" in again.stderr and "prepared" not in again.stderr, again.stderr
    assert json.loads(bed.run(0, ["cat", STATE]).stdout)["osds"] == state["osds"]


def test_removed_through_the_stable_link(bed: Testbed, loops: list[str]) -> None:
    """remove-distributed-storage zeroes each ceph-volume OSD's device through the name the state keeps,
    a link (as /dev/disk/by-* names are): the head is zeroed on the loop device itself, the link stays."""
    state = json.loads(bed.run(0, ["cat", STATE]).stdout)
    bed.run(0, ["sh", "-ec", "for i in $(rbd ls rbd); do rbd rm --no-progress rbd/$i; done"])
    res = bed.run(0, [os.path.join(os.path.dirname(sys.executable), "gnt-storage"), "remove-distributed-storage",
                      "default"], check=False, timeout=400)
    assert res.returncode == 0, res.stderr
    assert f"storage cluster {state['fsid']} of group default removed" in res.stdout
    for i, dev in enumerate(loops):
        with open(dev, "rb") as fh:
            assert fh.read(65536) == b"\0" * 65536, f"node{i}: {dev} not zeroed"
        assert bed.run(i, ["readlink", LINK]).stdout.strip() == dev
