"""The node-local part: daemons found by argv, disks of instances, the instances hurt."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_collector import gather, node
from ganeti_ceph import procs
from ganeti_ceph.config import conf_fsid
from tests.unit.test_collector_report import captured, make

FACTS = node.Facts(name="vm", addresses=["127.0.0.1"])


@pytest.mark.parametrize("argv,expected", [
    (["ceph-osd", "-c", "/x/ceph.conf", "-i", "3"], ("osd.3", "/x/ceph.conf")),
    (["/usr/bin/ceph-osd", "-f", "--cluster", "ceph", "--id", "12", "--setuser", "ceph"],
     ("osd.12", "/etc/ceph/ceph.conf")),
    (["ceph-mon", "--conf=/y.conf", "--id=a"], ("mon.a", "/y.conf")),
    (["ceph-mgr", "-n", "mgr.x", "--cluster", "backup"], ("mgr.x", "/etc/ceph/backup.conf")),
])
def test_daemon_argv(argv: list[str], expected: tuple[str, str]) -> None:
    d = node.parse_daemon_argv(argv)
    assert d is not None and (d["name"], d["conf"]) == expected


@pytest.mark.parametrize("argv", [[], ["ceph-osd", "--mkfs"], ["ceph-fuse", "-i", "x"], ["bash", "-i", "1"]])
def test_not_a_daemon(argv: list[str]) -> None:
    assert node.parse_daemon_argv(argv) is None


def test_expected_daemons_from_crush_host_and_mon_addresses() -> None:
    raw = captured("two-osds-down")
    facts = node.Facts(name="vm.example.org", addresses=["127.0.0.1"],
                       processes=[{"name": "osd.0", "pid": 10, "rss_bytes": 1, "cpu_seconds": 0.5}])
    section = node.section(facts, raw, {})
    states = {d["name"]: d["running"] for d in section["daemons"]}
    assert states == {"mon.a": False, "osd.0": True, "osd.1": False, "osd.2": False}
    elsewhere = node.Facts(name="other", addresses=["192.0.2.9"])
    assert node.section(elsewhere, raw, {})["daemons"] == []


def runtime(*uris: str) -> list:
    """A Ganeti 3.0 KVM runtime file's JSON: [cmd, nics, hvparams, [[disk, link, uri], ...]]."""
    return [["qemu"], [], {}, [[{"dev_type": "ext"}, f"/var/run/ganeti/instance-disks/x:{i}", u]
                               for i, u in enumerate(uris)]]


def test_instance_disks_by_device_and_by_uri() -> None:
    facts = node.Facts(
        name="vm",
        mapped=[("rbd", "u1.ext.disk0", "/dev/loop3"), ("fast", "u2.ext.disk0", "/dev/loop4")],
        disk_links={"web:0": "/dev/loop3", "db:0": "/dev/loop4", "file:0": "/srv/ganeti/file-storage/f"},
        runtimes={"vm1": runtime("rbd:rbd/u3.ext.disk0:id=ganeti:conf=/etc/ceph/ceph.conf", ""),
                  "web": runtime("")},
    )
    disks = node.instance_disks(facts)
    assert [(d["instance"], d["index"], d["pool"], d["image"], d["access"]) for d in disks] == [
        ("db", 0, "fast", "u2.ext.disk0", "kernelspace"),
        ("vm1", 0, "rbd", "u3.ext.disk0", "userspace"),
        ("web", 0, "rbd", "u1.ext.disk0", "kernelspace"),
    ]
    sec = node.section(facts, None, {"rbd": "degraded", "fast": "ok"})
    assert sec["affected_instances"] == ["vm1", "web"]
    assert node.section(facts, None, {})["affected_instances"] == []  # unknown is not known bad


def test_affected_instances_named_in_the_status_message() -> None:
    facts = node.Facts(name="vm", addresses=["127.0.0.1"], mapped=[("rbd", "u1.ext.disk0", "/dev/loop3")],
                       disk_links={"web:0": "/dev/loop3"})
    status = make("osd-down", facts=facts)[0]["data"]["status"]
    assert status["code"] == 1 and status["message"].endswith("instances affected on this node: web")
    assert "instances affected" not in make("healthy", facts=facts)[0]["data"]["status"]["message"]


def test_gatherer_reads_links_and_runtimes(tmp_path: Path) -> None:
    run = tmp_path / "ganeti"
    (run / "instance-disks").mkdir(parents=True)
    (run / "kvm-hypervisor" / "conf").mkdir(parents=True)
    dev = tmp_path / "loop9"
    dev.write_text("")
    os.symlink(dev, run / "instance-disks" / "web:0")
    (run / "kvm-hypervisor" / "conf" / "vm1.runtime").write_text(json.dumps(runtime("rbd:rbd/img")))
    (run / "kvm-hypervisor" / "conf" / "broken.runtime").write_text("{")
    mapdir = tmp_path / "ceph" / "dev" / "f5" / "rbd"
    mapdir.mkdir(parents=True)
    os.symlink(dev, mapdir / "img0")
    os.symlink(dev, mapdir / "img0.tmp")
    assert gather.disk_links(str(run)) == {"web:0": str(dev)}
    assert list(gather.kvm_runtimes(str(run))) == ["vm1"]
    assert gather.mapped_links(str(tmp_path / "ceph"), "f5") == [("rbd", "img0", str(dev))]
    assert gather.mapped_links(str(tmp_path / "ceph"), None) == []
    assert gather.disk_links(str(tmp_path / "absent")) == {} and gather.kvm_runtimes(str(tmp_path)) == {}


def test_conf_fsid(tmp_path: Path) -> None:
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n\tfsid = 1234-abcd\n\tmon_host = x\n")
    assert conf_fsid(str(conf)) == "1234-abcd" and conf_fsid(str(tmp_path / "none")) is None


def test_sampler_measures_this_process() -> None:
    sampler = gather.ProcSampler()
    first = sampler.sample(os.getpid())
    sum(i * i for i in range(300000))
    second = sampler.sample(os.getpid())
    assert first and second and second["rss_bytes"] > 0 and second["cpu_seconds"] >= first["cpu_seconds"]
    assert second["cpu_window_s"] < first["cpu_window_s"]  # since the previous sample, not since start
    assert sampler.sample(2**22 + 12345) is None


# -- whose daemons and confs are trusted (defect 9) ---------------------------------------------

NOBODY = 65534
FSID = "f5f5f5f5-0000-4000-8000-hostile00000"


@pytest.fixture
def fakes() -> Iterator[tuple[Path, list[subprocess.Popen]]]:
    """A world-readable dir holding a copy of Python named ceph-mon (so /proc/PID/comm says
    ceph-mon), and the fake daemons started from it (killed at the end)."""
    d = Path(tempfile.mkdtemp(prefix="gct-F-fakemon-"))
    d.chmod(0o755)
    shutil.copy(os.path.realpath(sys.executable), d / "ceph-mon")
    children: list[subprocess.Popen] = []
    try:
        yield d, children
    finally:
        for c in children:
            c.kill()
            c.wait(10)
        shutil.rmtree(d)


def fake_mon(d: Path, children: list[subprocess.Popen], ident: str, conf: str, user: int | None = None) -> None:
    argv = [str(d / "ceph-mon"), "-I", "-S", "-c", "import time; time.sleep(120)", "--conf", conf, "-i", ident]
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, user=user, group=user,
                             extra_groups=[] if user is not None else None)
    children.append(child)
    deadline = time.monotonic() + 10
    while procs.cmdline(child.pid)[-2:] != ["-i", ident]:  # exec done
        assert time.monotonic() < deadline
        time.sleep(0.01)


def found(fsid: str, own_conf: str, bound: float = 10.0) -> set[str]:
    """Names ceph_processes reports, failing (not hanging) if it does not end within `bound`."""
    out: list[list[dict]] = []
    worker = threading.Thread(target=lambda: out.append(gather.ceph_processes(gather.ProcSampler(), fsid, own_conf)),
                              daemon=True)
    worker.start()
    worker.join(bound)
    assert out, f"ceph_processes did not return within {bound} s"
    return {p["name"] for p in out[0]}


def test_daemons_of_unprivileged_users_and_odd_confs_are_ignored(fakes: tuple[Path, list[subprocess.Popen]]
                                                                 ) -> None:
    d, children = fakes
    conf = d / "ceph.conf"
    conf.write_text(f"[global]\nfsid = {FSID}\n")
    theirs = d / "theirs.conf"
    theirs.write_text(f"[global]\nfsid = {FSID}\n")
    os.chown(theirs, NOBODY, NOBODY)
    fifo = d / "fifo"
    os.mkfifo(fifo)
    tag = f"h{os.getpid()}"
    fake_mon(d, children, f"{tag}root", str(conf))  # root's, a regular root-owned conf: counted
    fake_mon(d, children, f"{tag}nobody", str(conf), user=NOBODY)  # anyone can name a process ceph-mon
    fake_mon(d, children, f"{tag}nobodyfifo", str(fifo), user=NOBODY)
    fake_mon(d, children, f"{tag}theirconf", str(theirs))  # root's, but the conf is not root's
    fake_mon(d, children, f"{tag}fifo", str(fifo))  # root's, a FIFO: opening it would hang
    fake_mon(d, children, f"{tag}zero", "/dev/zero")  # root's, endless: reading it would grow without end
    try:
        names = {n for n in found(FSID, str(conf)) if tag in n}
    finally:
        with contextlib.suppress(OSError):  # release a reader stuck on the FIFO (before the fix)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert names == {f"mon.{tag}root"}
