"""fuse-loop against a fake sysfs: what this kernel cannot show for real."""

import os
import subprocess
import sys
import time

from ganeti_ceph.rbd.mappers import table
from ganeti_ceph.rbd.mappers.fuse_loop import FuseLoop
from tests.unit.test_mappers_pure import T, cfg, write


def test_find_ignores_stale_links_and_dead_fuse(tmp_path) -> None:
    """A link counts only if its loop device is bound to the image's file and that file's rbd-fuse
    lives (a process named rbd-fuse holding the mountpoint stands in for it here): after rbd-fuse
    died, the device answers every I/O with EIO and attach must map afresh."""
    block = tmp_path / "block"
    m = FuseLoop(cfg(tmp_path, "fuse-loop"), str(block))
    table.publish(m.cfg.run_dir, T, "/dev/loop3")
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
