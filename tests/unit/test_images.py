"""Pure parts of imported images (ganeti_ceph/rbd/images.py) and of `gnt-storage image` (gnt_storage/cli/image.py);
the file checks run the real qemu-img on real files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ganeti_ceph import config, runner
from ganeti_ceph.errors import ToolFailed, UsageError
from ganeti_ceph.rbd import images, volumes
from ganeti_ceph.rbd.images import ImageInfo
from gnt_storage.cli import _listing
from gnt_storage.cli import image as cli

MIB = 1024 * 1024


def cfg(tmp_path: Path, **extra: str) -> config.Config:
    for f in ("ceph.conf", "keyring"):
        (tmp_path / f).write_text("")
    return config.parse({"conf": str(tmp_path / "ceph.conf"), "keyring": str(tmp_path / "keyring"),
                         "client": "ganeti", **extra})


def test_rbd_target_names_paths_never_a_key(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    target = images.rbd_target(c, "rbd", "debian.import-0a1b")
    assert target.startswith("rbd:rbd/debian.import-0a1b:id=ganeti:")
    assert f":conf={c.conf}:" in target and f":keyring={c.keyring}:" in target
    assert ":key=" not in target and "secret" not in target
    assert ":client_mount_timeout=10:rados_osd_op_timeout=30" in target


def test_qemu_escape_keeps_colons_and_backslashes_inside_a_value() -> None:
    assert images.qemu_escape("/etc/ceph:x\\y") == "/etc/ceph\\:x\\\\y"


def test_copy_timeout_grows_with_size_and_is_bounded() -> None:
    small, big = images.copy_timeout(MIB), images.copy_timeout(10 * 1024 * MIB)
    assert images.COPY_BASE_S < small < big
    assert big == images.COPY_BASE_S + 10 * 1024 / images.COPY_MIB_PER_S
    assert images.copy_timeout(1 << 60) == config.MAX_SECONDS


def test_progress_steps_report_each_ten_percent_once() -> None:
    steps, last = images.progress_steps("    (0.00/100%)\r    (9.99/100%)\r", 0)
    assert (steps, last) == ([], 0)
    steps, last = images.progress_steps("    (10.01/100%)\r    (35.50/100%)\r", last)
    assert (steps, last) == ([10, 20, 30], 30)
    assert images.progress_steps("    (39.00/100%)\r", last) == ([], 30)
    assert images.progress_steps("(100.00/100%)\r\n", last) == ([40, 50, 60, 70, 80, 90, 100], 100)
    assert images.progress_steps("no progress here", 40) == ([], 40)


def test_source_of_accepts_raw_and_qcow2_only() -> None:
    assert images.source_of({"format": "qcow2", "virtual-size": 5 * MIB}, "/x") == images.Source("/x", "qcow2",
                                                                                                  5 * MIB)
    with pytest.raises(UsageError, match="is a vmdk image, not raw or qcow2"):
        images.source_of({"format": "vmdk", "virtual-size": MIB}, "/x")
    with pytest.raises(UsageError, match="empty image"):
        images.source_of({"format": "raw", "virtual-size": 0}, "/x")


def test_check_name_leaves_room_for_the_temporary_suffix() -> None:
    assert images.check_name("debian-12.gold") == "debian-12.gold"
    assert len(f"{'a' * images.MAX_NAME}.import-0a1b2c3d") <= 200
    with pytest.raises(UsageError, match="longer than"):
        images.check_name("a" * (images.MAX_NAME + 1))
    with pytest.raises(UsageError, match="invalid image name"):
        images.check_name("Debian")


def test_parse_record_reads_only_json_objects() -> None:
    assert images.parse_record('{"state": "ready"}') == {"state": "ready"}
    for raw in (None, "", "[1]", "not json", "3"):
        assert images.parse_record(raw) is None


def test_the_template_snapshot_is_not_one_the_provider_may_drop() -> None:
    """snapshots.drop_if_unused and the provider's remove treat `ganeti-*` snapshots as theirs to remove."""
    assert not images.SNAP.startswith(volumes.OUR_SNAP_PREFIX)


def test_probe_refuses_missing_unreadable_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        images.probe(str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="not a readable file"):
        images.probe(str(tmp_path))
    with pytest.raises(UsageError, match="--format vmdk: give raw or qcow2"):
        images.probe(str(tmp_path), "vmdk")
    vmdk = str(tmp_path / "d.vmdk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", vmdk, "4M"], check=True, timeout=30)
    with pytest.raises(UsageError, match="is a vmdk image"):
        images.probe(vmdk)
    raw = tmp_path / "d.raw"
    raw.write_bytes(os.urandom(4096))
    with pytest.raises(UsageError, match="is not a qcow2 image qemu-img can read"):
        images.probe(str(raw), "qcow2")
    assert images.probe(str(raw)) == images.Source(str(raw), "raw", 4096)
    qcow2 = str(tmp_path / "d.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "3M"], check=True, timeout=30)
    assert images.probe(qcow2) == images.Source(qcow2, "qcow2", 3 * MIB)


def test_follow_streams_output_and_is_bounded() -> None:
    seen: list[str] = []
    runner.follow(["sh", "-c", "printf one; sleep 0.1; printf two"], "say", 10, seen.append)
    assert "".join(seen) == "onetwo"
    with pytest.raises(ToolFailed, match="did not finish") as late:
        runner.follow(["sleep", "30"], "wait", 0.3, seen.append)
    assert late.value.kind == "late"
    with pytest.raises(ToolFailed, match=r"failed \(exit 3\): bad"):
        runner.follow(["sh", "-c", "echo bad >&2; exit 3"], "fail", 10, seen.append)
    with pytest.raises(ToolFailed, match="not installed"):
        runner.follow(["/nonexistent/tool"], "run", 10, seen.append)


ROWS = [ImageInfo("debian", "rbd", 10240, "qcow2", "/srv/debian.qcow2", 0.0, ("rbd/a", "rbd/b")),
        ImageInfo("tiny", "rbd", 48, "raw", "/srv/tiny.raw", 86400.0, ())]


def test_list_table_in_the_gnt_style() -> None:
    rows = [cli.row(r) for r in ROWS]
    names = _listing.check_fields(",".join(cli.DEFAULT_FIELDS), cli.FIELDS, cli.DEFAULT_FIELDS)
    assert _listing.table(rows, names, cli.FIELDS) == [
        "Name   Pool  Size Format ImportedFrom      Clones Created",
        "debian rbd  10.0G qcow2  /srv/debian.qcow2      2 1970-01-01 00:00:00",
        "tiny   rbd    48M raw    /srv/tiny.raw          0 1970-01-02 00:00:00",
    ]
    names = _listing.check_fields("name,size,clone_list", cli.FIELDS, cli.DEFAULT_FIELDS)
    assert _listing.table(rows, names, cli.FIELDS, headers=False, separator="|") == ["debian|10240|rbd/a,rbd/b",
                                                                                     "tiny|48|"]
    assert _listing.check_fields("+clone_list", cli.FIELDS, cli.DEFAULT_FIELDS) == (*cli.DEFAULT_FIELDS,
                                                                                      "clone_list")
    with pytest.raises(UsageError, match="unknown field"):
        _listing.check_fields("name,colour", cli.FIELDS, cli.DEFAULT_FIELDS)


@pytest.mark.parametrize(("argv", "text"), [
    (["image", "list", "-o", "name,colour"], "--output: unknown field(s) colour"),
    (["image", "list", "--separator="], "--separator: give a non-empty separator"),
])
def test_list_refuses_bad_options_before_reading(argv: list[str], text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad list options are one UsageError line before any config or Ceph is read (no config exists here)."""
    from gnt_storage import cli as gnt_storage

    monkeypatch.setenv("GANETI_CEPH_CONFIG", "/nonexistent/ceph.yaml")
    with pytest.raises(UsageError) as err:
        gnt_storage.main(argv)
    assert text in err.value.message and "\n" not in err.value.message
