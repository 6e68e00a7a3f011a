"""Faults on a real local Ceph cluster while a userspace and a kernelspace disk are written.

Each scenario: a userspace disk (librbd) and a kernelspace disk (fuse-loop
device, O_DIRECT + fsync; O_DIRECT alone when rbd-fuse is killed) are created, attached and opened through the
provider and written by verifying writers; the fault is injected; provider
calls run during it (each must end within timeouts.action); the fault is
healed; the writers must go on; then every acknowledged record is read back
through librbd, the disks are closed, detached and removed, and whatever is
left (mappings, mounts, loop devices, links, open records, lock owners,
watchers, processes) is a leak. One ledger row per scenario (doc/reliability.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import rbd

from ganeti_ceph import procs
from tests.reliability.bed import MONS, OSDS, PAUSE, Bed, Disk, Tally
from tests.reliability.ledger import Ledger

Calls = list[tuple[str, str, dict[str, str]]]


def probes(bed: Bed, probe: str, new: str) -> Calls:
    """The provider calls Ganeti may make while the fault lasts."""
    return [("create", new, {"VOL_SIZE": "64"}), ("attach", probe, {"EXTP_ACCESS": "userspace"}),
            ("grow", probe, {"VOL_SIZE": "64", "VOL_NEW_SIZE": str(next(bed.sizes))}),
            ("setinfo", probe, {"VOL_METADATA": "during a fault"}), ("open", probe, {"VOL_OPEN_EXCLUSIVE": "False"}),
            ("close", probe, {}), ("verify", probe, {}), ("detach", probe, {})]


def both_ways(bed: Bed, t: Tally, probe: str, new: str) -> None:
    """The probes through the agent and in-process at the same time."""
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(bed.calls, t, probes(bed, probe, new), agent) for agent in (True, False)]:
            done.result()


def begin(bed: Bed, t: Tally, flush: bool = True) -> tuple[list[Disk], str, str]:
    disks = [bed.disk(t, kernel=False), bed.disk(t, kernel=True, flush=flush)]
    probe = bed.new_volume(t, 64)
    t.failures += bed.progress(disks)
    return disks, probe, bed.prov.volume()


def finish(bed: Bed, t: Tally, disks: list[Disk], probe: str, new: str) -> None:
    """After the fault: writers go on, then everything is read back, closed, detached and removed."""
    t.failures += bed.progress(disks)
    for disk in disks:
        bed.retire(t, disk)
    bed.ok(t, "close", probe)
    bed.ok(t, "detach", probe)
    bed.remove(t, [d.vol for d in disks] + [probe, new])


def faulted(bed: Bed, t: Tally, inject: Callable[[], None], heal: Callable[[], None], hold: float) -> None:
    disks, probe, new = begin(bed, t)
    inject()
    started = time.monotonic()
    both_ways(bed, t, probe, new)
    time.sleep(max(0.0, hold - (time.monotonic() - started)))
    heal()
    finish(bed, t, disks, probe, new)


def test_osd_killed_and_restarted(bed: Bed, ledger: Ledger) -> None:
    with bed.scenario("OSD killed (SIGKILL), restarted", ledger.record) as t:
        faulted(bed, t, lambda: bed.kill(OSDS[0]), lambda: (bed.restart(OSDS[0]), bed.settled()), hold=3)


def test_monitors_paused_beyond_every_timeout(bed: Bed, ledger: Ledger) -> None:
    with bed.scenario("monitors paused (SIGSTOP) past every timeout", ledger.record) as t, \
            contextlib.ExitStack() as stack:
        faulted(bed, t, lambda: stack.enter_context(bed.paused(MONS)), lambda: (stack.close(), bed.settled()),
                hold=PAUSE)


def test_pool_quota_reached_then_lifted(bed: Bed, ledger: Ledger) -> None:
    def inject() -> None:
        bed.set_quota(1)
        bed.wait(bed.pool_full, 30, "the pool's full_quota flag")

    def heal() -> None:
        bed.set_quota(0)
        bed.wait(lambda: not bed.pool_full(), 30, "the pool's full_quota flag to clear")

    try:
        with bed.scenario("pool quota reached, then lifted", ledger.record) as t:
            faulted(bed, t, inject, heal, hold=4)
    finally:
        bed.set_quota(0)


def test_agent_killed_mid_call(bed: Bed, ledger: Ledger) -> None:
    """Calls through the agent are held mid-way (OSDs paused) when the agent is SIGKILLed: each
    caller gets one line within the bound, none re-runs the call, Ganeti's follow-ups clean up: a killed
    worker's watch and lock on the probe go at the next call (ganeti_ceph/rbd/clients.py), not after
    Ceph's 30 s watch timeout (seen before: 5 to 7 leaks in 3 of 10 runs)."""
    with bed.scenario("agent killed (SIGKILL) mid-call", ledger.record) as t:
        disks, probe, new = begin(bed, t)
        victim = bed.new_volume(t, 64)
        calls = [*probes(bed, probe, new), ("attach", victim, {"EXTP_ACCESS": "kernelspace"})]
        pid = bed.agent_pid()
        assert pid, "the agent is not running"
        with bed.paused(OSDS):
            runner = threading.Thread(target=bed.calls, args=(t, calls))
            runner.start()
            time.sleep(1.0)  # every call is now inside the agent, waiting on an OSD
            os.kill(pid, signal.SIGKILL)
            runner.join(60)
        bed.wait(lambda: not procs.alive(pid), 10, "the agent to die")
        bed.start_agent()
        # Ganeti's follow-ups after failed calls: deactivate the disk, remove what it may have made.
        bed.ok(t, "detach", victim)
        finish(bed, t, disks, probe, new)
        t.leaks += bed.held([victim])
        # The victim's rbd-fuse, killed with the worker, is not a recorded client: had it registered its
        # watch, the remove would be refused (counted above) until Ceph's watch timeout. Retried as
        # Ganeti would, so that the volume cannot spill into the next scenario's count.
        deadline = time.monotonic() + 45
        while (res := bed.call(t, "remove", victim)).rc != 0 and time.monotonic() < deadline:
            time.sleep(2)
        assert res.rc == 0, f"remove {victim} failed ({res.rc}): {res.stderr}"


def readable(dev: str) -> bool:
    """A block device answers a 4 KiB O_DIRECT read within 10 s."""
    try:
        return subprocess.run(["dd", f"if={dev}", "of=/dev/null", "bs=4096", "count=1", "iflag=direct"],
                              capture_output=True, timeout=10, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_rbd_fuse_killed_under_a_mapped_device(bed: Bed, ledger: Ledger) -> None:
    """rbd-fuse dies under a written fuse-loop device: every record whose O_DIRECT write returned (no
    fsync) is in Ceph; attach does not hand out the dead device; detach cleans up; attach again (as a
    restart would, retried until the dead client's watch is gone) maps afresh and writing goes on."""
    with bed.scenario("rbd-fuse killed (SIGKILL) under a mapped device", ledger.record) as t:
        disks, probe, new = begin(bed, t, flush=False)  # acknowledged = the O_DIRECT write returned
        kdisk = disks[1]
        fuse = [p for p in procs.find("rbd-fuse") if any(kdisk.vol in a for a in procs.cmdline(p))]
        assert len(fuse) == 1, f"rbd-fuse processes of {kdisk.vol}: {fuse}"
        os.kill(fuse[0], signal.SIGKILL)
        bed.wait(lambda: not kdisk.writers[-1].running, 30, "the kernelspace writer to see the dead device")
        both_ways(bed, t, probe, new)
        dev = bed.ok(t, "attach", kdisk.vol, EXTP_ACCESS="kernelspace").stdout.split("\n")[0]
        if not readable(dev):
            t.leaks.append(f"attach handed out {dev}, dead since rbd-fuse of {kdisk.vol} was killed")
        bed.ok(t, "detach", kdisk.vol)
        deadline = time.monotonic() + 60
        while (res := bed.call(t, "attach", kdisk.vol, EXTP_ACCESS="kernelspace")).rc != 0:
            assert time.monotonic() < deadline, f"attach never succeeded again: {res.stderr}"
            time.sleep(2)  # an admin retrying, not a loop
        kdisk.dev = res.stdout.split("\n")[0]
        bed.start_writer(kdisk)
        finish(bed, t, disks, probe, new)


def test_remove_killed_between_trash_move_and_purge(bed: Bed, ledger: Ledger) -> None:
    """The remove is caught with its image in the trash (OSDs paused at that moment) and SIGKILLed; the
    remove Ganeti runs again must succeed and leave no trash entry."""
    with bed.scenario("remove killed (SIGKILL) between trash move and purge", ledger.record) as t:
        vol = bed.new_volume(t, 4096)
        with bed.prov.image(vol, read_only=False) as img:  # 1024 objects: the purge takes a while
            for i in range(1024):
                img.write(b"x", i << 22)
            img.flush()
        proc = bed.spawn("remove", vol)
        caught = False
        with bed.admin() as s, s.ioctx(bed.cluster.client.pool) as io:
            def in_trash() -> bool:
                return any(e["name"] == vol for e in rbd.RBD().trash_list(io))

            while proc.poll() is None and not caught:  # moved: in the trash and no longer under its name
                caught = in_trash() and vol not in rbd.RBD().list(io)
            if caught:
                with bed.paused(OSDS):
                    proc.kill()
                    proc.wait(30)
            proc.wait(60)
            if not (caught and in_trash()):
                pytest.skip("the remove was not caught with its image in the trash (a lost race, not a result)")
        bed.ok(t, "remove", vol)
