"""Forgetting an OSD store of ours: through /dev/disk/by-* links, resumably, and never anyone else's.

Real devices where the kernel matters (a loop device behind a by-id style
link), real bluestore labels made by ceph-osd --mkfs and changed by
ceph-bluestore-tool; nothing here needs a running cluster. The mon's side of
a redo (purge-new) is tested on the storage bed (tests/storage/).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ganeti_ceph.errors import GanetiCephError
from gnt_storage.deploy import devices, teardown, volume
from tests.unit.test_node_probe import FSID, OSD_UUID, bluestore, fingerprint, loop, put, sparse

__all__ = ["bluestore"]  # the fixture: a finished store of osd.7

LABEL = devices.BLUESTORE_LABEL + OSD_UUID.encode() + b"\n"


def head(path: str, n: int = 65536) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def by_id(tmp_path, target: str, name: str = "ata-DISK_X") -> str:
    """A /dev/disk/by-id lookalike link to `target`, as udev makes them."""
    d = tmp_path / "by-id"
    d.mkdir(exist_ok=True)
    link = d / name
    link.symlink_to(target)
    return str(link)


def test_zero_head_follows_a_by_id_link_to_a_block_device(tmp_path) -> None:
    """The name a volume OSD is known by is a link: zeroing it must reach the device (was ELOOP)."""
    path = sparse(tmp_path)
    put(path, 0, LABEL)
    put(path, 70000, b"beyond the head")
    with loop(path) as dev:
        link = by_id(tmp_path, dev)
        devices.zero_head(link, OSD_UUID)
        assert head(dev) == b"\0" * 65536
        assert os.path.islink(link)
    assert head(path, 70015)[70000:] == b"beyond the head"


def test_zero_head_follows_a_link_to_a_file(tmp_path) -> None:
    path = sparse(tmp_path, size=1024**2)
    put(path, 0, LABEL)
    devices.zero_head(by_id(tmp_path, path), OSD_UUID)
    assert head(path) == b"\0" * 65536


def test_zero_head_refuses_a_device_without_the_osds_label(tmp_path) -> None:
    """Proven on the open descriptor, not only earlier: another OSD's label or none, nothing written."""
    path = sparse(tmp_path, size=1024**2)
    put(path, 0, devices.BLUESTORE_LABEL + b"another-uuid\n")
    before = fingerprint(path)
    with pytest.raises(GanetiCephError, match="no longer holds the label of OSD"):
        devices.zero_head(by_id(tmp_path, path), OSD_UUID)
    assert fingerprint(path) == before


def test_zero_head_refuses_a_block_device_held_open_exclusively(tmp_path) -> None:
    path = sparse(tmp_path)
    put(path, 0, LABEL)
    with loop(path) as dev:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL)
        try:
            with pytest.raises(GanetiCephError, match=r"is in use .*nothing was written"):
                devices.zero_head(by_id(tmp_path, dev), OSD_UUID)
        finally:
            os.close(fd)
        assert head(dev, len(LABEL)) == LABEL


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what BlueStore's KernelDevice does to its device
print("locked", flush=True)
time.sleep(60)
"""


def test_zero_head_refuses_a_device_a_running_osd_holds(tmp_path) -> None:
    """ceph-osd does not open its device O_EXCL: it takes an fcntl write lock, which a zeroing must get
    (was: O_EXCL alone, which a running OSD's device passed)."""
    path = sparse(tmp_path)
    put(path, 0, LABEL)
    with loop(path) as dev:
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, dev], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout and holder.stdout.readline().strip() == "locked"
            with pytest.raises(GanetiCephError, match=r"locked by a running process.*nothing was written"):
                devices.zero_head(by_id(tmp_path, dev), OSD_UUID, wait=0.5)
        finally:
            holder.kill()
            holder.wait(10)
        assert head(dev, len(LABEL)) == LABEL
        devices.zero_head(by_id(tmp_path, dev, "after-the-osd"), OSD_UUID)  # its lock went with it
        assert head(dev) == b"\0" * 65536


def test_teardown_zeroes_a_volume_osd_by_its_recorded_stable_name(tmp_path) -> None:
    """After sdX renumbering the init-time name points elsewhere: the stable name recorded at prepare
    is the OSD's device."""
    path = sparse(tmp_path, size=1024**2)
    put(path, 0, LABEL)
    link = by_id(tmp_path, path)
    osd = {"id": "7", "dev": str(tmp_path / "sdq-renumbered"), "uuid": OSD_UUID, "volume": True,
           "stable": {"dev": link}}
    assert volume.data_device(osd) == link
    out = teardown.purge_node({"daemons": [], "osds": [osd], "dirs": [], "files": []})
    assert out["changed"] == [f"osd.7's label on {link} zeroed"]
    assert head(path) == b"\0" * 65536


def test_a_recorded_volume_osd_is_never_taken_for_a_file_osd(tmp_path) -> None:
    """The state's flag wins over a probe: a missing by-id link is no file OSD."""
    gone = str(tmp_path / "by-id-gone")
    assert volume.is_volume({"dev": "/dev/sdq", "volume": True, "stable": {"dev": gone}})
    assert not volume.is_volume({"dev": "/dev/null", "volume": False})


def test_a_small_db_or_wal_device_is_usable(tmp_path) -> None:
    """2 GiB is an OSD's data minimum, not a DB's or WAL's."""
    wal = sparse(tmp_path, "wal.img", 1024**3)
    assert devices.device_state(wal, "", devices.MIN_DB_WAL_BYTES) == "empty"
    assert devices.device_state(wal, "").startswith("not usable: 1024 MiB, it needs at least 2048 MiB")
    data = sparse(tmp_path, "data.img")
    assert volume.state({"id": "7", "fsid": FSID, "dev": data, "wal": wal}) == "empty"
    tiny = sparse(tmp_path, "tiny.img", 64 * 1024**2)
    assert volume.state({"id": "7", "fsid": FSID, "dev": data, "wal": tiny}).startswith(
        f"not usable: its wal device {tiny} is not usable: 64 MiB")


@pytest.fixture
def unfinished(bluestore: str, tmp_path) -> str:
    """osd.7's store as a prepare stopped before mkfs_done: the label written, the store not finished."""
    copy = str(tmp_path / "unfinished.img")
    subprocess.run(["cp", "--sparse=always", bluestore, copy], check=True, timeout=60)
    subprocess.run(["ceph-bluestore-tool", "rm-label-key", "--dev", copy, "-k", "mkfs_done"], check=True,
                   capture_output=True, timeout=60)
    assert "mkfs_done" not in devices.read_label(copy)
    return copy


def test_an_unfinished_store_keeps_its_unlabelled_db(unfinished: str, tmp_path) -> None:
    """A prepare (or a redo) stopped between the data label and the DB's: still "ours", so a redo resumes."""
    db = sparse(tmp_path, "db.img", 1024**3)
    osd = {"id": "7", "fsid": FSID, "dev": unfinished, "db": db}
    assert volume.state(osd) == "ours"
    put(db, 0, devices.BLUESTORE_LABEL + b"another-uuid\n")
    assert "is not this OSD's db (it holds another-uuid)" in volume.state(osd)
    put(db, 0, b"data" + b"\0" * 64)
    assert "is not this OSD's db (it holds no label)" in volume.state(osd)


def test_a_finished_store_needs_its_db(bluestore: str, tmp_path) -> None:
    db = sparse(tmp_path, "db.img", 1024**3)
    assert "is not this OSD's db (it holds no label)" in volume.state(
        {"id": "7", "fsid": FSID, "dev": bluestore, "db": db})


def test_a_redo_unregisters_first_and_zeroes_nothing_if_the_mon_refuses(unfinished: str, tmp_path) -> None:
    """purge-new is the proof: here no mon answers (no cluster on this host), so nothing is written."""
    if os.path.exists("/etc/ceph/ceph.conf"):
        pytest.skip("this host has a ceph.conf: purge-new might reach a cluster")
    db = sparse(tmp_path, "db.img", 1024**3)
    put(db, 0, LABEL)
    before = fingerprint(unfinished), fingerprint(db)
    with pytest.raises(GanetiCephError, match=r"unregister osd\.7 that never booted"):
        volume.forget_unfinished({"id": "7", "fsid": FSID, "dev": unfinished, "db": db})
    assert (fingerprint(unfinished), fingerprint(db)) == before
