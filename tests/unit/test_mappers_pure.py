"""Mapper logic against a fake sysfs: what this kernel cannot show for real."""

import dataclasses
import os
import subprocess
import sys
import threading
import time

import pytest

from ganeti_ceph.config import Config, Timeouts
from ganeti_ceph.errors import Busy
from ganeti_ceph.rbd.mappers import FuseLoop, Krbd, Target, run_tool

T = Target("f5", "rbd", "vol.ext.disk0")


def cfg(tmp_path, mapper: str) -> Config:
    return Config(conf="/c/ceph.conf", keyring="/c/k", client_id="ganeti", mapper=mapper, run_dir=str(tmp_path / "run"))


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text + "\n")


def test_krbd_checks_pool_image_and_fsid(tmp_path) -> None:
    sys_rbd = tmp_path / "bus/rbd/devices"
    for key, value in {"pool": "rbd", "name": "vol.ext.disk0", "current_snap": "-", "cluster_fsid": "f5"}.items():
        write(str(sys_rbd / "3" / key), value)
    m = Krbd(cfg(tmp_path, "krbd"), str(tmp_path / "block"), str(sys_rbd))
    assert m.is_mapping_of("/dev/rbd3", T)
    assert not m.is_mapping_of("/dev/rbd3", Target("other-fsid", "rbd", "vol.ext.disk0"))
    assert not m.is_mapping_of("/dev/rbd4", T)


def test_link_includes_fsid_pool_image(tmp_path) -> None:
    m = Krbd(cfg(tmp_path, "krbd"))
    assert m.link(T) == str(tmp_path / "run/dev/f5/rbd/vol.ext.disk0")
    assert m.link(T) != m.link(Target("f6", "rbd", "vol.ext.disk0"))


def test_find_ignores_stale_links_and_dead_fuse(tmp_path) -> None:
    """A link counts only if its loop device is bound to the image's file and that file's rbd-fuse
    lives (a process named rbd-fuse holding the mountpoint stands in for it here): after rbd-fuse
    died, the device answers every I/O with EIO and attach must map afresh."""
    block = tmp_path / "block"
    m = FuseLoop(cfg(tmp_path, "fuse-loop"), str(block))
    os.makedirs(os.path.dirname(m.link(T)))
    os.symlink("/dev/loop3", m.link(T))
    assert m.find(T) is None  # loop3 is not bound to our file
    write(str(block / "loop3/loop/backing_file"), m.backing_file(T))
    assert m.loops_of(T) == ["/dev/loop3"]
    assert m.find(T) is None  # bound, but no rbd-fuse serves the file
    fuse = subprocess.Popen(["rbd-fuse", "-c", "import time; time.sleep(60)", m.mountpoint(T)],
                            executable=sys.executable)
    try:
        deadline = time.monotonic() + 10
        while m.find(T) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert m.find(T) == "/dev/loop3"
    finally:
        fuse.kill()
        fuse.wait()
    assert m.find(T) is None


def test_free_loops_skip_minor_zero_and_busy(tmp_path) -> None:
    block = tmp_path / "block"
    for n in range(4):
        os.makedirs(block / f"loop{n}")
    write(str(block / "loop1/loop/backing_file"), "/x")
    m = FuseLoop(cfg(tmp_path, "fuse-loop"), str(block))
    assert m.free_loops() == ["/dev/loop2", "/dev/loop3"]


def test_links_of_two_images_race_without_loss(tmp_path) -> None:
    """Two images of one pool published and dropped at once from real threads,
    as two Ganeti jobs' attach and detach do (each holds only its own image's
    lock): every publish must leave its link in place, whatever the other
    image's unpublish does to the shared <fsid>/<pool> directories."""
    m = FuseLoop(cfg(tmp_path, "fuse-loop"))
    targets = [Target("f5", "rbd", f"vol{i}.ext.disk0") for i in range(2)]
    failures: list[str] = []
    start = threading.Barrier(len(targets))

    def churn(t: Target) -> None:
        start.wait()
        for _ in range(3000):
            try:
                m.publish(t, "/dev/loop3")
            except OSError as exc:
                failures.append(f"publish {t.image}: {exc}")
                return
            if os.readlink(m.link(t)) != "/dev/loop3":
                failures.append(f"{t.image}: link lost")
                return
            m.unpublish(t)

    threads = [threading.Thread(target=churn, args=(t,)) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not failures, failures[0]
    assert not any(th.is_alive() for th in threads)


def test_lock_wait_is_bounded(tmp_path) -> None:
    """A map or unmap of an image whose lock another call holds gives up after timeouts.osd_op,
    in one line, instead of waiting for ever; the image's lock is free again once the holder ends."""
    bound = 0.5
    m = FuseLoop(dataclasses.replace(cfg(tmp_path, "fuse-loop"), timeouts=Timeouts(osd_op=bound)))
    with m.locked(T):
        started = time.monotonic()
        with pytest.raises(Busy, match=f"another map or unmap of rbd/{T.image}") as err, m.locked(T):
            pass
        assert time.monotonic() - started < bound + 2  # ended within its configured bound
        assert "\n" not in err.value.message
    with m.locked(T):
        pass


def test_a_daemon_a_mapping_tool_leaves_behind_is_out_of_the_callers_process_group() -> None:
    """A tool that forks a daemon and exits, as `rbd-nbd map` does (no setsid): the daemon must not share
    the process group of the caller, an agent worker whose group is SIGKILLed at a call's bound (review I, R1)."""
    out = run_tool(["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"], "start a daemon", 10,
                   leaves_daemon=True)
    daemon = int(out)
    try:
        assert os.getpgid(daemon) != os.getpgrp(), "killpg of this process group would kill the mapping daemon"
    finally:
        os.kill(daemon, 9)  # an orphan of its shell: PID 1 here may leave it a zombie
