"""Is an OSD's disk empty, ours, or someone's? Real signatures on sparse files and loop devices.

Each signature is the real on-disk superblock (written here byte for byte,
or by the real tool) at its real offset, and libblkid (wipefs, blkid) must
find it: md 1.2 and bcache at 4 KiB and btrfs at 64 KiB are past the first
4 KiB that the old probe read. Every refusal also proves the device was not
touched (content hash and mtime unchanged, no OSD directory made).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator

import pytest

from ganeti_ceph.errors import GanetiCephError
from gnt_storage.deploy import devices, node

SIZE = 3 * 1024**3
OSD_UUID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
FSID = "11111111-2222-3333-4444-555555555555"


def sparse(tmp_path, name: str = "disk.img", size: int = SIZE) -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def put(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def fingerprint(path: str) -> tuple[str, int]:
    """Hash of every data extent (holes read as zeros and are skipped), and the mtime."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        end, pos = os.fstat(fd).st_size, 0
        while pos < end:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            stop = os.lseek(fd, pos, os.SEEK_HOLE)
            h.update(f"{pos}:".encode() + os.pread(fd, stop - pos, pos))
            pos = stop
    finally:
        os.close(fd)
    return h.hexdigest(), os.stat(path).st_mtime_ns


# -- real superblocks -------------------------------------------------------------

def md12_superblock(size: int = SIZE) -> bytes:
    """An mdadm 1.2 member superblock (struct mdp_superblock_1, 2 devices), checksummed as the kernel does."""
    sb = bytearray(256 + 2 * 2)
    struct.pack_into("<IIII", sb, 0, 0xA92B4EFC, 1, 0, 0)  # magic, major_version, feature_map, pad0
    sb[16:32] = bytes(range(16))  # set_uuid
    sb[32:64] = b"storage1:0".ljust(32, b"\0")  # set_name
    struct.pack_into("<iIQIi", sb, 72, 1, 0, size // 512 - 2048, 0, 2)  # level, layout, size, chunksize, raid_disks
    struct.pack_into("<QQQ", sb, 128, 2048, size // 512 - 2048, 8)  # data_offset, data_size, super_offset (sectors)
    struct.pack_into("<QI", sb, 208, 2**64 - 1, 0)  # resync_offset, sb_csum (0 while summing)
    struct.pack_into("<I", sb, 220, 2)  # max_dev
    struct.pack_into("<HH", sb, 256, 0, 1)  # dev_roles
    total = sum(struct.unpack_from(f"<{len(sb) // 4}I", sb))
    struct.pack_into("<I", sb, 216, (total & 0xFFFFFFFF) + (total >> 32) & 0xFFFFFFFF)
    return bytes(sb)


def crc64_we(data: bytes) -> int:
    crc = 2**64 - 1
    for byte in data:
        crc ^= byte << 56
        for _ in range(8):
            crc = ((crc << 1) ^ 0x42F0E1EBA9EA3693) & (2**64 - 1) if crc >> 63 else (crc << 1) & (2**64 - 1)
    return crc ^ (2**64 - 1)


def bcache_superblock() -> bytes:
    """A bcache backing-device superblock (struct cache_sb, no journal keys) with its crc64."""
    sb = bytearray(208)
    struct.pack_into("<QQ", sb, 8, 8, 1)  # offset (its own sector), version 1: backing device
    sb[24:40] = bytes.fromhex("c68573f64e1a45ca8265f57f48ba6d81")  # BCACHE_MAGIC
    sb[40:56], sb[56:72] = bytes(range(16)), bytes(range(16, 32))  # uuid, set_uuid
    struct.pack_into("<Q", sb, 184, 16)  # data_offset
    struct.pack_into("<Q", sb, 0, crc64_we(bytes(sb[8:])))
    return bytes(sb)


BTRFS_MAGIC_AT = (64 * 1024 + 0x40, b"_BHRfS_M")  # the first btrfs superblock's magic


# -- pure -------------------------------------------------------------------------

def test_label_uuid() -> None:
    assert devices.label_uuid(b"bluestore block device\n" + OSD_UUID.encode() + b"\nrest") == OSD_UUID
    assert devices.label_uuid(b"\0" * 64) is None


@pytest.mark.parametrize(("state", "up_from", "finished", "plan"), [
    ("empty", None, False, "mkfs"), ("empty", 7, False, "mkfs"),
    ("ours", None, False, "pending"),  # the master has not read the osdmap yet: touch nothing
    ("ours", 0, False, "redo"),  # unfinished and never booted: an interrupted first mkfs
    ("ours", 12, False, "refuse"),  # booted, yet its store is unfinished: look before anything is written
    ("ours", 12, True, "adopt"),  # booted: it may hold data, never zeroed
    ("ours", 0, True, "adopt"),  # finished, up_from 0 after `osd purge` + re-registration: still kept (review I, R4)
    ("ours", None, True, "adopt"),
    ("not usable: holds data (btrfs at 0x10040)", 0, False, "refuse"),
])
def test_osd_plan(state: str, up_from: int | None, finished: bool, plan: str) -> None:
    assert node.osd_plan(state, up_from, finished) == plan


def test_label_problems() -> None:
    osd = {"id": "3", "uuid": OSD_UUID, "fsid": FSID}
    good = {"osd_uuid": OSD_UUID, "whoami": "3", "ceph_fsid": FSID, "mkfs_done": "yes", "ready": "ready"}
    assert node.label_problems(good, osd) == []
    assert node.label_problems({**good, "ceph_fsid": "other"}, osd) == ["ceph_fsid 'other' (expected '" + FSID + "')"]
    assert [p.split()[0] for p in node.label_problems({"osd_uuid": OSD_UUID, "whoami": "3"}, osd)] == [
        "ceph_fsid", "mkfs_done", "ready"]


# -- sparse files -----------------------------------------------------------------

def test_zeroed_sparse_file_is_empty(tmp_path) -> None:
    assert devices.device_state(sparse(tmp_path), OSD_UUID) == "empty"


@pytest.mark.parametrize(("kind", "offset", "data"), [
    ("linux_raid_member", 4096, md12_superblock()),
    ("bcache", 4096, bcache_superblock()),
    ("btrfs", *BTRFS_MAGIC_AT),
], ids=["md-1.2", "bcache", "btrfs"])
def test_signature_past_the_first_4k_is_refused_and_untouched(tmp_path, kind: str, offset: int, data: bytes) -> None:
    path = sparse(tmp_path)
    put(path, offset, data)
    with open(path, "rb") as fh:
        assert not any(fh.read(4096))  # what the old probe read: all zeros
    before = fingerprint(path)
    state = devices.device_state(path, OSD_UUID)
    assert state.startswith("not usable: holds data (") and kind in state, state
    assert "wipefs -a" in state
    osd = {"id": "90210", "dev": path, "uuid": OSD_UUID, "fsid": FSID, "keyring": "", "up_from": 0}
    with pytest.raises(GanetiCephError, match=f"osd.90210: {path} is not usable: holds data.*{kind}"):
        node.mkfs_osd(osd, "ceph")
    assert fingerprint(path) == before
    assert not os.path.exists(node.data_dir("osd", "90210"))


def test_real_mkfs_ext4_is_refused(tmp_path) -> None:
    path = sparse(tmp_path)
    subprocess.run(["mkfs.ext4", "-q", "-F", path], check=True, capture_output=True, timeout=120)
    assert "ext4 at 0x438" in devices.device_state(path, OSD_UUID)


def test_unknown_data_at_the_start_is_refused(tmp_path) -> None:
    path = sparse(tmp_path)
    put(path, 0, b"ext4 data")  # no signature libblkid knows, still not empty
    assert devices.device_state(path, OSD_UUID).startswith("not usable: holds data (no known signature")


def test_swap_file_signature(tmp_path) -> None:
    path = sparse(tmp_path)
    subprocess.run(["mkswap", path], check=True, capture_output=True, timeout=60)
    assert "swap at " in devices.device_state(path, OSD_UUID)


def test_failing_probe_is_not_usable(tmp_path, monkeypatch) -> None:
    """No wipefs on PATH: the device is not proven empty, so it is not usable."""
    monkeypatch.setattr(devices, "ENV", {"PATH": str(tmp_path), "LC_ALL": "C"})
    state = devices.device_state(sparse(tmp_path), OSD_UUID)
    assert state.startswith("not usable: cannot prove it empty") and "wipefs" in state, state


# -- bluestore labels (a real OSD store, made by ceph-osd) -------------------------------

@pytest.fixture(scope="module")
def bluestore(tmp_path_factory) -> str:
    """A finished bluestore store of osd.7 (cluster FSID) on a 3 GiB sparse file."""
    if not shutil.which("ceph-osd"):
        pytest.fail("ceph-osd is not installed (make install)")
    tmp = tmp_path_factory.mktemp("bluestore")
    dev, data = sparse(tmp, "osd.img"), tmp / "osd"
    data.mkdir()
    (data / "block").symlink_to(dev)
    conf = tmp / "ceph.conf"
    conf.write_text(f"[global]\nfsid = {FSID}\n[osd]\nosd_objectstore = bluestore\nbluestore_block_create = false\n"
                    "bluestore_fsck_on_mkfs = false\n")
    subprocess.run(["ceph-osd", "-c", str(conf), "--mkfs", "-i", "7", "--osd-uuid", OSD_UUID, "--osd-data", str(data),
                    "--no-mon-config", "--log-file", str(tmp / "log")], check=True, capture_output=True, timeout=120)
    return dev


def test_bluestore_label(bluestore: str) -> None:
    assert devices.device_state(bluestore, OSD_UUID) == "ours"
    assert devices.device_state(bluestore, "another-uuid") == f"not usable: holds another OSD ({OSD_UUID})"


def test_a_finished_store_is_never_zeroed_before_the_osdmap_is_read(bluestore: str) -> None:
    """A finished store of ours is adopted without waiting for the osdmap (it is kept whatever the map
    says); here its label names another OSD id, so adoption refuses: nothing written either way."""
    before = fingerprint(bluestore)
    osd = {"id": "90211", "dev": bluestore, "uuid": OSD_UUID, "fsid": FSID, "keyring": ""}
    with pytest.raises(GanetiCephError, match="refusing to adopt or overwrite"):
        node.mkfs_osd(osd, "ceph")
    assert fingerprint(bluestore) == before
    assert not os.path.exists(node.data_dir("osd", "90211"))


def test_booted_store_with_a_mismatching_label_is_refused_not_zeroed(bluestore: str) -> None:
    """Ours by uuid but the label names another OSD id: adoption refuses, nothing written."""
    before = fingerprint(bluestore)
    osd = {"id": "90212", "dev": bluestore, "uuid": OSD_UUID, "fsid": FSID, "keyring": "", "up_from": 5}
    with pytest.raises(GanetiCephError) as exc:
        node.mkfs_osd(osd, "ceph")
    assert "whoami '7' (expected '90212')" in exc.value.message
    assert "refusing to adopt or overwrite" in exc.value.message
    assert fingerprint(bluestore) == before
    assert not os.path.exists(node.data_dir("osd", "90212"))


# -- the kernel's view: loop devices, partitions, mounts -------------------------------------

@contextlib.contextmanager
def loop(path: str, *flags: str) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    res = subprocess.run(["losetup", "--find", "--show", *flags, path], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        pytest.skip(f"no free loop device ({res.stderr.strip()}); this host has only 8")
    dev = res.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, timeout=30)


def test_file_backing_a_loop_device_is_in_use(tmp_path) -> None:
    path = sparse(tmp_path)
    with loop(path) as dev:
        assert devices.device_state(path, OSD_UUID) == f"in use: backs {dev}"
        assert devices.device_state(dev, OSD_UUID) == "empty"  # the device itself: nothing on it


def test_md_superblock_on_a_loop_device_is_refused(tmp_path) -> None:
    path = sparse(tmp_path)
    put(path, 4096, md12_superblock())
    with loop(path) as dev:
        before = fingerprint(path)
        state = devices.device_state(dev, OSD_UUID)
        assert "linux_raid_member at 0x1000" in state, state
        assert fingerprint(path) == before


def test_partitioned_loop_device_is_refused(tmp_path) -> None:
    path = sparse(tmp_path)
    subprocess.run(["parted", "-s", path, "mklabel", "gpt", "mkpart", "data", "1MiB", "100MiB"], check=True,
                   capture_output=True, timeout=60)
    with loop(path, "--partscan") as dev:
        # This kernel leaves the scan to udev (absent here): partx adds the partition as udev would.
        subprocess.run(["partx", "-a", dev], check=False, capture_output=True, timeout=30)
        state = devices.device_state(dev, OSD_UUID)
        assert state.startswith("not usable: has partitions (") and os.path.basename(dev) + "p1" in state, state


def test_mounted_loop_device_is_in_use(tmp_path) -> None:
    path = sparse(tmp_path)
    subprocess.run(["mkfs.ext4", "-q", "-F", path], check=True, capture_output=True, timeout=120)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop(path) as dev:
        subprocess.run(["mount", dev, str(mnt)], check=True, capture_output=True, timeout=60)
        try:
            assert devices.device_state(dev, OSD_UUID) == f"in use: mounted on {mnt}"
        finally:
            subprocess.run(["umount", str(mnt)], check=True, timeout=60)


def test_wipefs_json_parsing(tmp_path) -> None:
    """Both probes agree on a real btrfs magic; the list names each signature once."""
    path = sparse(tmp_path)
    put(path, *BTRFS_MAGIC_AT)
    assert devices.signatures(path) == ["btrfs at 0x10040"]
    out = subprocess.run(["wipefs", "--no-act", "--json", path], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["signatures"][0]["type"] == "btrfs"


def test_a_finished_store_is_never_zeroed_even_with_up_from_0(bluestore: str, tmp_path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """After `ceph osd purge` and a re-registration a booted OSD has up_from 0 again: its finished store
    (label mkfs_done) is adopted, never zeroed (review I, R4). The test stops before prime-osd-dir."""
    before = fingerprint(bluestore)
    monkeypatch.setattr(node, "data_dir", lambda kind, ident: str(tmp_path / f"{kind}-{ident}"))

    def stop(argv: list[str], what: str) -> None:
        raise GanetiCephError(f"stopped by the test before {what}")

    monkeypatch.setattr(node, "_ceph", stop)
    osd = {"id": "7", "dev": bluestore, "uuid": OSD_UUID, "fsid": FSID, "keyring": "", "up_from": 0}
    with pytest.raises(GanetiCephError, match=r"before restore the directory of osd\.7"):
        node.mkfs_osd(osd, "ceph")
    assert fingerprint(bluestore) == before, "the finished store was written"
