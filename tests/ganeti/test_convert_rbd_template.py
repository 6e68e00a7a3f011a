"""gnt-storage rbd-convert of Ganeti's own `-t rbd` instances, on real Ganeti: through a carrier `-t ext`
instance whose disks adopt the images, detached from it and attached to the instance in place of its rbd disks;
no data copied, names and modes kept; a run killed after a step is finished by a rerun.

What could not run here as in production: Ganeti's RADOSBlockDevice maps every disk with the kernel's rbd module
(`rbd map`), which this machine's kernel lacks. The nodes get, for this module's tests only, an `rbd` command
that stands in for krbd (testbed/krbd_standin.py: map/showmapped/unmap through rbd-fuse and a loop device; every
other subcommand is the real /usr/bin/rbd) and the bed Ceph's admin keyring, as Ganeti's rbd CLI needs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.rbd.convert_template import JOURNAL_DIR, carrier_name
from ganeti_ceph.session import Session
from testbed import krbd_standin
from testbed.ganeti import Testbed
from tests.ganeti.test_access_switch import MiB, disks, held, images, io, no_leaks, wipe_on
from tests.ganeti.test_convert import checksum, rbd_convert, runs_through_ours

SIZES = (256, 64)
TEMPLATES = "ext,file,rbd,diskless"


@pytest.fixture(scope="module")
def rbd_template(testbed: Testbed, ceph_admin: Config) -> Iterator[None]:
    """Ganeti's rbd template enabled (pool rbd), the krbd stand-in on every node; all undone after."""
    for i in range(len(testbed.nodes)):
        krbd_standin.install(testbed, i, ceph_admin.keyring)
    testbed.gnt("gnt-cluster", "modify", f"--enabled-disk-templates={TEMPLATES}",
                f"--ipolicy-disk-templates={TEMPLATES}", "-D", "rbd:pool=rbd")
    try:
        yield
    finally:
        testbed.run(0, ["gnt-cluster", "modify", "--enabled-disk-templates=ext,file",
                        "--ipolicy-disk-templates=ext,file"], check=False)
        for i in range(len(testbed.nodes)):
            krbd_standin.uninstall(testbed, i)


@contextlib.contextmanager
def made_rbd_instance(tb: Testbed) -> Iterator[str]:
    """A stopped KVM instance (no OS) of Ganeti's rbd template with two named disks, the first userspace (Ganeti's
    KVM refuses read-only disks, so the mode carried is rw); removed after, with a carrier left behind."""
    name = f"rt{time.monotonic_ns() % 10**6}.gcb.test"
    short = name.split(".")[0]
    tb.gnt("gnt-instance", "add", "-t", "rbd", "--disk", f"0:size={SIZES[0]}M,name={short}-root,access=userspace",
           "--disk", f"1:size={SIZES[1]}M,name={short}-data", "--hypervisor", "kvm",
           "-o", "noop+default", "-B", "memory=128M", "-n", tb.node_names[0], "--no-ip-check",
           "--no-name-check", "--no-start", name, timeout=600)
    try:
        yield name
    finally:
        for n in (name, carrier_name(name)):
            tb.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", n],
                   check=False, timeout=600)


@pytest.fixture(scope="module")
def rbd_instance(testbed: Testbed, rbd_template: None) -> Iterator[str]:
    """One instance for the module's tests, in file order: each leaves it stopped with its disks deactivated
    and unconverted (the refusals assert nothing changed), the takeover test last, which converts it."""
    with made_rbd_instance(testbed) as name:
        yield name


@pytest.fixture
def fresh_rbd_instance(testbed: Testbed, rbd_template: None) -> Iterator[str]:
    with made_rbd_instance(testbed) as name:
        yield name


def write_through_ganeti(tb: Testbed, inst: str, index: int, data: bytes, offset: int) -> None:
    """Write through the device Ganeti's RADOSBlockDevice assembled (activate-disks prints node:disk/N:DEV)."""
    out = tb.gnt("gnt-instance", "activate-disks", inst)
    dev = next(line.rsplit(":", 1)[1] for line in out.splitlines() if f":disk/{index}:" in line)
    src = os.path.join(tb.workdir, "write.bin")  # the nodes see the host's files outside their overlays
    with open(src, "wb") as fh:
        fh.write(data)
    tb.run(0, ["dd", f"if={src}", f"of={dev}", "bs=1M", f"seek={offset // MiB}", "oflag=direct", "conv=notrunc",
               "status=none"])


def test_ganeti_makes_and_writes_an_rbd_template_instance(testbed: Testbed, ceph_admin: Config,
                                                          rbd_instance: str) -> None:
    tb, inst = testbed, rbd_instance
    ds = disks(tb, inst)
    assert [d["dev_type"] for d in ds] == ["rbd", "rbd"]
    vols = [d["logical_id"][1] for d in ds]
    assert set(vols) <= images(ceph_admin)
    data = os.urandom(MiB)
    write_through_ganeti(tb, inst, 0, data, MiB)
    tb.gnt("gnt-instance", "deactivate-disks", inst)
    assert hashlib.sha256(io(ceph_admin, vols[0], MiB, MiB)).digest() == hashlib.sha256(data).digest()
    no_leaks(tb)


def fill_through_ganeti(tb: Testbed, inst: str) -> list[str]:
    """Random data at the start and the end of each disk, written through Ganeti's devices; their checksums."""
    sums = []
    for k, size in enumerate(SIZES):
        head, tail = os.urandom(MiB), os.urandom(MiB)
        write_through_ganeti(tb, inst, k, head, 0)
        write_through_ganeti(tb, inst, k, tail, (size - 1) * MiB)
        sums.append(hashlib.sha256(head + tail).hexdigest())
    tb.gnt("gnt-instance", "deactivate-disks", inst)
    return sums


def state(tb: Testbed, inst: str) -> tuple[list, list[str], bool]:
    """The instance's disks, the instances Ganeti has, whether a journal exists: what a refusal must not change."""
    names = tb.gnt("gnt-instance", "list", "--no-headers", "-o", "name").split()
    journal = tb.run(0, ["sh", "-c", f"ls {JOURNAL_DIR} 2>/dev/null"], check=False).stdout.split()
    return [(d["dev_type"], d.get("name"), d["mode"], d["size"], d["logical_id"][1]) for d in disks(tb, inst)], \
        names, bool(journal)


def refused(tb: Testbed, inst: str, text: str) -> None:
    before = state(tb, inst)
    code, out, err = rbd_convert(tb, inst)
    assert code != 0 and out == "" and len(err.splitlines()) == 1 and text in err, err
    assert state(tb, inst) == before


def meta(admin: Config, vol: str, key: str, value: str | None) -> None:
    import rbd

    with Session(admin) as s, s.ioctx("rbd") as ioctx, rbd.Image(ioctx, vol) as img:
        if value is None:
            img.metadata_remove(key)
        else:
            img.metadata_set(key, value)


def rename(admin: Config, old: str, new: str) -> None:
    import rbd

    with Session(admin) as s, s.ioctx("rbd") as ioctx:
        rbd.RBD().rename(ioctx, old, new)


def test_refusals_change_nothing(testbed: Testbed, ceph_admin: Config, rbd_instance: str) -> None:
    tb, inst = testbed, rbd_instance
    vols = [d["logical_id"][1] for d in disks(tb, inst)]
    tb.gnt("gnt-instance", "deactivate-disks", inst)
    with wipe_on(tb):
        refused(tb, inst, "prealloc_wipe_disks is on")
    with held(ceph_admin, vols[1]):
        refused(tb, inst, f"image rbd/{vols[1]} is in use (watched by ")
    meta(ceph_admin, vols[0], "ganeti.uuid", "x")
    refused(tb, inst, "already carries the rbd provider's metadata")
    meta(ceph_admin, vols[0], "ganeti.uuid", None)
    rename(ceph_admin, vols[1], vols[1] + "-away")
    refused(tb, inst, f"image rbd/{vols[1]} does not exist")
    rename(ceph_admin, vols[1] + "-away", vols[1])
    carrier = carrier_name(inst)
    tb.gnt("gnt-instance", "add", "-t", "diskless", "-o", "noop+default", "--hypervisor", "kvm",
           "-n", tb.node_names[0], "--no-ip-check", "--no-name-check", "--no-start", "--no-install", carrier)
    refused(tb, inst, f"an instance named {carrier} exists")
    refused(tb, carrier, "has no disks")
    tb.gnt("gnt-instance", "remove", "-f", carrier)
    tb.gnt("gnt-instance", "start", inst)
    try:
        refused(tb, inst, "is running")
    finally:
        tb.gnt("gnt-instance", "shutdown", "--timeout=0", inst)
    tb.gnt("gnt-instance", "deactivate-disks", inst)
    no_leaks(tb)


def jobs_done(tb: Testbed) -> None:
    """Wait (bounded) until no Ganeti job is queued or runs: a killed tool's last job may still go on."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        busy = [s for s in tb.gnt("gnt-job", "list", "--no-headers", "-o", "status").split()
                if s in ("queued", "waiting", "running", "canceling")]
        if not busy:
            return
        time.sleep(0.5)
    raise AssertionError("Ganeti jobs still run after 300 s")


def killed_at(tb: Testbed, inst: str, marker: str) -> str:
    """Run rbd-convert and SIGKILL it (and the gnt-instance it runs) as soon as it says `marker`; its stderr."""
    proc = subprocess.Popen([*tb.enter_argv(0), tb.gnt_storage, "rbd-convert", inst], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=600)
    assert marker in "".join(seen), "".join(seen)
    jobs_done(tb)
    return "".join(seen)


# The steps the tool says it starts, in order. A kill right as one starts leaves the planned disks in one of three
# places the rerun's `observe` must find them: in the carrier (the first two), detached from every instance (the
# next three) or in the instance again (the last). `make test` kills at one step of each (the first, a middle one,
# the last); `make test-full` also at the others, on an instance of their own.
STEPS = ("adding carrier disk/1", "detaching disk/0", "removing the carrier", "removing the rbd entry",
         "attaching the ext disk", "naming disk/0")
EVERY_PLACE = (STEPS[0], STEPS[3], STEPS[5])


def test_rbd_template_disks_are_taken_over_with_their_data(testbed: Testbed, ceph_admin: Config,
                                                           rbd_instance: str) -> None:
    taken_over_killed_at(testbed, ceph_admin, rbd_instance, EVERY_PLACE)


@pytest.mark.full
def test_rbd_template_disks_are_taken_over_killed_at_the_other_steps(testbed: Testbed, ceph_admin: Config,
                                                                     fresh_rbd_instance: str) -> None:
    taken_over_killed_at(testbed, ceph_admin, fresh_rbd_instance, tuple(m for m in STEPS if m not in EVERY_PLACE))


def taken_over_killed_at(tb: Testbed, ceph_admin: Config, inst: str, markers: tuple[str, ...]) -> None:
    """Convert `inst`, killed right as each of `markers` starts, each rerun going on from what Ganeti and Ceph
    show; then everything is as one uninterrupted run leaves it."""
    before = disks(tb, inst)
    old = [d["logical_id"][1] for d in before]
    sums = fill_through_ganeti(tb, inst)
    code, out, err = rbd_convert(tb, inst, "--dry-run")
    assert code == 0 and "through the carrier instance" in out and old[0] in out, err
    started = time.monotonic()
    for marker in markers:
        err = killed_at(tb, inst, marker)
        code, out, err = rbd_convert(tb, inst, "--dry-run")
        assert code != 0 and "halfway converted" in err, err
    code, out, err = rbd_convert(tb, inst)
    assert out == f"{inst}: disk/0, disk/1 converted from Ganeti's rbd template to the rbd provider\n", err
    assert code == 0
    print(f"conversion of 2 disks killed {len(markers)} times and resumed: {time.monotonic() - started:.1f} s")
    after = disks(tb, inst)
    assert [(d["dev_type"], d.get("name"), d["mode"], d["size"]) for d in after] == \
        [("ext", d.get("name"), d["mode"], d["size"]) for d in before]
    assert [d["params"] for d in after] == [
        {"provider": "rbd", "access": "userspace", "pool": "rbd", "adopt_image": old[0]},
        {"provider": "rbd", "access": "kernelspace", "pool": "rbd", "adopt_image": old[1]}]
    vols = [d["logical_id"][1] for d in after]
    present = images(ceph_admin)
    assert set(vols) <= present and present.isdisjoint(old)
    assert [checksum(ceph_admin, v, s) for v, s in zip(vols, SIZES, strict=True)] == sums
    cfg = json.loads(tb.run(0, ["cat", "/var/lib/ganeti/config.data"]).stdout)
    attached = {u for i in cfg["instances"].values() for u in i["disks"]}
    assert set(cfg["disks"]) == attached, "a detached disk was left"
    assert carrier_name(inst) not in tb.gnt("gnt-instance", "list", "--no-headers", "-o", "name")
    assert state(tb, inst)[2] is False, "the journal was left"
    runs_through_ours(tb, ceph_admin, inst, vols, sums, old)
