"""krbd and rbd-nbd for real: the provider's kernelspace actions run inside a VM on Debian's kernel.

Each action is the installed provider executable, run in the guest as
ganeti-noded runs it (tests/kernel/guest.py); the data written through a
device is read back through it and through librbd on the host.
"""

from __future__ import annotations

import re

import pytest

from tests.kernel.guest import LISTERS, MIB, Guest

MAPPERS = ("krbd", "rbd-nbd")
DEVICE = {"krbd": re.compile(r"/dev/rbd(\d+)"), "rbd-nbd": re.compile(r"/dev/nbd(\d+)")}
TOOL = {"krbd": "rbd", "rbd-nbd": "rbd-nbd"}


def sysfs_says(g: Guest, mapper: str, dev: str) -> str:
    """What the kernel says maps `dev`: krbd's pool/name/snap/fsid, or the rbd-nbd daemon's command line."""
    n = DEVICE[mapper].fullmatch(dev).group(1)  # type: ignore[union-attr]
    if mapper == "krbd":
        base = f"/sys/bus/rbd/devices/{n}"
        return g.vm.check(f"cat {base}/pool {base}/name {base}/current_snap {base}/cluster_fsid | paste -sd' '")
    return g.vm.check(f"tr '\\0' ' ' < /proc/$(cat /sys/block/nbd{n}/pid)/cmdline")


def mapped(g: Guest, mapper: str, dev: str) -> bool:
    """Whether the kernel still has `dev` mapped (by sysfs, not by any listing tool)."""
    n = DEVICE[mapper].fullmatch(dev).group(1)  # type: ignore[union-attr]
    probe = f"/sys/bus/rbd/devices/{n}" if mapper == "krbd" else f"/sys/block/nbd{n}/pid"
    return g.vm.run(["test", "-e", probe])[0] == 0


def size(g: Guest, dev: str) -> int:
    return int(g.vm.check(["blockdev", "--getsize64", dev]))


@pytest.mark.parametrize("mapper", MAPPERS)
def test_kernelspace_lifecycle(guest: Guest, mapper: str) -> None:
    """create, attach (a real /dev/rbdN or /dev/nbdN, found again through our link and sysfs: attach
    twice gives the same device, and no tool listed mappings), data through the device equals what
    librbd reads, grow reaches the block device, detach twice, remove."""
    g, vol = guest, guest.volume()
    g.take_tool_calls()
    g.run("create", vol, mapper, VOL_SIZE="64").ok()
    dev, uri = g.attach(vol, mapper)
    assert DEVICE[mapper].fullmatch(dev), dev
    assert uri == f"kvm:rbd:rbd/{vol}:id=ganeti"
    assert g.vm.check(["readlink", g.link(mapper, vol)]).strip() == dev
    said = sysfs_says(g, mapper, dev)
    if mapper == "krbd":
        assert said.split() == ["rbd", vol, "-", g.fsid]
    else:
        assert said.split()[0].endswith("rbd-nbd") and f"rbd/{vol}" in said.split(), said
    assert size(g, dev) == 64 * MIB
    assert g.attach(vol, mapper) == (dev, uri)

    written = g.write_random(dev, 8, 4)
    assert g.ceph_sum(vol, 8, 4) == written

    g.run("grow", vol, mapper, VOL_SIZE="64", VOL_NEW_SIZE="96").ok()
    # krbd updates the size in the grow's header notify, rbd-nbd on its watch: within moments, not a restart.
    out = g.vm.check(f"for i in $(seq 100); do s=$(blockdev --getsize64 {dev}); "
                     f"[ $s = {96 * MIB} ] && break; sleep 0.1; done; echo $s")
    assert int(out) == 96 * MIB, f"{dev} still shows {out.strip()} bytes after the grow"
    assert g.read_sum(dev, 8, 4) == written

    g.run("detach", vol, mapper).ok()
    assert not mapped(g, mapper, dev)
    assert g.vm.run(["test", "-L", g.link(mapper, vol)])[0] != 0, "detach left the link"
    g.run("detach", vol, mapper).ok()
    g.run("remove", vol, mapper).ok()

    calls = g.take_tool_calls()
    assert any(" map " in f" {c} " for c in calls), f"{TOOL[mapper]} map was never called: {calls}"
    listed = [c for c in calls if any(f" {w}" in c for w in LISTERS[TOOL[mapper]])]
    assert not listed, f"the mapper listed mappings: {listed}"
