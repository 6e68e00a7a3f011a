"""testbed/os_boot.py without Ganeti: its scripts as Ganeti runs them (its environment, /usr/bin/python3),
on a file standing in for a kernelspace disk. The rbd URI path runs on the bed (tests/ganeti/test_guest_boot.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from testbed import os_boot

MiB = 2**20


@pytest.fixture
def os_dir(tmp_path) -> str:
    (tmp_path / "files").mkdir()
    files = {}
    for name, size in (("root.img", 2 * MiB), ("vmlinuz", 10), ("initrd.img", 10)):
        path = tmp_path / "files" / name
        path.write_bytes(os.urandom(size))
        files[name] = str(path)
    return os_boot.install(str(tmp_path / "os"), files)


def script(os_dir: str, action: str, env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """One OS script as Ganeti runs it: a reset environment, the OS directory as working directory."""
    return subprocess.run([os.path.join(os_dir, action)], input=stdin, capture_output=True, cwd=os_dir, timeout=60,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}, check=False)


def test_install_writes_an_api_20_os_with_its_files(os_dir: str) -> None:
    assert Path(os_dir, "ganeti_api_version").read_text() == "20\n"
    assert Path(os_dir, "variants.list").read_text() == "default\n"
    for action in os_boot.ACTIONS:
        assert os.access(os.path.join(os_dir, action), os.X_OK)
    assert {*os_boot.FILES, "os_boot.py"} <= set(os.listdir(os_dir))


def test_create_writes_the_root_image_at_the_start_of_the_disk(os_dir: str, tmp_path) -> None:
    disk = tmp_path / "disk"
    disk.write_bytes(b"\xff" * 4 * MiB)
    res = script(os_dir, "create", {"DISK_0_PATH": str(disk), "DISK_0_SIZE": "4"})
    assert res.returncode == 0, res.stderr
    root = Path(os_dir, "root.img").read_bytes()
    data = disk.read_bytes()
    assert data[:len(root)] == root and data[len(root):] == b"\xff" * (4 * MiB - len(root))


def test_create_refuses_a_disk_smaller_than_the_image_in_one_line(os_dir: str, tmp_path) -> None:
    disk = tmp_path / "disk"
    disk.write_bytes(b"")
    res = script(os_dir, "create", {"DISK_0_PATH": str(disk), "DISK_0_SIZE": "1"})
    assert res.returncode == 1 and disk.read_bytes() == b""
    assert res.stderr.decode() == "os boot: disk 0 must hold the 2 MiB root image: give it at least that\n"


def test_export_then_import_copies_the_whole_disk(os_dir: str, tmp_path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(5 * MiB + 123))
    dst.write_bytes(b"\0" * (5 * MiB + 123))
    out = script(os_dir, "export", {"EXPORT_DEVICE": str(src), "EXPORT_INDEX": "0"})
    assert out.returncode == 0 and out.stdout == src.read_bytes()
    res = script(os_dir, "import", {"IMPORT_DEVICE": str(dst), "IMPORT_INDEX": "0"}, stdin=out.stdout)
    assert res.returncode == 0, res.stderr
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize(("action", "env", "message"), [
    ("create", {"DISK_0_SIZE": "64"}, "Ganeti gave none of DISK_0_PATH, DISK_0_URI: is disk 0 attached?"),
    ("export", {}, "Ganeti gave none of EXPORT_DEVICE, EXPORT_DISK_URI: is disk 0 attached?"),
    ("import", {"IMPORT_DISK_URI": "rbd:pool-only"}, "cannot read disk URI 'rbd:pool-only': "
                                                     "want rbd:<pool>/<image>[:id=<client>]"),
])
def test_bad_input_is_one_line(os_dir: str, action: str, env: dict[str, str], message: str) -> None:
    res = script(os_dir, action, env)
    assert (res.returncode, res.stderr.decode()) == (1, f"os boot: {message}\n")


def test_rename_and_verify_do_nothing(os_dir: str) -> None:
    for action in ("rename", "verify"):
        assert script(os_dir, action, {}).returncode == 0
