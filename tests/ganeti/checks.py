"""Shared assertions for the Ganeti end-to-end tests: what Ceph, the nodes and QEMU show for an instance.

`expect_state` is the one check run after every step: the instance's images
exist with the right sizes and no snapshot or `.snap` image is left; only
the serving node watches them (nobody when stopped); kernelspace disks are
mapped on the primary only and no loop device of our cluster exists outside
a node's view; a KVM instance's QEMU runs on the primary only, with
`rbd:rbd/<vol>:id=ganeti` (userspace) or the instance-disks link to a loop
device (kernelspace) as its drives.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ganeti_ceph import procs
from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed import netns
from testbed.ganeti import Testbed

MiB = 1024**2
POOL = "rbd"
CLIENT = "ganeti"
NO_MAPPINGS: dict[str, list[str]] = {"mounts": [], "loops": []}
KVM_CTRL = "/var/run/ganeti/kvm-hypervisor/ctrl"
INSTANCE_DISKS = "/var/run/ganeti/instance-disks"
QMP_SCRIPT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
f = s.makefile("rw")
def answer():
    while True:
        msg = json.loads(f.readline())
        if "event" not in msg:
            return msg
answer()
for cmd in ({"execute": "qmp_capabilities"}, json.loads(sys.argv[2])):
    f.write(json.dumps(cmd) + "\\n")
    f.flush()
    msg = answer()
print(json.dumps(msg))
"""


@dataclass
class Inst:
    """An instance under test and what it should look like after the current step."""

    name: str
    access: str  # kernelspace | userspace
    hypervisor: str  # fake | kvm
    primary: int = 0
    running: bool = True
    sizes: dict[str, int] = field(default_factory=dict)  # volume -> MiB


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `probe` until it returns something truthy (and return that); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            assert value, f"timed out after {timeout:.0f} s waiting for {what}"
            return value
        time.sleep(0.2)


def failed(tb: Testbed, *argv: str, input: str | None = None) -> str:
    """Run a command on the master that must fail; its stdout and stderr."""
    res = tb.run(0, list(argv), check=False, input=input, timeout=180)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"{' '.join(argv)} should have failed:\n{out}"
    return out


def volumes(tb: Testbed, instance: str) -> list[str]:
    """The ExtStorage volume names (VOL_NAME) of the instance's disks, in disk order.

    `--static`: plain `gnt-instance info` runs the provider's attach, which maps a stopped kernelspace disk.
    """
    return re.findall(r"logical_id: \['rbd', '([^']+)'\]", tb.gnt("gnt-instance", "info", "--static", instance))


def fields(tb: Testbed, instance: str, *names: str) -> list[str]:
    """`gnt-instance list` fields of one instance (no attach is run)."""
    out = tb.gnt("gnt-instance", "list", "--no-headers", "--separator=|", "-o", ",".join(names), instance)
    return out.strip().split("|")


# -- Ceph ---------------------------------------------------------------------------------

def pool_state(admin: Config) -> dict[str, dict[str, Any]]:
    """Every image of the pool: size, snapshots, watcher IPs and metadata, read as the admin; plus the trash."""
    import rbd

    out: dict[str, dict[str, Any]] = {}
    with Session(admin) as s, s.ioctx(POOL) as io:
        for name in rbd.RBD().list(io):
            with rbd.Image(io, name, read_only=True) as img:
                out[name] = {"size": img.size(), "snaps": [x["name"] for x in img.list_snaps()],
                             "watchers": sorted(w["addr"].split(":")[0] for w in img.watchers_list()),
                             "meta": dict(img.metadata_list())}
        out["<trash>"] = {"entries": [e["name"] for e in rbd.RBD().trash_list(io)]}
    return out


def blocklist(admin: Config) -> set[str]:
    with Session(admin) as s:
        return {e["addr"] for e in s.mon_command("osd blocklist ls") or []}


def expect_ceph(tb: Testbed, admin: Config, inst: Inst) -> dict[str, dict[str, Any]]:
    """Images and sizes right, no snapshot anywhere, watchers only from the serving node (none when stopped)."""
    serving = {tb.addresses[inst.primary]} if inst.running else set()
    deadline = time.monotonic() + 10  # a closing QEMU or rbd-fuse may take a moment to drop its watch
    while True:
        state = pool_state(admin)
        watchers = {v: set(state[v]["watchers"]) for v in inst.sizes if v in state}
        if all(w == serving for w in watchers.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(w == serving for w in watchers.values()), f"watchers {watchers}; want {serving or 'none'}"
    trash = state.pop("<trash>")["entries"]
    for vol, mib in inst.sizes.items():
        assert vol in state, f"image {vol} of {inst.name} is missing"
        assert state[vol]["size"] == mib * MiB, f"{vol}: {state[vol]['size']} bytes, want {mib} MiB"
    assert [n for n in state if n.endswith(".snap")] == [], "a snapshot volume was left behind"
    assert {n: s["snaps"] for n, s in state.items() if s["snaps"]} == {}, "stray RBD snapshots"
    assert trash == [], f"images left in the RBD trash: {trash}"
    return state


# -- mappings -------------------------------------------------------------------------------

def expect_mappings(tb: Testbed, inst: Inst) -> None:
    """Kernelspace and running: the primary maps exactly its disks; otherwise no node maps anything."""
    views = [tb.mappings(i) for i in range(len(tb.nodes))]
    mapped = inst.running and inst.access == "kernelspace"
    for i, view in enumerate(views):
        if mapped and i == inst.primary:
            assert sorted(os.path.basename(m) for m in view["mounts"]) == sorted(inst.sizes), view
            assert len(view["loops"]) == len(inst.sizes), view
        else:
            assert view == NO_MAPPINGS, f"node{i} holds mappings: {view}"
    assert tb.leaked_loops() == sorted(loop for v in views for loop in v["loops"]), "a loop device outlived its node"


def disk_link(tb: Testbed, index: int, instance: str, disk: int = 0) -> str:
    """Where /var/run/ganeti/instance-disks/<instance>:<disk> on node `index` points ("" if absent)."""
    res = tb.run(index, ["readlink", f"{INSTANCE_DISKS}/{instance}:{disk}"], check=False)
    return res.stdout.strip()


def rbd_fuse_pids(tb: Testbed, index: int, volume: str = "") -> list[int]:
    """Host pids of the rbd-fuse processes on node `index` (of one volume, if given)."""
    ns = netns.pidns(tb.holder(index).pid) or ""
    argvs = {p: procs.cmdline(p) for p in netns.members(ns)}
    return [p for p, argv in argvs.items() if argv[:1] == ["rbd-fuse"] and (not volume or volume in argv)]


# -- QEMU -------------------------------------------------------------------------------------

def qemu_pids(tb: Testbed, index: int, instance: str) -> list[int]:
    """Host pids of the QEMU processes running `instance` on node `index`."""
    ns = netns.pidns(tb.holder(index).pid) or ""
    argvs = {p: procs.cmdline(p) for p in netns.members(ns)}
    return [p for p, argv in argvs.items()
            if argv and os.path.basename(argv[0]).startswith("qemu-system") and instance in argv]


def qemu_drives(tb: Testbed, index: int, instance: str) -> list[str]:
    """The `file=` of every -drive on the command line of the instance's QEMU on node `index`."""
    pids = qemu_pids(tb, index, instance)
    assert len(pids) == 1, f"node{index} runs {len(pids)} QEMU for {instance}"
    argv = procs.cmdline(pids[0])
    assert not any("/dev/loop" in a for a in argv), argv
    return [a.split(",")[0].removeprefix("file=") for prev, a in itertools.pairwise(argv) if prev == "-drive"]


def qmp(tb: Testbed, index: int, instance: str, command: str) -> Any:
    """Run one QMP command on the instance's QMP socket inside node `index`; its `return`."""
    res = tb.run(index, ["python3", "-c", QMP_SCRIPT, f"{KVM_CTRL}/{instance}.qmp",
                         json.dumps({"execute": command})], timeout=60)
    answer = json.loads(res.stdout)
    assert "return" in answer, answer
    return answer["return"]


def qemu_block_sizes(tb: Testbed, index: int, instance: str) -> dict[str, int]:
    """QMP query-block: each inserted image as its drive URI (rbd:pool/image:id=user) or path -> virtual size."""
    out = {}
    for dev in qmp(tb, index, instance, "query-block"):
        inserted = dev.get("inserted")
        if not inserted:
            continue
        name = inserted["image"]["filename"]
        if name.startswith("json:"):
            spec = json.loads(name[5:])["file"]
            assert spec["driver"] == "rbd", spec
            name = f"rbd:{spec['pool']}/{spec['image']}:id={spec['user']}"
        out[name] = inserted["image"]["virtual-size"]
    return out


def expect_qemu(tb: Testbed, inst: Inst) -> None:
    """A running KVM instance has one QEMU, on its primary, using its disks the way its access mode says."""
    for i in range(len(tb.nodes)):
        if not (inst.running and i == inst.primary):
            assert qemu_pids(tb, i, inst.name) == [], f"QEMU of {inst.name} runs on node{i}"
    if not inst.running:
        return
    drives = qemu_drives(tb, inst.primary, inst.name)
    if inst.access == "userspace":
        want = [f"rbd:{POOL}/{vol}:id={CLIENT}" for vol in inst.sizes]
        assert sorted(want[:len(drives)]) == sorted(drives), drives  # hot-plugged disks are not on the command line
        assert set(want) <= set(qemu_block_sizes(tb, inst.primary, inst.name)), "QEMU does not hold every disk"
        assert tb.mappings(inst.primary) == NO_MAPPINGS
    else:
        assert drives == [f"{INSTANCE_DISKS}/{inst.name}:{n}" for n in range(len(inst.sizes))], drives
        for n in range(len(inst.sizes)):
            loop = disk_link(tb, inst.primary, inst.name, n)
            assert re.fullmatch(r"/dev/loop[1-9][0-9]*", loop), f"disk {n} is {loop!r}, not a loop device > 0"
            assert loop in tb.mappings(inst.primary)["loops"]


def expect_state(tb: Testbed, admin: Config, inst: Inst) -> dict[str, dict[str, Any]]:
    """Everything above, plus what Ganeti itself says about the instance."""
    status, pnode, count = fields(tb, inst.name, "status", "pnode", "disk.count")
    assert status == ("running" if inst.running else "ADMIN_down"), status
    assert pnode == tb.node_names[inst.primary]
    assert int(count) == len(inst.sizes)
    state = expect_ceph(tb, admin, inst)
    expect_mappings(tb, inst)
    if inst.hypervisor == "kvm":
        expect_qemu(tb, inst)
    return state


def add(tb: Testbed, admin: Config, inst: Inst, *extra: str, start: bool = True) -> None:
    """`gnt-instance add` of a one-disk 256M instance on node `inst.primary`; checks the result."""
    hv = ["--hypervisor", inst.hypervisor] if not any(a.startswith(inst.hypervisor + ":") for a in extra) else []
    tb.gnt("gnt-instance", "add", "-t", "ext", "--disk", f"0:size=256M,provider=rbd,access={inst.access}",
           "-o", "noop+default", *hv, *extra, "-B", "memory=128M", "-n", tb.node_names[inst.primary],
           "--no-ip-check", "--no-name-check", *([] if start else ["--no-start"]), inst.name)
    inst.running = start
    inst.sizes = {vol: 256 for vol in volumes(tb, inst.name)}
    expect_state(tb, admin, inst)


def remove(tb: Testbed, admin: Config, inst: Inst) -> None:
    """`gnt-instance remove`: no image, mapping or QEMU of the instance is left anywhere."""
    tb.gnt("gnt-instance", "remove", "-f", "--shutdown-timeout=0", inst.name)
    state = pool_state(admin)
    assert [v for v in inst.sizes if v in state] == [], "remove left images"
    assert state["<trash>"]["entries"] == []
    for i in range(len(tb.nodes)):
        assert tb.mappings(i) == NO_MAPPINGS
        assert qemu_pids(tb, i, inst.name) == []
    assert tb.leaked_loops() == []


class KnownBug(AssertionError):
    """The symptom of a known, reported bug: tests expecting it are marked xfail(raises=KnownBug, strict=True),
    so any other failure on the way there still fails the test."""


def known_bug(ok: bool, symptom: str) -> None:
    if not ok:
        raise KnownBug(symptom)
