"""The pure parts of OSDs on block devices: ceph-volume's argv, the boot drop-in, stable names, the state kept."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError, UsageError
from gnt_storage.deploy import devices, options, volume

OSD = {"id": "7", "dev": "/dev/disk/by-id/ata-X", "fsid": "f"}


def test_prepare_argv_plain_and_with_db_wal() -> None:
    assert volume.prepare_argv(OSD) == ["/usr/sbin/ceph-volume", "raw", "prepare", "--bluestore", "--no-tmpfs",
                                        "--data", "/dev/disk/by-id/ata-X", "--osd-id", "7"]
    argv = volume.prepare_argv({**OSD, "db": "/dev/disk/by-id/nvme-D", "wal": "/dev/disk/by-id/nvme-W"})
    assert argv[-4:] == ["--block.db", "/dev/disk/by-id/nvme-D", "--block.wal", "/dev/disk/by-id/nvme-W"]


def test_activate_argv_never_touches_systemd_or_tmpfs() -> None:
    argv = volume.activate_argv({**OSD, "db": "/dev/disk/by-id/nvme-D"}, str)
    assert argv[:3] == ["/usr/sbin/ceph-volume", "raw", "activate"]
    assert {"--no-systemd", "--no-tmpfs"} <= set(argv)
    assert argv[argv.index("--device") + 1] == OSD["dev"] and argv[argv.index("--osd-id") + 1] == "7"
    assert argv[-2:] == ["--block.db", "/dev/disk/by-id/nvme-D"]


def test_dropin_activates_as_root_before_every_start(tmp_path: os.PathLike) -> None:
    text = volume.dropin({**OSD, "db": "/dev/disk/by-path/pci-0000:00:1f.2-ata-2"})
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStartPre="))
    assert line.startswith("ExecStartPre=+/bin/sh -c ")  # "+": as root, outside the unit's sandbox
    assert '--device "$$(readlink -f "/dev/disk/by-id/ata-X")"' in line
    assert volume.DROPIN.format("7") == "/etc/systemd/system/ceph-osd@7.service.d/ganeti-ceph-volume.conf"
    # What systemd runs ("$$" -> "$"), run by sh for real with links standing for by-id names.
    link, target = os.path.join(str(tmp_path), "by-id-X"), os.path.join(str(tmp_path), "sdq")
    open(target, "w").close()
    os.symlink(target, link)
    script = shlex.split(volume.dropin({**OSD, "dev": link}).split("ExecStartPre=+", 1)[1].replace("$$", "$"))
    assert script[:2] == ["/bin/sh", "-c"]
    out = subprocess.run(["/bin/sh", "-c", script[2].replace("exec ", "exec echo ", 1)], capture_output=True,
                         text=True, check=True, timeout=10).stdout.split()
    assert out == volume.activate_argv({**OSD, "dev": link})
    assert out[out.index("--device") + 1] == target


def test_dropin_refuses_a_name_a_unit_cannot_carry() -> None:
    name = "/dev/disk/by-id/usb-My\\x20Disk"  # udev's escaped space
    with pytest.raises(GanetiCephError) as exc:
        volume.dropin({**OSD, "dev": name})
    assert exc.value.message.startswith(f"cannot name {name} in a systemd unit")


@pytest.fixture
def disk_dir(tmp_path: os.PathLike) -> str:
    """A /dev/disk lookalike: by-id and by-path links to two "devices" (files)."""
    root = str(tmp_path)
    for name in ("sdb", "sdc"):
        open(os.path.join(root, name), "w").close()
    for sub, link, target in (("by-id", "ata-DISK1", "sdb"), ("by-path", "pci-0:1", "sdb"),
                              ("by-path", "pci-0:2", "sdc")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        os.symlink(os.path.join(root, target), os.path.join(root, sub, link))
    return root


def test_stable_name_prefers_by_id(disk_dir: str) -> None:
    assert devices.stable_name(os.path.join(disk_dir, "sdb"), disk_dir) == os.path.join(disk_dir, "by-id",
                                                                                         "ata-DISK1")
    assert devices.stable_name(os.path.join(disk_dir, "sdc"), disk_dir) == os.path.join(disk_dir, "by-path",
                                                                                         "pci-0:2")


def test_stable_name_keeps_a_stable_name_as_given(disk_dir: str) -> None:
    name = os.path.join(disk_dir, "by-path", "pci-0:1")
    assert devices.stable_name(name, disk_dir) == name


def test_no_stable_name_is_refused_in_one_line(disk_dir: str, tmp_path: os.PathLike) -> None:
    lone = os.path.join(str(tmp_path), "sdd")
    open(lone, "w").close()
    assert devices.stable_name(lone, disk_dir) is None
    with pytest.raises(GanetiCephError, match="has no stable name under /dev/disk/by-id"):
        volume.with_stable_names({**OSD, "dev": lone})


def test_with_stable_names_uses_what_was_recorded_first() -> None:
    # Recorded at prepare: a renumbered /dev/sdb later does not move the OSD.
    osd = {**OSD, "dev": "/dev/sdb", "stable": {"dev": "/dev/disk/by-id/ata-X"}}
    assert volume.with_stable_names(osd)["dev"] == "/dev/disk/by-id/ata-X"


def test_merge_records_volumes_and_adds_the_bootstrap_key_once() -> None:
    state = {"osds": [{"id": "0", "uuid": "a"}, {"id": "1", "uuid": "b"}], "keys": {}}
    assert not volume.merge(state, {"osds": {}})
    assert volume.bootstrap_entry(state) == {}
    assert volume.merge(state, {"osds": {"1": {"volume": True}}})
    key = state["keys"][volume.BOOTSTRAP]
    assert volume.made_by_ceph_volume(state) == {"1"}
    assert volume.merge(state, {"osds": {"1": {"volume": True, "uuid": "c", "stable": {"dev": "/dev/x"}}}})
    assert state["osds"][1] == {"id": "1", "uuid": "c", "volume": True, "stable": {"dev": "/dev/x"}}
    assert not volume.merge(state, {"osds": {"1": {"volume": True, "uuid": "c"}}})
    assert state["keys"][volume.BOOTSTRAP] == key
    assert volume.bootstrap_entry(state) == {volume.BOOTSTRAP: (key, volume.BOOTSTRAP_CAPS)}


def test_db_wal_options_pair_with_disks_and_round_trip_through_tags() -> None:
    opts = options.parse(["ceph:disk=/dev/sdb,/dev/sdc,db=/dev/nvme0n1p1,/dev/nvme0n1p2,wal=/dev/nvme1n1p1,"
                          "/dev/nvme1n1p2,dmcrypt=no,osd_layout=raw"])
    assert opts.db == ("/dev/nvme0n1p1", "/dev/nvme0n1p2") and opts.wal[1] == "/dev/nvme1n1p2"
    assert options.from_tags(options.to_tags(opts)) == opts
    osds = [{"id": "0", "dev": "/dev/sdc"}, {"id": "1", "dev": "/dev/sdb"}]
    volume.attach_db_wal(osds, opts)
    assert osds[0] == {"id": "0", "dev": "/dev/sdc", "db": "/dev/nvme0n1p2", "wal": "/dev/nvme1n1p2"}
    assert osds[1]["db"] == "/dev/nvme0n1p1"


@pytest.mark.parametrize("spec, words", [
    ("ceph:dmcrypt=yes", "ceph:dmcrypt=yes is not supported: ceph-volume raw in Ceph 16 cannot reopen"),
    ("ceph:osd_layout=lvm", "ceph:osd_layout=lvm is not supported: ceph-volume lvm needs device-mapper"),
    ("ceph:db=dev/x", "ceph:db=dev/x is not an absolute device"),
    ("ceph:wal=/dev/a,/dev/a", "ceph:wal lists a device twice"),
])
def test_refused_volume_options(spec: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        options.parse([spec])


@pytest.mark.parametrize("spec, words", [
    ("ceph:disk=/dev/sdb,/dev/sdc,db=/dev/nvme0n1p1", "ceph:db names 1 device(s) for 2 disk(s)"),
    ("ceph:disk=/dev/sdb,wal=/dev/sdb", "/dev/sdb is named twice among ceph:disk, ceph:db and ceph:wal"),
])
def test_db_wal_must_match_the_disks(spec: str, words: str) -> None:
    with pytest.raises(UsageError) as exc:
        options.resolve(options.parse([spec]), ["a", "b", "c"])
    assert words in str(exc.value)


def test_ceph_volume_logs_reach_ceph_s_log_without_keys(tmp_path) -> None:
    """ceph-volume logs the `ceph-authtool --add-key <key>` it runs: what reaches its log is redacted."""
    key = "AQBjv0tnAAAAABAAk2TWh4ZVkGxBvCXwhRXCXw=="
    line = f"Running command: /usr/bin/ceph-authtool /var/lib/ceph/osd/ceph-1/keyring --add-key {key}\n"
    assert key not in runner.redact(line) and "--add-key <key redacted by ganeti-ceph>" in runner.redact(line)
    assert runner.redact("osd_uuid 7d3c... no key here\n") == "osd_uuid 7d3c... no key here\n"
    log = tmp_path / "ceph" / "ceph-volume.log"
    script = tmp_path / "fake-ceph-volume"
    script.write_text(f'#!/bin/sh\n[ "$1" = --log-path ] && echo "{line.strip()}" > "$2/ceph-volume.log"\n')
    script.chmod(0o755)
    volume._ceph_volume([str(script)], "a ceph-volume stand-in that only logs", 30, log=str(log))
    assert log.read_text() == runner.redact(line)
