"""Review findings of helper I (issue 10), each a strict xfail until fixed: see /tmp/review-I.md.

Each test states the rule the code should keep; it fails today for the reason given in its
marker. When a fix lands, the test passes, the strict xfail turns red, and the marker goes.
No Ceph cluster is needed (one test runs ceph-osd --mkfs on a sparse file, as test_node_probe does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from extstorage import mappers
from ganeti_ceph.errors import GanetiCephError
from gnt_storage import node


def test_a_daemon_a_mapping_tool_leaves_behind_is_out_of_the_callers_process_group() -> None:
    """A tool that forks a daemon and exits, as `rbd-nbd map` does: the daemon must not share the
    process group of the caller (an agent worker, whose group is SIGKILLed at the call's bound)."""
    out = mappers.run_tool(["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"], "start a daemon", 10,
                           leaves_daemon=True)
    daemon = int(out)
    try:
        assert os.getpgid(daemon) != os.getpgrp(), "killpg of this process group would kill the mapping daemon"
    finally:
        os.kill(daemon, signal.SIGKILL)  # an orphan of its shell: PID 1 here may leave it a zombie


@pytest.fixture()
def finished_store(tmp_path) -> str:
    """A finished bluestore store of osd.7 on a 3 GiB sparse file (as test_node_probe's fixture)."""
    if not shutil.which("ceph-osd"):
        pytest.fail("ceph-osd is not installed (make install)")
    dev, data = str(tmp_path / "osd.img"), tmp_path / "osd"
    with open(dev, "wb") as fh:
        fh.truncate(3 * 1024**3)
    data.mkdir()
    (data / "block").symlink_to(dev)
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\nfsid = {FSID}\n[osd]\nosd_objectstore = bluestore\nbluestore_block_create = false\n"
                    "bluestore_fsck_on_mkfs = false\n")
    subprocess.run(["ceph-osd", "-c", str(conf), "--mkfs", "-i", "7", "--osd-uuid", OSD_UUID, "--osd-data", str(data),
                    "--no-mon-config", "--log-file", str(tmp_path / "log")], check=True, capture_output=True,
                   timeout=120)
    return dev


OSD_UUID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
FSID = "11111111-2222-3333-4444-555555555555"


def _head(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(65536)


def test_a_finished_store_is_never_zeroed_even_with_up_from_0(finished_store: str, tmp_path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = _head(finished_store)
    assert before.startswith(b"bluestore block device\n")
    monkeypatch.setattr(node, "data_dir", lambda kind, ident: str(tmp_path / f"{kind}-{ident}"))

    def stop(argv: list[str], what: str) -> None:
        raise GanetiCephError(f"stopped by the test before {what}")

    monkeypatch.setattr(node, "_ceph", stop)
    osd = {"id": "7", "dev": finished_store, "uuid": OSD_UUID, "fsid": FSID, "keyring": "", "up_from": 0}
    with pytest.raises(GanetiCephError):
        node.mkfs_osd(osd, "ceph")
    assert _head(finished_store) == before, "the finished store's label was zeroed"
