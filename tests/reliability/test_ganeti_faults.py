"""Fault scenarios on the real 2-node Ganeti bed (doc/reliability.md): a node's link to Ceph cut during
live migration and during failover, and Ganeti jobs in parallel.

After each: every acknowledged write reads back intact from Ceph, no Ganeti
job ran past its bound, nothing (image, open record, watcher, rbd-fuse,
mount, loop device, run-dir link) is left that the instances' state does not
call for, and a dead primary is fenced before the new one opens the disk.

Job bound: every provider action and hook is bounded by `timeouts.action`,
set to ACTION seconds on both nodes for this module; a job that meets a cut
must fail at the first call that needs the lost link, so it too ends within
ACTION (gnt-job's start and end times).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.rbd import target_guard
from ganeti_ceph.rbd.fencing import FENCE_SECONDS
from ganeti_ceph.session import Session
from testbed import shared
from testbed.ganeti import Testbed
from tests.ganeti import checks
from tests.ganeti.checks import Inst
from tests.reliability import ganeti_faults as gf
from tests.reliability.ledger import Ledger, Row

ACTION = 60.0
# The target guard's window (ACTION + its slack), then the cut node's watch timing out in Ceph.
GUARD_S = ACTION + target_guard.SLACK + 45
ADMIN_KEYRING = "/etc/ceph/ceph.client.admin.keyring"
ROUNDS = 1  # of stop, start, migrate per instance in parallel-ganeti-jobs
INSTANCES = 3
VERIFY = ("gnt-cluster", "verify", "--ignore-errors=ENODESETUP")


@pytest.fixture(scope="module")
def gbed() -> Iterator[Testbed]:
    """The session's Ganeti bed (shared with tests/ganeti), every action bounded by ACTION seconds here."""
    with shared.session_bed() as tb:
        conf = "/etc/ganeti/ceph.yaml"
        for i in range(len(tb.nodes)):
            tb.run(i, ["sed", "-i.orig", f"s/^  action: .*/  action: {ACTION}/", conf])
        try:
            yield tb
        finally:
            for i in range(len(tb.nodes)):
                tb.run(i, ["mv", f"{conf}.orig", conf], check=False)


@pytest.fixture(scope="module")
def gadmin(gbed: Testbed) -> Config:
    return shared.admin()


@pytest.fixture
def images_before(gadmin: Config) -> set[str]:
    return set(checks.pool_state(gadmin)) - {"<trash>"}


def instance(tb: Testbed, admin: Config, name: str, access: str = "kernelspace", primary: int = 0,
             start: bool = True, hypervisor: str = "fake", alone: bool = True) -> Inst:
    """A one-disk instance; checked alone (checks.add) when it is the only one on the bed."""
    inst = Inst(f"{name}.gcb.test", access, hypervisor, primary=primary)
    if not alone:
        tb.gnt("gnt-instance", "add", "-t", "ext", "--disk", f"0:size=256M,provider=rbd,access={access}",
               "-o", "noop+default", "--hypervisor", hypervisor, "-B", "memory=128M", "-n", tb.node_names[primary],
               "--no-ip-check", "--no-name-check", inst.name)
        inst.sizes = {vol: 256 for vol in checks.volumes(tb, inst.name)}
        return inst
    checks.add(tb, admin, inst, start=start)
    return inst


def discard(tb: Testbed, admin: Config, inst: Inst) -> list[str]:
    """Whatever state a scenario left the instance in: gone, with its mappings on both nodes. A plain
    `gnt-instance remove` first; if that fails (its one line is returned), by force."""
    res = tb.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", inst.name], check=False, timeout=300)
    if res.returncode == 0 or "not known" in res.stdout + res.stderr:
        return []
    vols = list(inst.sizes)
    for i in range(len(tb.nodes)):
        for vol in vols:
            for pid in checks.rbd_fuse_pids(tb, i, vol):  # a fenced rbd-fuse never answers: end it first
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    tb.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", inst.name],
           check=False, timeout=180)
    for i in range(len(tb.nodes)):
        for vol in vols:
            tb.run(i, ["env", f"VOL_NAME={vol}", f"{tb.provider}/detach"], check=False, timeout=120)
        for mount in tb.mappings(i)["mounts"]:
            if any(vol in mount for vol in vols):
                tb.run(i, ["umount", "-l", mount], check=False)
        tb.run(i, ["rm", "-f", f"/var/run/ganeti/fake-hypervisor/{inst.name}",
                   f"{checks.INSTANCE_DISKS}/{inst.name}:0"], check=False)
    return [f"remove of {inst.name} failed: {(res.stdout + res.stderr).strip().splitlines()[-1:]}"]


def unfence(admin: Config, ip: str) -> None:
    """Lift every blocklist entry of `ip` (the fence and librbd's lock-break entries), as the admin."""
    with Session(admin) as s:
        for entry in s.mon_command("osd blocklist ls") or []:
            if entry["addr"].startswith(f"{ip}:"):
                s.mon_command("osd blocklist", blocklistop="rm", addr=entry["addr"])


def migrate_with_cut(tb: Testbed, inst: Inst, cut_node: int) -> tuple[int, str]:
    """`gnt-instance migrate` to node1, with `cut_node`'s route to Ceph cut once node1 has mapped the disk
    (one more loop device there: the pre hooks passed); the route comes back when the job has ended."""
    res: dict[str, object] = {}
    mapped = len(tb.mappings(1)["loops"])  # an earlier case's mapping may still wait for its guard
    thread = threading.Thread(target=lambda: res.update(r=tb.run(0, ["gnt-instance", "migrate", "-f", inst.name],
                                                                  check=False, timeout=600)))
    thread.start()
    try:
        checks.wait_for("node1 to map the disk",
                        lambda: len(tb.mappings(1)["loops"]) > mapped or not thread.is_alive(), 120)
        gf.cut_ceph(tb, cut_node)
        thread.join(600)
    finally:
        gf.cut_ceph(tb, cut_node, cut=False)
    r = res["r"]
    return r.returncode, r.stdout + r.stderr  # type: ignore[attr-defined]


def job_figures(tb: Testbed, since: int) -> tuple[float, list[str]]:
    """The longest instance or verify job since job `since`, and what is wrong with the failed ones."""
    found = [j for j in gf.jobs(tb, since) if j.summary.startswith(("INSTANCE_", "CLUSTER_VERIFY"))]
    unclean = [f"job {j.id} {j.summary}: {why}" for j in found if j.status == "error" and (why := gf.unclean(j))]
    return max((j.seconds for j in found), default=0.0), unclean


CUTS = {1: "target", 0: "source"}  # the node that loses Ceph mid-migration, by index


def test_link_cut_during_migration(gbed: Testbed, gadmin: Config, ledger: Ledger, images_before: set[str]) -> None:
    """node1 (the target) loses Ceph once node1 has mapped the disk of one instance migrating there, then
    node0 (the source) during another's: each job fails in one line within its bound, each instance runs
    on node0 as before with every acknowledged write and nobody fenced, node1 keeps nothing; with the
    route back the same migrations succeed and leave nothing behind. Ganeti reverts nothing after such a
    failure (no detach, no post hook): node1's unused mappings go when their guards' windows have passed
    (ganeti_ceph/rbd/target_guard.py). Both cases fail before either window is waited out, so the two
    windows (90 s each) overlap; the writers have ended before any cut."""
    tb = gbed
    insts = {cut: instance(tb, gadmin, f"rf-mig{cut}", alone=not n) for n, cut in enumerate(CUTS)}
    writers = {cut: gf.Writer(tb, 0, f"mig{cut}") for cut in CUTS}
    before = checks.blocklist(gadmin)
    lost: list[int] = []
    try:
        since = gf.last_job(tb)
        for cut, writer in writers.items():
            writer.start(checks.disk_link(tb, 0, insts[cut].name), 400)
        for writer in writers.values():
            writer.wait(120)
        for cut, inst in insts.items():
            rc, out = migrate_with_cut(tb, inst, cut)
            assert rc != 0, f"the migration passed a node without Ceph ({CUTS[cut]} cut):\n{out}"
            assert checks.fields(tb, inst.name, "status", "pnode") == ["running", tb.node_names[0]], CUTS[cut]
        fenced = checks.blocklist(gadmin) - before
        for cut, inst in insts.items():
            lost += gf.lost(gadmin, checks.POOL, next(iter(inst.sizes)), writers[cut].run, writers[cut].acked())
        stale = gf.settle(lambda: gf.leaks(tb, gadmin, list(insts.values()), images_before), GUARD_S)
        for cut, inst in insts.items():  # the route is back: the same moves work
            tb.gnt("gnt-instance", "migrate", "-f", inst.name)
            inst.primary = 1
            lost += gf.lost(gadmin, checks.POOL, next(iter(inst.sizes)), writers[cut].run, writers[cut].acked())
        leaks = gf.settle(lambda: gf.leaks(tb, gadmin, list(insts.values()), images_before))
        max_s, unclean = job_figures(tb, since)
    finally:
        for writer in writers.values():
            writer.stop()
        removal = [why for inst in insts.values() for why in discard(tb, gadmin, inst)]
        unfence(gadmin, tb.addresses[0])
    leaks += removal + gf.settle(lambda: gf.leaks(tb, gadmin, [], images_before))
    traces = gf.tracebacks(tb)
    ledger.record(Row("link-cut-migration", runs=len(CUTS), acked_writes=sum(len(w.acked()) for w in writers.values()),
                      lost=len(lost), max_s=max_s, bound_s=ACTION, leaks=len(stale) + len(leaks) + len(fenced),
                      tracebacks=len(traces)))
    assert (lost, fenced, leaks, unclean, traces) == ([], set(), [], [], []), (lost, fenced, leaks, unclean, traces)
    assert max_s <= ACTION, max_s
    assert stale == [], f"after the failed migrations: {stale}"


def test_link_cut_during_failover(gbed: Testbed, gadmin: Config, ledger: Ledger, images_before: set[str]) -> None:
    """node1 drops off the network (its only link down) while writing; the admin marks it offline and fails
    the instance over: node1 is fenced before node0 opens the disk, every write node1 acknowledged reads back,
    and when node1's link comes back its still-running writer cannot change a byte."""
    tb = gbed
    node1, ip1 = tb.node_names[1], tb.addresses[1]
    inst = instance(tb, gadmin, "rf-fo", primary=1)
    vol = next(iter(inst.sizes))
    writer = gf.Writer(tb, 1, "failover")
    with open(gadmin.keyring) as fh:  # lifting a fence takes the admin key (the node keys may only add one)
        tb.run(0, ["sh", "-ec", f"umask 077; cat > {ADMIN_KEYRING}"], input=fh.read())
    lost: list[int] = []
    try:
        since = gf.last_job(tb)
        writer.start(checks.disk_link(tb, 1, inst.name), 100_000)
        writer.wait_acked(50)
        gf.cut_link(tb, 1)
        acked_at_cut = len(writer.acked())
        tb.gnt("gnt-node", "modify", "-f", "--offline", "yes", node1)
        # --ignore-consistency asks "is the node offline?" even with -f, and only on a tty.
        res = tb.run(0, ["script", "-qec", f"gnt-instance failover -f --ignore-consistency {inst.name}",
                         "/dev/null"], input="y\n", check=False, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        inst.primary = 0
        fences = gf.fence_times(gadmin, FENCE_SECONDS)
        assert f"{ip1}:0/0" in fences, f"node1 was not fenced: {sorted(fences)}"
        record = checks.pool_state(gadmin)[vol]["meta"][f"{gf.OPEN_PREFIX}{tb.node_names[0]}"]
        opened = int(re.search(r'"since": (\d+)', record).group(1))  # type: ignore[union-attr]
        assert int(fences[f"{ip1}:0/0"]) <= opened, "node0 opened the disk before node1 was fenced"
        acked = writer.acked()
        lost = gf.lost(gadmin, checks.POOL, vol, writer.run, acked)
        nblocks = max(acked, default=0) + 64
        seen = gf.digest(gadmin, checks.POOL, vol, nblocks)
        gf.cut_link(tb, 1, cut=False)  # node1 is back on the wire, its writer and rbd-fuse still running
        time.sleep(5)
        assert gf.digest(gadmin, checks.POOL, vol, nblocks) == seen, "the fenced node1 changed the disk"
        lost += gf.lost(gadmin, checks.POOL, vol, writer.run, writer.acked())
        max_s, unclean = job_figures(tb, since)
    finally:
        gf.cut_link(tb, 1, cut=False)
        discard_on_node1(tb, inst, writer)
        res = tb.run(0, ["gnt-node", "modify", "-f", "--offline", "no", node1], check=False, timeout=300)
        if res.returncode != 0:  # the way back that always works, so later tests still have node1
            tb.gnt("gnt-node", "add", "--readd", "--no-ssh-key-check", node1)
        unfence(gadmin, ip1)
        tb.run(0, ["rm", "-f", ADMIN_KEYRING], check=False)
    leaks = gf.settle(lambda: gf.leaks(tb, gadmin, [inst], images_before))
    leaks += discard(tb, gadmin, inst)
    leaks += gf.settle(lambda: gf.leaks(tb, gadmin, [], images_before))
    traces = gf.tracebacks(tb)
    ledger.record(Row("link-cut-failover", runs=1, acked_writes=len(writer.acked()), lost=len(lost), max_s=max_s,
                      bound_s=ACTION, leaks=len(leaks), tracebacks=len(traces)))
    assert acked_at_cut >= 50
    assert (lost, leaks, unclean, traces) == ([], [], [], []), (lost, leaks, unclean, traces)
    assert max_s <= ACTION


def discard_on_node1(tb: Testbed, inst: Inst, writer: gf.Writer) -> None:
    """What the dead node1 still holds of the instance (a rebooted node would hold none of it): rbd-fuse first,
    which fails the writer's pending I/O so that it can end."""
    vols = list(inst.sizes)
    for vol in vols:
        for pid in checks.rbd_fuse_pids(tb, 1, vol):
            os.kill(pid, signal.SIGKILL)
    writer.stop()
    for vol in vols:
        tb.run(1, ["env", f"VOL_NAME={vol}", f"{tb.provider}/detach"], check=False, timeout=120)
    for mount in tb.mappings(1)["mounts"]:
        if any(vol in mount for vol in vols):
            tb.run(1, ["umount", "-l", mount], check=False)
    tb.run(1, ["rm", "-f", f"/var/run/ganeti/fake-hypervisor/{inst.name}",
               f"{checks.INSTANCE_DISKS}/{inst.name}:0"], check=False)


def test_parallel_ganeti_jobs(gbed: Testbed, gadmin: Config, ledger: Ledger, images_before: set[str]) -> None:
    """`gnt-cluster verify` loops while three instances (two kernelspace under the fake hypervisor, one
    userspace under KVM: the fake one cannot take userspace disks) stop, start and migrate at once: every
    job succeeds or fails in one clean line, no provider log holds a traceback, and once the instances are
    gone nothing is left."""
    tb = gbed
    insts = [instance(tb, gadmin, "rf-p1", alone=False), instance(tb, gadmin, "rf-p2", primary=1, alone=False),
             instance(tb, gadmin, "rf-p3", "userspace", hypervisor="kvm", alone=False)][:INSTANCES]
    assert gf.settle(lambda: gf.leaks(tb, gadmin, insts, images_before)) == []
    since = gf.last_job(tb)
    done = threading.Event()
    outputs: list[str] = []

    def verify_loop() -> None:
        while not done.is_set():
            res = tb.run(0, list(VERIFY), check=False, timeout=300)
            outputs.append(res.stdout + res.stderr)

    def life(inst: Inst) -> None:
        for _ in range(ROUNDS):
            for argv in (("gnt-instance", "stop", "--timeout=0"), ("gnt-instance", "start"),
                         ("gnt-instance", "migrate", "-f")):
                res = tb.run(0, [*argv, inst.name], check=False, timeout=300)
                outputs.append(res.stdout + res.stderr)

    threads = [threading.Thread(target=verify_loop)] + [threading.Thread(target=life, args=(i,)) for i in insts]
    try:
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join(900)
    finally:
        done.set()
        threads[0].join(300)
        removals = [line for inst in insts for line in discard(tb, gadmin, inst)]
    found = [j for j in gf.jobs(tb, since) if j.summary.startswith(("INSTANCE_", "CLUSTER_VERIFY"))]
    max_s, unclean = job_figures(tb, since)
    traces = gf.tracebacks(tb) + [o for o in outputs if "Traceback" in o]
    leaks = removals + gf.settle(lambda: gf.leaks(tb, gadmin, [], images_before))
    ledger.record(Row("parallel-ganeti-jobs", runs=len(found), max_s=max_s, bound_s=ACTION, leaks=len(leaks),
                      tracebacks=len(traces)))
    assert len(found) >= len(insts) * ROUNDS * 3, [j.summary for j in found]
    assert (unclean, traces, leaks) == ([], [], []), (unclean, traces, leaks)
    assert max_s <= ACTION, [(j.summary, j.seconds) for j in found if j.seconds > ACTION]
