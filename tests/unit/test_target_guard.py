"""Who holds a mapped device (ganeti_ceph/rbd/target_guard.users), on fake /proc and /sys trees."""

from __future__ import annotations

import os
from pathlib import Path

from ganeti_ceph.rbd.target_guard import users


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
    assert users("/dev/loop3", proc, sys_block) == []


def test_users(tmp_path: Path) -> None:
    proc, sys_block = tree(tmp_path, holders=("dm-0",), mounted=True)
    fake_proc(tmp_path, 10, ["/usr/bin/qemu-system-x86_64", "-drive"], {3: "/dev/loop3", 4: "/dev/loop3"})
    assert users("/dev/loop3", proc, sys_block) == ["holder dm-0", "mount /mnt/x", "process 10 (qemu-system-x86_64)"]
