"""krbd and rbd-nbd for real: the provider's kernelspace actions run inside a VM on Debian's kernel.

Each action is the installed provider executable, run in the guest as
ganeti-noded runs it (tests/kernel/guest.py); the data written through a
device is read back through it and through librbd on the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
import rbd

from ganeti_ceph.rbd.volumes import META_ACCESS
from ganeti_ceph.session import Session
from testbed import kernel
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
    """attach (a real /dev/rbdN or /dev/nbdN, found again through our link and sysfs: attach twice gives
    the same device, and no tool listed mappings), data through the device equals what librbd reads, grow
    reaches the block device, detach is refused while the device is held open, then done. (create, remove
    and a second detach do not depend on the mapper: tests/ceph runs them.)"""
    g = guest
    g.take_tool_calls()
    with image(g) as vol:
        lifecycle(g, mapper, vol)
    calls = g.take_tool_calls()
    assert any(" map " in f" {c} " for c in calls), f"{TOOL[mapper]} map was never called: {calls}"
    listed = [c for c in calls if any(f" {w}" in c for w in LISTERS[TOOL[mapper]])]
    assert not listed, f"the mapper listed mappings: {listed}"


def lifecycle(g: Guest, mapper: str, vol: str) -> None:
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
    assert g.ceph_size(vol) == 96 * MIB
    # krbd updates the size in the grow's header notify, rbd-nbd on its watch: within moments, not a restart.
    out = g.vm.check(f"for i in $(seq 100); do s=$(blockdev --getsize64 {dev}); "
                     f"[ $s = {96 * MIB} ] && break; sleep 0.1; done; echo $s")
    assert int(out) == 96 * MIB, f"{dev} still shows {out.strip()} bytes after the grow"
    assert g.read_sum(dev, 8, 4) == written

    # Detach while something holds the device open is refused, and the mapping stays usable.
    holder = g.vm.check(f"sh -c 'exec 3<{dev}; exec sleep 300' >/dev/null 2>&1 & echo $!").strip()
    refused = g.run("detach", vol, mapper).one_error()
    assert re.search(r"busy|in use", refused), refused
    assert mapped(g, mapper, dev) and g.read_sum(dev, 8, 4) == written
    g.vm.check(f"kill {holder}; while [ -e /proc/{holder} ]; do sleep 0.1; done", 30)

    g.run("detach", vol, mapper).ok()
    assert not mapped(g, mapper, dev)
    assert g.vm.run(["test", "-L", g.link(mapper, vol)])[0] != 0, "detach left the link"


@contextmanager
def image(g: Guest, features: int = 0) -> Iterator[str]:
    """A 64 MiB kernelspace image made and removed with librbd on the host (faster than the provider under
    TCG, where each action costs seconds)."""
    vol = g.volume()
    with Session(g.cluster.client) as s, s.ioctx() as io:
        rbd.RBD().create(io, vol, 64 * MIB, old_format=False,
                         features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | features)
        with rbd.Image(io, vol) as img:
            img.metadata_set(META_ACCESS, "kernelspace")
    try:
        yield vol
    finally:  # still mapped after a failure: the session's leftover check names it
        with Session(g.cluster.client) as s, s.ioctx() as io, suppress(rbd.ImageBusy):
            rbd.RBD().remove(io, vol)


def test_a_crashed_rbd_nbd_is_mapped_afresh(guest: Guest) -> None:
    """rbd-nbd killed with SIGKILL leaves an nbd device without its daemon: the next attach does not hand
    it out but maps again, and the data written before the crash is there."""
    g = guest
    with image(g) as vol:
        dev, _ = g.attach(vol, "rbd-nbd")
        written = g.write_random(dev, 0, 2)
        g.vm.check(f"p=$(cat /sys/block/{dev[5:]}/pid); kill -9 $p; while [ -e /proc/$p ]; do sleep 0.1; done", 30)
        assert not mapped(g, "rbd-nbd", dev)
        again, _ = g.attach(vol, "rbd-nbd")
        assert mapped(g, "rbd-nbd", again)
        assert g.read_sum(again, 0, 2) == written
        g.run("detach", vol, "rbd-nbd").ok()
        assert not mapped(g, "rbd-nbd", again)


def test_krbd_refuses_journaling(guest: Guest) -> None:
    """An image with journaling: krbd's attach fails in one line naming the feature (the kernel says only
    ENXIO) and leaves nothing mapped; the start hook vetoes it for krbd and lets rbd-nbd serve it."""
    g = guest
    with image(g, rbd.RBD_FEATURE_JOURNALING) as vol:
        line = g.run("attach", vol, "krbd").one_error()
        assert "krbd cannot map images with journaling" in line, line
        assert g.vm.check("ls /sys/bus/rbd/devices/").strip() == ""
        assert g.vm.run(["test", "-L", g.link("krbd", vol)])[0] != 0
        veto = g.start_hook(vol, "krbd")
        assert veto.rc != 0 and len(veto.stderr.splitlines()) == 1, veto
        assert "krbd cannot map images with journaling" in veto.stderr, veto.stderr
        assert "kernelspace access OK" in g.start_hook(vol, "rbd-nbd").ok().stdout


@pytest.mark.parametrize(("mapper", "module", "missing"), [
    ("krbd", "rbd", "this kernel has no krbd (rbd module)"),
    ("rbd-nbd", "nbd", "this kernel has no nbd module")])
def test_start_hook_checks_the_module(guest: Guest, mapper: str, module: str, missing: str) -> None:
    """The instance-start pre hook passes with the mapper's module loaded and vetoes in one line once it is
    gone (rmmod; the guest has no /lib/modules to load it from), then the module is loaded again."""
    g = guest
    with image(g) as vol:
        assert "kernelspace access OK" in g.start_hook(vol, mapper).ok().stdout
        g.vm.check(["rmmod", module])
        try:
            veto = g.start_hook(vol, mapper)
        finally:
            g.vm.check(["insmod", kernel.fetch().module(module)])
        assert veto.rc != 0 and len(veto.stderr.splitlines()) == 1, veto
        assert f"disk 0 (rbd/{vol}, kernelspace) cannot be served on this node: {missing}" in veto.stderr, veto
