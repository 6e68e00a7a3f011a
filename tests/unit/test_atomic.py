"""ganeti_ceph.atomic: whole files at their final mode, never written through a planted link."""

import os
import stat

import pytest

from extstorage import install
from ganeti_ceph import atomic


def test_write_replaces_whole_file_at_its_mode(tmp_path) -> None:
    path = tmp_path / "key"
    path.write_text("old")
    old = os.umask(0)
    try:
        atomic.write(str(path), "secret\n", 0o600)
    finally:
        os.umask(old)
    assert path.read_text() == "secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    atomic.write(str(path), b"\x00\x01", 0o644)
    assert path.read_bytes() == b"\x00\x01" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["key"]


def test_planted_links_are_replaced_not_followed(tmp_path) -> None:
    """A symlink at the target or at the old fixed `<path>.tmp` name never leads the write elsewhere."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "conf"
    (tmp_path / "conf.tmp").symlink_to(victim)
    path.symlink_to(victim)
    atomic.write(str(path), "new")
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and path.read_text() == "new"


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")

    def crash(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        atomic.write(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_symlink_swaps_in_one_step(tmp_path) -> None:
    link = tmp_path / "dev"
    atomic.symlink("/dev/loop1", str(link))
    atomic.symlink("/dev/loop2", str(link))
    assert os.readlink(link) == "/dev/loop2" and os.listdir(tmp_path) == ["dev"]


def test_reinstall_does_not_write_through_a_planted_temp_link(tmp_path) -> None:
    """The provider script used to be written to a fixed `<script>.tmp`, following a symlink planted there."""
    target = install.install(str(tmp_path / "es"), "/usr/bin/python3", log_dir=str(tmp_path / "log"))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    os.symlink(victim, os.path.join(target, install.SCRIPT + ".tmp"))
    install.install(str(tmp_path / "es"), "/usr/bin/python3", log_dir=str(tmp_path / "log"))
    assert victim.read_text() == "precious" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not os.path.islink(os.path.join(target, install.SCRIPT))
