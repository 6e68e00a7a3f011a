"""Mapper faults on the real cluster: what a fuse-loop device promises when rbd-fuse dies, and
what a map does when rbd-fuse does not show the image.

The contract (doc/extstorage.md, "Kernelspace mappers"): a write the mapped
device acknowledged is in Ceph, flushed or not, as with krbd. Checked the
hard way: an O_DIRECT write with no fsync, rbd-fuse killed with SIGKILL,
then the image read through librbd.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import rbd

from ganeti_ceph import config, procs
from ganeti_ceph.rbd.mappers import MapError, Target
from ganeti_ceph.rbd.mappers.fuse_loop import MOUNTS, FuseLoop
from ganeti_ceph.session import Session
from tests.ceph.provider_env import MIB, Provider, mounts_under, provider_fixture, read_device
from tests.conftest import LocalCluster

WATCH_GONE_S = 60  # a killed client's watch lapses after osd_client_watch_timeout (30 s)


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("mapper-faults")),
                                request=request)


def write_direct(dev: str, data: bytes, offset: int) -> None:
    """One O_DIRECT write from a page-aligned buffer, and no flush after it.

    One flush comes first, as any guest sends them: librbd's cache stays
    write-through until it has seen one (rbd_cache_writethrough_until_flush),
    and without it a cache that is on would lose this write only by chance."""
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        os.fsync(fd)
        assert os.pwritev(fd, [buf], offset) == len(data)
    finally:
        os.close(fd)


def wait_unwatched(prov: Provider, vol: str) -> None:
    deadline = time.monotonic() + WATCH_GONE_S
    while time.monotonic() < deadline:
        with prov.image(vol) as img:
            if not list(img.watchers_list()):
                return
        time.sleep(0.5)
    raise AssertionError(f"{vol}: the killed rbd-fuse's watch outlived {WATCH_GONE_S} s")


def test_fuse_loop_acknowledged_write_survives_rbd_fuse_kill(prov: Provider) -> None:
    """32 MiB written with O_DIRECT and not flushed are all in Ceph after rbd-fuse is SIGKILLed
    (with librbd's write-back cache they were not); attach then maps afresh rather than hand out
    the dead device, and detach leaves nothing behind."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    dev, _ = prov.attach(vol)
    data = os.urandom(32 * MIB)
    write_direct(dev, data, 4 * MIB)
    fuse = procs.find("rbd-fuse", arg=vol)
    assert len(fuse) == 1, fuse
    os.kill(fuse[0], signal.SIGKILL)
    assert prov.read(vol, 4 * MIB, len(data)) == data
    # As a restarted instance would: attach again. The dead device (every I/O: EIO) is not handed
    # out; a fresh mapping is, and reads the data.
    dev2, _ = prov.attach(vol)
    assert read_device(dev2, 4 * MIB, MIB) == data[:MIB]
    prov.run("detach", vol).ok()
    assert not procs.find("rbd-fuse", arg=vol)
    wait_unwatched(prov, vol)
    prov.run("remove", vol).ok()


def fuse_and_target(prov: Provider, vol: str) -> tuple[FuseLoop, Target]:
    """The fuse-loop mapper of node A's config, and `vol` as its target."""
    cfg = config.load(prov.a)
    return FuseLoop(cfg), Target(config.conf_fsid(cfg.conf) or "", cfg.pool, vol)


def recording(fuse: FuseLoop, after: Callable[[int], None] = lambda _: None) -> list[int]:
    """What each of the map's rbd-fuse mounts answered (0, or the errno of its lookup); `after` runs
    once each has answered."""
    answers: list[int] = []
    real = fuse.mount

    def mount(t: Target) -> int:
        answers.append(real(t))
        after(answers[-1])
        return answers[-1]

    fuse.mount = mount  # type: ignore[method-assign]
    return answers


def test_fuse_loop_asks_a_new_rbd_fuse_when_one_shows_no_image(prov: Provider) -> None:
    """A lookup of the image's file that found nothing made an attach fail in CI ("did not
    expose"). The map now asks a new rbd-fuse (an open that failed leaves a broken entry in an
    rbd-fuse's table, so the same one is not asked again). Here the first rbd-fuse finds nothing
    for sure: the image is created only once it has answered."""
    vol = prov.volume()
    fuse, t = fuse_and_target(prov, vol)
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        answers = recording(fuse, lambda got: got and rbd.RBD().create(io, vol, 16 * MIB))
        try:
            dev = fuse.map(t)
            assert fuse.find(t) == dev
            assert answers == [errno.ENOENT, 0]
        finally:
            fuse.unmap(t)
            prov.run("remove", vol)
    assert not prov.exists(vol)


def test_fuse_loop_says_why_rbd_fuse_shows_no_image(prov: Provider) -> None:
    """An image no rbd-fuse shows: after fuse_loop.MOUNTS of them the map gives up with the
    lookup's error, and leaves no mount or rbd-fuse."""
    fuse, t = fuse_and_target(prov, prov.volume())
    answers = recording(fuse)
    with pytest.raises(MapError, match=r"did not expose .* \(No such file or directory\)"):
        fuse.map(t)
    assert answers == [errno.ENOENT] * MOUNTS
    assert fuse.mountpoint(t) not in mounts_under(fuse.cfg.run_dir)
    assert not procs.find("rbd-fuse", arg=fuse.mountpoint(t))


def test_nothing_leaked(prov: Provider) -> None:
    """Last in the module: no mapping, rbd-fuse, image or trash entry of these tests is left."""
    assert prov.leaks() == []
