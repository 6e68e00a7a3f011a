"""The hook's pure parts: Ganeti's environment, the per-mode checks, who does what."""

import os

import pytest

from ganeti_ceph.config import Config
from gnt_storage import deploy
from hooks import checks, main
from hooks.env import Disk, parse, same_node

ENV = {
    "GANETI_HOOKS_PATH": "instance-migrate", "GANETI_HOOKS_PHASE": "pre", "GANETI_MASTER": "node0.t",
    "GANETI_INSTANCE_NAME": "inst1", "GANETI_INSTANCE_PRIMARY": "node0.t", "GANETI_OLD_PRIMARY": "node0.t",
    "GANETI_NEW_PRIMARY": "node1.t", "GANETI_INSTANCE_DISK_COUNT": "2",
    "GANETI_INSTANCE_DISK0_DEV_TYPE": "ext", "GANETI_INSTANCE_DISK0_PROVIDER": "rbd",
    "GANETI_INSTANCE_DISK0_ID": "u1.ext.disk0", "GANETI_INSTANCE_DISK0_SIZE": "1024",
    "GANETI_INSTANCE_DISK1_DEV_TYPE": "ext", "GANETI_INSTANCE_DISK1_PROVIDER": "other",
    "GANETI_INSTANCE_DISK1_ID": "u1.ext.disk1", "GANETI_INSTANCE_DISK1_SIZE": "512",
    "GANETI_INSTANCE_HV_use_chroot": "False", "PATH": "/sbin:/bin",
}


def test_parse_instance_env() -> None:
    h = parse(ENV)
    assert (h.hpath, h.phase, h.new_primary, h.old_primary) == ("instance-migrate", "pre", "node1.t", "node0.t")
    assert h.rbd_disks == (Disk(0, "rbd", "u1.ext.disk0", 1024),)
    assert h.hv["use_chroot"] == "False"


def test_disks_added_by_modify_show_in_post() -> None:
    env = {"GANETI_HOOKS_PATH": "instance-modify", "GANETI_HOOKS_PHASE": "post", "GANETI_INSTANCE_DISK_COUNT": "0",
           "GANETI_POST_INSTANCE_DISK_COUNT": "1", "GANETI_POST_INSTANCE_DISK0_DEV_TYPE": "ext",
           "GANETI_POST_INSTANCE_DISK0_PROVIDER": "rbd", "GANETI_POST_INSTANCE_DISK0_ID": "u2.ext.disk0"}
    assert [d.volume for d in parse(env).rbd_disks] == ["u2.ext.disk0"]


def test_same_node_is_exact() -> None:
    """Ganeti names nodes exactly (normalized: lower case, no final dot); a short name is another name."""
    assert same_node("a", "a") and same_node("Node0.GCB.test.", "node0.gcb.test")
    assert not same_node("node0.gcb.test", "node0") and not same_node("store1.rack-a", "store1.rack-b")
    assert not same_node("node0.t", "node1.t") and not same_node("", "")


CFG = Config(conf="/etc/ceph/ceph.conf", keyring="/etc/ceph/k", client_id="ganeti", mapper="fuse-loop")


def tree(tmp_path, files: list[str]) -> checks.Probe:
    for f in files:
        p = tmp_path / f.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        p.chmod(0o755)
    return checks.Probe(root=str(tmp_path), qemu_module_dirs=("/usr/lib/x86_64-linux-gnu/qemu",))


def test_userspace_needs_driver_conf_and_keyring(tmp_path) -> None:
    ok = tree(tmp_path, ["/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so", "/etc/ceph/ceph.conf",
                         "/etc/ceph/ceph.client.ganeti.keyring"])
    assert checks.userspace(CFG, ok) == []
    os.unlink(tmp_path / "usr/lib/x86_64-linux-gnu/qemu/block-rbd.so")
    os.unlink(tmp_path / "etc/ceph/ceph.client.ganeti.keyring")
    problems = checks.userspace(CFG, ok)
    assert "qemu-block-extra" in problems[0] and "ceph.client.ganeti.keyring" in problems[1]


def test_userspace_in_chroot(tmp_path) -> None:
    p = tree(tmp_path, ["/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so", "/etc/ceph/ceph.conf",
                        "/etc/ceph/ceph.client.ganeti.keyring", "/chroot/i1/etc/ceph/ceph.conf"])
    problems = checks.userspace(CFG, p, chroot="/chroot/i1")
    assert len(problems) == 1 and "inside the KVM chroot" in problems[0]


def test_kernelspace_mappers(tmp_path) -> None:
    p = tree(tmp_path, ["/usr/bin/rbd-fuse", "/usr/sbin/losetup", "/dev/fuse", "/dev/loop-control", "/usr/bin/rbd"])
    assert checks.kernelspace(CFG, p, True, ()) == []
    krbd = Config(conf="c", keyring="k", mapper="krbd", source="/etc/ganeti/ceph.yaml")
    problems = checks.kernelspace(krbd, p, False, ("layering", "journaling"))
    assert "no krbd" in problems[0] and "journaling" in problems[1]
    nbd = Config(conf="c", keyring="k", mapper="rbd-nbd")
    assert "rbd-nbd is missing" in checks.kernelspace(nbd, p, True, ())[0]


def test_run_does_nothing_without_rbd_disks() -> None:
    h = parse({**ENV, "GANETI_INSTANCE_DISK0_PROVIDER": "other"})

    def no_config() -> Config:
        raise AssertionError("no config needed")

    assert main.run(h, "node1.t", no_config) == 0


def test_drive_of_finds_userspace_and_kernelspace_drives() -> None:
    from hooks.qmp import drive_of

    blocks = [
        {"device": "floppy0"},
        {"device": "disk-aaa", "inserted": {"image": {"filename":
            'json:{"driver": "raw", "file": {"pool": "rbd", "image": "u1.ext.disk0", "driver": "rbd"}}'}}},
        {"device": "disk-bbb", "inserted": {"image": {"filename": "/var/run/ganeti/instance-disks/i1:1"}}},
    ]
    assert drive_of(blocks, "u1.ext.disk0", "i1", 0) == "disk-aaa"
    assert drive_of(blocks, "u1.ext.disk1", "i1", 1) == "disk-bbb"
    assert drive_of(blocks, "nope", "i1", 5) is None


def test_disk_grow_env() -> None:
    h = parse({**ENV, "GANETI_HOOKS_PATH": "disk-grow", "GANETI_HOOKS_PHASE": "post", "GANETI_DISK": "0",
               "GANETI_INSTANCE_HYPERVISOR": "kvm"})
    assert (h.grown_disk, h.hypervisor) == (0, "kvm")


@pytest.mark.parametrize(("hpath", "phase", "offline", "called"), [
    ("node-modify", "pre", "True", ("node_offline", "n9.t", 240.0)),
    ("node-modify", "post", "False", ("node_online", "n9.t")),
    ("node-add", "post", "", ("node_online", "n9.t")), ("node-remove", "pre", "", ("refuse_node_remove", "n9.t")),
    ("node-remove", "post", "", ("forget_node", "n9.t")), ("node-modify", "post", "True", ("node_stopped", "n9.t")),
])
def test_the_storage_lifecycle_is_reached_through_the_deployment_api(
        monkeypatch: pytest.MonkeyPatch, hpath: str, phase: str, offline: str, called: tuple | None) -> None:
    """The master's node hooks name the node and the step; gnt_storage.deploy does the rest."""
    calls: list[tuple] = []
    monkeypatch.setattr(deploy, "storage_group_kept", lambda: True)
    monkeypatch.setattr(deploy, "node_offline", lambda name, drain_timeout: calls.append(("node_offline", name,
                                                                                          drain_timeout)))
    for step in ("node_online", "node_stopped", "refuse_node_remove", "forget_node"):
        monkeypatch.setattr(deploy, step, lambda name, step=step: calls.append((step, name)))
    h = parse({"GANETI_HOOKS_PATH": hpath, "GANETI_HOOKS_PHASE": phase, "GANETI_OFFLINE": offline,
               "GANETI_OP_TARGET": "n9.t"})
    main.storage_node_hook(h, bound=300.0)
    assert calls == ([called] if called else [])


def test_no_storage_group_kept_means_no_lifecycle_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy, "storage_group_kept", lambda: False)

    def refuse(name: str) -> None:
        raise AssertionError("no step without a storage group")

    monkeypatch.setattr(deploy, "refuse_node_remove", refuse)
    main.storage_node_hook(parse({"GANETI_HOOKS_PATH": "node-remove", "GANETI_HOOKS_PHASE": "pre",
                                  "GANETI_NODE_NAME": "n9.t"}), bound=300.0)
