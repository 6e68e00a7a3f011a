"""rbd-nbd against a fake sysfs: what this kernel cannot show for real."""

import os
import subprocess
import sys
import time

import pytest

from ganeti_ceph import runner
from ganeti_ceph.errors import Busy
from ganeti_ceph.rbd.mappers.rbd_nbd import RbdNbd
from ganeti_ceph.rbd.mappers.table import Target
from tests.unit.test_mappers_pure import T, cfg, write


def test_rbd_nbd_checks_the_daemon_serving_the_device(tmp_path) -> None:
    """/dev/nbdN is t's only while its pid (sysfs) is an rbd-nbd of t's spec and of our conf
    (a process named rbd-nbd with those arguments stands in for it here)."""
    block = tmp_path / "block"
    m = RbdNbd(cfg(tmp_path, "rbd-nbd"), str(block))
    assert not m.is_mapping_of("/dev/nbd0", T)  # no pid: not connected
    nbd = subprocess.Popen(["rbd-nbd", "-c", "import time; time.sleep(60)", "map", "-c", m.cfg.conf, T.spec],
                           executable=sys.executable)
    try:
        write(str(block / "nbd0/pid"), str(nbd.pid))
        deadline = time.monotonic() + 10
        while not m.is_mapping_of("/dev/nbd0", T) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert m.is_mapping_of("/dev/nbd0", T)
        assert not m.is_mapping_of("/dev/nbd0", Target("f5", "rbd", "other"))
    finally:
        nbd.kill()
        nbd.wait()
    assert not m.is_mapping_of("/dev/nbd0", T)


def test_a_daemon_a_mapping_tool_leaves_behind_is_out_of_the_callers_process_group() -> None:
    """A tool that forks a daemon and exits, as `rbd-nbd map` does (no setsid): the daemon must not share
    the process group of the caller, an agent worker whose group is SIGKILLed at a call's bound (review I, R1)."""
    out = runner.run(["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"], "start a daemon", 10,
                   leaves_daemon=True)
    daemon = int(out.strip())
    try:
        assert os.getpgid(daemon) != os.getpgrp(), "killpg of this process group would kill the mapping daemon"
    finally:
        os.kill(daemon, 9)  # an orphan of its shell: PID 1 here may leave it a zombie


def test_rbd_nbd_refuses_to_unmap_a_device_someone_holds_open(tmp_path) -> None:
    """The nbd kernel driver disconnects an open device (its user's I/O then fails with EIO) where krbd
    refuses with EBUSY: the mapper refuses first, naming the holder, and runs no rbd-nbd unmap. (Seen on a
    real kernel in tests/kernel; here a file this test holds open stands in for the device.)"""
    m = RbdNbd(cfg(tmp_path, "rbd-nbd"), str(tmp_path / "block"))
    dev = str(tmp_path / "nbd0")
    write(dev, "")
    with open(dev) as held, pytest.raises(Busy, match=rf"is in use by process {os.getpid()} "):
        assert held
        m.unmap_device(dev, T)
