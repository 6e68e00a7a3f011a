"""The target guard (ganeti_ceph/rbd/target_guard.py): who holds a mapped device, on fake /proc and /sys
trees, and what its watch does with a mapping, on a fake mapper."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ganeti_ceph import atomic
from ganeti_ceph.config import Config
from ganeti_ceph.rbd import target_guard
from ganeti_ceph.rbd.mappers import Mapper, Target
from ganeti_ceph.rbd.target_guard import users

T = Target("f5", "rbd", "vol.ext.disk0")


def fake_proc(root: Path, pid: int, argv: list[str], fds: dict[int, str]) -> None:
    d = root / "proc" / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    for fd, target in fds.items():
        os.symlink(target, d / "fd" / str(fd))


def tree(tmp_path: Path, holders: tuple[str, ...] = (), mounted: bool = False) -> tuple[str, str]:
    sys_block = tmp_path / "sys"
    (sys_block / "loop3" / "holders").mkdir(parents=True)
    (sys_block / "loop3" / "dev").write_text("7:3\n")
    for h in holders:
        (sys_block / "loop3" / "holders" / h).mkdir()
    (tmp_path / "proc" / "self").mkdir(parents=True)
    mount = "36 25 7:3 / /mnt/x rw - ext4 /dev/loop3 rw\n" if mounted else ""
    (tmp_path / "proc" / "self" / "mountinfo").write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n" + mount)
    return str(tmp_path / "proc"), str(sys_block)


def test_unused(tmp_path: Path) -> None:
    proc, sys_block = tree(tmp_path)
    fake_proc(tmp_path, 10, ["/usr/bin/qemu-system-x86_64"], {3: "/dev/loop4", 4: "/dev/loop30"})
    fake_proc(tmp_path, 11, ["rbd-nbd", "map"], {3: "/dev/loop3"})  # a mapping's own daemon is no user
    assert users("/dev/loop3", proc, sys_block, serving=("rbd-nbd",)) == []


def test_users(tmp_path: Path) -> None:
    proc, sys_block = tree(tmp_path, holders=("dm-0",), mounted=True)
    fake_proc(tmp_path, 10, ["/usr/bin/qemu-system-x86_64", "-drive"], {3: "/dev/loop3", 4: "/dev/loop3"})
    assert users("/dev/loop3", proc, sys_block) == ["holder dm-0", "mount /mnt/x", "process 10 (qemu-system-x86_64)"]


class FakeMapper(Mapper):
    """A mapping of `dev` until unmapped; only what the guard asks of a mapper."""

    name = "fake"

    def __init__(self, cfg: Config, dev: str | None) -> None:
        super().__init__(cfg)
        self.dev = dev

    def find(self, t: Target) -> str | None:
        return self.dev

    def unmap_locked(self, t: Target) -> bool:
        self.dev = None
        return True


def guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str, deadline: float,
            dev: str | None = "/dev/loop3") -> tuple[Config, FakeMapper]:
    cfg = Config(conf="/c/ceph.conf", keyring="/c/k", mapper="fuse-loop", run_dir=str(tmp_path / "run"))
    mapper = FakeMapper(cfg, dev)
    monkeypatch.setattr(target_guard.mappers, "for_config", lambda c: mapper)
    if token:
        os.makedirs(os.path.dirname(target_guard.marker(cfg, T)))
        atomic.write(target_guard.marker(cfg, T), f"{token} {deadline:.0f}\n")
    return cfg, mapper


def test_guard_unmaps_an_unused_mapping_after_its_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_guard, "users", lambda dev, serving=(): [])
    cfg, mapper = guarded(tmp_path, monkeypatch, "tok", time.time() - 1)
    assert target_guard.watch(cfg, T, "tok", poll=0.01).startswith("unmapped /dev/loop3: no open followed")
    assert mapper.dev is None and not os.path.exists(target_guard.marker(cfg, T))


def test_guard_keeps_a_mapping_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_guard, "users", lambda dev, serving=(): ["process 7 (qemu)"])
    cfg, mapper = guarded(tmp_path, monkeypatch, "tok", time.time() - 1)
    assert target_guard.watch(cfg, T, "tok", poll=0.01) == "kept /dev/loop3: in use by process 7 (qemu)"
    assert mapper.dev == "/dev/loop3" and not os.path.exists(target_guard.marker(cfg, T))


def test_guard_ends_when_disarmed_rearmed_or_unmapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within its window the guard ends, unmapping nothing, once an open disarmed it, a later close re-armed it
    (another token) or a detach removed the mapping (then it drops its marker itself)."""
    later = time.time() + 3600
    cfg, mapper = guarded(tmp_path / "a", monkeypatch, "", later)
    assert target_guard.watch(cfg, T, "tok", poll=0.01) == "disarmed or re-armed"
    cfg, mapper = guarded(tmp_path / "b", monkeypatch, "other", later)
    assert target_guard.watch(cfg, T, "tok", poll=0.01) == "disarmed or re-armed" and mapper.dev == "/dev/loop3"
    cfg, mapper = guarded(tmp_path / "c", monkeypatch, "tok", later, dev=None)
    assert target_guard.watch(cfg, T, "tok", poll=0.01) == "no longer mapped"
    assert not os.path.exists(target_guard.marker(cfg, T))


def test_users_of_a_partition(tmp_path: Path) -> None:
    """nbd0p1 is a device of its own: a mount, holder or open fd of a partition holds the disk too
    (was: only the whole disk was looked at, and rbd-nbd unmap pulled a mounted partition away)."""
    proc, sys_block = tree(tmp_path)
    part = Path(sys_block) / "loop3" / "loop3p1"
    (part / "holders" / "dm-1").mkdir(parents=True)
    (part / "dev").write_text("259:1\n")
    (Path(sys_block) / "loop3" / "queue").mkdir()  # not a partition
    with open(Path(proc) / "self" / "mountinfo", "a") as fh:
        fh.write("37 25 259:1 / /srv/p1 rw - ext4 /dev/loop3p1 rw\n")
    fake_proc(tmp_path, 12, ["/bin/dd"], {5: "/dev/loop3p1"})
    fake_proc(tmp_path, 13, ["/bin/cat"], {5: "/dev/loop30p1"})  # another disk's partition
    assert users("/dev/loop3", proc, sys_block) == ["holder dm-1", "mount /srv/p1", "process 12 (dd)"]
