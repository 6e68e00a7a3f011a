"""Every provider action through the real executables, as ganeti-noded runs them.

The provider is installed in a temp dir and each action runs as its own
process with noded's variables on top of a hostile inherited environment
(CEPH_ARGS, CEPH_CONF, PYTHONPATH, fake rbd/losetup first on PATH); the
module's fixture fails if anything leaked or a fake tool was ever run.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import rbd

from ganeti_ceph import procs
from ganeti_ceph.session import Session
from tests.ceph.provider_env import (
    GANETI_31_URI,
    HOSTILE,
    MIB,
    Provider,
    client_key,
    device_bytes,
    loop_minor,
    mounts_under,
    provider_fixture,
    read_device,
    write_device,
)
from tests.conftest import LocalCluster


@pytest.fixture(scope="module", params=["in-process", "agent"])
def prov(request: pytest.FixtureRequest, local_cluster: LocalCluster,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """Every test here runs twice: the executable doing the work itself, and handing it to the agent."""
    base = str(tmp_path_factory.mktemp(f"provider-actions-{request.param}"))
    yield from provider_fixture(local_cluster, base, agent=request.param == "agent")


def mapped_here(prov: Provider, vol: str) -> list[str]:
    """Traces of a mapping of `vol` by any of the module's nodes: loop devices, mounts, rbd-fuse."""
    found = []
    for run_dir in prov.run_dirs:
        found += [m for m in mounts_under(run_dir) if vol in m]
        found += [str(pid) for pid in procs.find("rbd-fuse", substring=vol)]
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as fh:
                if vol in fh.read():
                    found.append(name)
        except OSError:
            continue
    return found


def watchers(prov: Provider, vol: str) -> list[str]:
    with prov.image(vol) as img:
        return [w["addr"] for w in img.watchers_list()]


def test_kernelspace_lifecycle(prov: Provider) -> None:
    """create, attach (a /dev/loopN block device with N>0 plus the kvm URI; twice gives the same device),
    data crosses between the device and librbd both ways, detach twice, remove twice."""
    vol = prov.volume()
    assert "created" in prov.run("create", vol, VOL_SIZE="64").ok().note
    assert prov.size_mib(vol) == 64
    dev, uri = prov.attach(vol)
    assert dev.startswith("/dev/loop") and loop_minor(dev) > 0
    assert stat.S_ISBLK(os.stat(dev).st_mode)
    assert uri == f"kvm:rbd:rbd/{vol}:id=ganeti"
    assert GANETI_31_URI.match(uri.removeprefix("kvm:"))
    assert prov.attach(vol) == (dev, uri)
    assert device_bytes(dev) == 64 * MIB

    pattern = os.urandom(MIB)
    write_device(dev, pattern, 3 * MIB)
    assert prov.read(vol, 3 * MIB, MIB) == pattern
    other = os.urandom(MIB)
    prov.write(vol, other, 10 * MIB)
    assert read_device(dev, 10 * MIB, MIB) == other

    assert "unmapped" in prov.run("detach", vol).ok().note
    assert mapped_here(prov, vol) == []
    assert watchers(prov, vol) == []
    assert "was not mapped" in prov.run("detach", vol).ok().note
    assert prov.read(vol, 3 * MIB, MIB) == pattern
    assert "removed" in prov.run("remove", vol).ok().note
    assert not prov.exists(vol)
    assert "already gone" in prov.run("remove", vol).ok().note


def test_concurrent_attaches_share_one_mapping(prov: Provider) -> None:
    """Ganeti calls attach from parallel jobs: concurrent attaches of one volume all print the same device,
    and only one loop device and one rbd-fuse serve it."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda _: prov.attach(vol), range(4)))
    assert len(set(outputs)) == 1
    assert len(procs.find("rbd-fuse", substring=vol)) == 1
    assert len([m for m in mapped_here(prov, vol) if m.startswith("loop")]) == 1
    prov.run("detach", vol).ok()
    prov.run("remove", vol).ok()


def test_userspace_attach_maps_nothing(prov: Provider) -> None:
    """userspace attach prints an empty line 1 and a kvm URI Ganeti 3.1 accepts, and maps nothing."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64", EXTP_ACCESS="userspace").ok()
    for _ in range(2):
        first, uri = prov.attach(vol, EXTP_ACCESS="userspace")
        assert first == ""
        assert uri == f"kvm:rbd:rbd/{vol}:id=ganeti"
        assert GANETI_31_URI.match(uri.removeprefix("kvm:"))
    assert mapped_here(prov, vol) == []
    assert watchers(prov, vol) == []
    prov.run("detach", vol, EXTP_ACCESS="userspace").ok()
    prov.run("remove", vol, EXTP_ACCESS="userspace").ok()
    assert not prov.exists(vol)


@pytest.mark.parametrize("access", ["kernelspace", "userspace"])
def test_attach_of_a_missing_volume_fails_in_one_line(prov: Provider, access: str) -> None:
    """attach of a volume that does not exist fails with one line and maps nothing."""
    vol = prov.volume()
    line = prov.run("attach", vol, EXTP_ACCESS=access).one_error()
    assert vol in line
    assert mapped_here(prov, vol) == [] and not prov.exists(vol)


def test_setinfo_grow_verify(prov: Provider) -> None:
    """setinfo stores VOL_METADATA as ganeti.metadata (re-sent on rename); grow grows, repeats at the same
    size, refuses to shrink in one line leaving the size alone; verify passes."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    prov.run("setinfo", vol, VOL_METADATA="originstname+inst1.example.com").ok()
    assert prov.metadata(vol)["ganeti.metadata"] == "originstname+inst1.example.com"
    prov.run("setinfo", vol, VOL_METADATA="originstname+renamed.example.com").ok()
    assert prov.metadata(vol)["ganeti.metadata"] == "originstname+renamed.example.com"

    assert "128 MiB" in prov.run("grow", vol, VOL_SIZE="64", VOL_NEW_SIZE="128").ok().note
    assert prov.size_mib(vol) == 128
    prov.run("grow", vol, VOL_SIZE="128", VOL_NEW_SIZE="128").ok()
    assert prov.size_mib(vol) == 128
    line = prov.run("grow", vol, VOL_SIZE="128", VOL_NEW_SIZE="32").one_error()
    assert "shrink" in line
    assert prov.size_mib(vol) == 128

    assert "OK" in prov.run("verify", vol).ok().note
    prov.run("remove", vol).ok()


def test_create_records_the_volume_and_never_overwrites(prov: Provider) -> None:
    """create stores VOL_UUID/VOL_CNAME as ganeti.uuid/ganeti.cname; a repeat with the same VOL_UUID succeeds;
    create over an existing image with another uuid is refused and leaves its data alone."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64", VOL_CNAME="data-disk").ok()
    meta = prov.metadata(vol)
    assert meta["ganeti.uuid"] == prov.uuids[vol] and meta["ganeti.cname"] == "data-disk"
    pattern = os.urandom(MIB)
    prov.write(vol, pattern, 5 * MIB)

    assert "already exists" in prov.run("create", vol, VOL_SIZE="64", VOL_CNAME="data-disk").ok().note
    line = prov.run("create", vol, VOL_SIZE="64", VOL_UUID="0f0f0f0f-other-disk").one_error()
    assert vol in line and "refus" in line
    assert prov.read(vol, 5 * MIB, MIB) == pattern
    assert prov.metadata(vol) == meta and prov.size_mib(vol) == 64
    prov.run("remove", vol).ok()


def test_remove_refuses_while_mapped(prov: Provider) -> None:
    """remove refuses while the image is mapped (on this node or another), naming the holder; the image
    and its data stay; after detach it succeeds."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    pattern = os.urandom(MIB)
    prov.write(vol, pattern)
    prov.attach(vol)
    holders = watchers(prov, vol)
    assert len(holders) == 1
    for node in (prov.a, prov.b):
        line = prov.run("remove", vol, node).one_error()
        assert holders[0] in line
        assert prov.exists(vol) and prov.read(vol, 0, MIB) == pattern
    prov.run("detach", vol).ok()
    prov.run("remove", vol).ok()
    assert not prov.exists(vol)


def test_remove_refuses_while_another_client_has_it_open(prov: Provider, local_cluster: LocalCluster) -> None:
    """remove refuses while another librbd client (a VM's QEMU, here this test) has the image open."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    with Session(local_cluster.client) as s, s.ioctx() as io, rbd.Image(io, vol) as img:
        mine = [w["addr"] for w in img.watchers_list()]
        line = prov.run("remove", vol).one_error()
    assert len(mine) == 1 and mine[0] in line
    assert prov.exists(vol)
    prov.run("remove", vol).ok()


def test_client_key_never_in_argv_or_environment(prov: Provider, local_cluster: LocalCluster) -> None:
    """While a volume is mapped, the client key is in no process's argv, nor in rbd-fuse's environment,
    which is clean (nothing inherited from noded); nor in the provider's output."""
    key = client_key(local_cluster.client)
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    prov.attach(vol)
    fuse = procs.find("rbd-fuse", substring=vol)
    assert fuse, "no rbd-fuse process for the mapping"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            assert key not in " ".join(procs.cmdline(entry)), f"key in argv of pid {entry}"
    for pid in fuse:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read().decode(errors="replace")
        assert key not in environ
        assert not [k for k in HOSTILE if k + "=" in environ], environ
    prov.run("detach", vol).ok()
    prov.run("remove", vol).ok()
    assert not [r.action for r in prov.results if key in r.stdout + r.stderr]


def test_grow_while_mapped_reaches_the_device(prov: Provider) -> None:
    """After grow of a mapped volume, the attach Ganeti runs next returns a device of the new size
    (krbd and rbd-nbd do this by themselves)."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    try:
        dev, _ = prov.attach(vol)
        prov.run("grow", vol, VOL_SIZE="64", VOL_NEW_SIZE="128").ok()
        assert prov.attach(vol)[0] == dev
        deadline = time.monotonic() + 3
        while device_bytes(dev) != 128 * MIB and time.monotonic() < deadline:
            time.sleep(0.1)
        assert device_bytes(dev) == 128 * MIB
    finally:
        prov.run("detach", vol).ok()
        prov.run("remove", vol).ok()


def test_nothing_leaked(prov: Provider) -> None:
    """Last in the module: no mapping, rbd-fuse, image, snapshot or trash entry of these tests is left."""
    assert prov.leaks() == []


def test_a_create_cut_short_before_its_metadata_is_completed_by_the_retry(prov: Provider,
                                                                          local_cluster: LocalCluster) -> None:
    """create makes the image, then writes its metadata: an image of the volume's name with no metadata,
    no data, no user and the shape asked is what an interruption in between leaves, and the retry completes
    it. One holding data, or of another size, is refused in one line and left as it was."""
    bits = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
            | rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_DEEP_FLATTEN)
    cut, used, other_size = prov.volume(), prov.volume(), prov.volume()
    with Session(local_cluster.client) as s, s.ioctx() as io:
        for vol, mib in ((cut, 64), (used, 64), (other_size, 32)):
            rbd.RBD().create(io, vol, mib * MIB, old_format=False, features=bits)
    pattern = os.urandom(MIB)
    prov.write(used, pattern, 7 * MIB)

    assert "already exists" in prov.run("create", cut, VOL_SIZE="64", VOL_CNAME="c").ok().note
    meta = prov.metadata(cut)
    assert meta["ganeti.uuid"] == prov.uuids[cut] and meta["ganeti.cname"] == "c"
    for vol, why in ((used, "holds data"), (other_size, "differs in size")):
        line = prov.run("create", vol, VOL_SIZE="64").one_error()
        assert vol in line and why in line and "refusing" in line
        assert prov.metadata(vol) == {}
    assert prov.read(used, 7 * MIB, MIB) == pattern and prov.size_mib(other_size) == 32
    for vol in (cut, used, other_size):
        prov.run("remove", vol).ok()
