"""Ganeti's runtime dir (ganeti_ceph/ganeti/run.py): the paths in it, and where a non-packaged Ganeti keeps it."""

from __future__ import annotations

from ganeti_ceph.ganeti import run
from ganeti_ceph.rbd import access


def test_paths_match_ganeti() -> None:
    """pathutils.DISK_LINKS_DIR and hv_kvm's _CONF_DIR, _CTRL_DIR, _CHROOT_DIR under RUN_DIR."""
    assert run.RUN_DIR == "/var/run/ganeti"
    assert run.instance_disk_link("i1", 2) == "/var/run/ganeti/instance-disks/i1:2"
    assert run.kvm_conf_dir() == "/var/run/ganeti/kvm-hypervisor/conf"
    assert run.kvm_ctrl_dir() == "/var/run/ganeti/kvm-hypervisor/ctrl"
    assert run.kvm_qmp_socket("i1") == "/var/run/ganeti/kvm-hypervisor/ctrl/i1.qmp"
    assert run.kvm_chroot("i1") == "/var/run/ganeti/kvm-hypervisor/chroot/i1"
    assert run.instance_disk_link("i1", 0, "/r") == "/r/instance-disks/i1:0"


def test_run_dir_from_an_installed_ganetis_constants(tmp_path) -> None:
    tree = tmp_path / "share"
    (tree / "ganeti").mkdir(parents=True)
    (tree / "ganeti" / "_constants.py").write_text(f'LOCALSTATEDIR = "{tmp_path}/var"\n')
    absent = str(tmp_path / "absent")
    assert run.run_dirs(absent, [str(tree), str(tmp_path / "none")]) == [absent, f"{tmp_path}/var/run/ganeti"]
    assert run.run_dir(absent, [str(tree)]) == absent  # named, but not there
    (tmp_path / "var" / "run" / "ganeti").mkdir(parents=True)
    assert run.run_dir(absent, [str(tree)]) == f"{tmp_path}/var/run/ganeti"
    assert run.run_dir(str(tmp_path), [str(tree)]) == str(tmp_path)  # the default, when it is there


def test_qemu_keyring_sits_by_qemu_conf() -> None:
    assert access.QEMU_CONF == "/etc/ceph/ceph.conf"
    assert access.qemu_keyring("ganeti") == "/etc/ceph/ceph.client.ganeti.keyring"
