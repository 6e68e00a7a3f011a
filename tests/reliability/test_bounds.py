"""Every provider action ends within timeouts.action while the monitors, or all OSDs, are paused.

Ganeti runs providers without a timeout: a call that hangs blocks its job
queue. Here every action runs (as the executable Ganeti runs, through the
agent and in-process) while the daemons are stopped with SIGSTOP, which is
what a hung or partitioned cluster looks like to a client: connections stay
open and nothing answers. Each call must end within its bound with success
or one stderr line `rbd <action>: ...`, and no traceback. Afterwards the
cluster resumes and Ganeti's follow-ups (detach, close, remove) leave
nothing behind.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.bed import MONS, OSDS, PAUSE, Bed
from tests.reliability.ledger import Ledger

FAULTS = {"monitors paused": MONS, "all OSDs paused": OSDS}


@pytest.mark.parametrize("agent", [True, False], ids=["agent", "in-process"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_action_ends_within_its_bound(bed: Bed, ledger: Ledger, fault: str, agent: bool) -> None:
    way = "agent" if agent else "in-process"
    with bed.scenario(f"bounds: every action, {fault} ({way})", ledger.record) as t:
        victim = bed.new_volume(t, 64)
        doomed = bed.new_volume(t, 64)
        new = bed.prov.volume()
        snap = bed.prov.track(f"{victim}.snap")
        calls = [("create", new, {"VOL_SIZE": "64"}), ("attach", victim, {"EXTP_ACCESS": "userspace"}),
                 ("attach", victim, {"EXTP_ACCESS": "kernelspace"}), ("detach", victim, {}), ("remove", doomed, {}),
                 ("grow", victim, {"VOL_SIZE": "64", "VOL_NEW_SIZE": "128"}),
                 ("setinfo", victim, {"VOL_METADATA": "x"}),
                 ("snapshot", victim, {"VOL_SNAPSHOT_NAME": snap}), ("open", victim, {"VOL_OPEN_EXCLUSIVE": "True"}),
                 ("close", victim, {}), ("verify", victim, {})]
        with bed.paused(FAULTS[fault]):  # held until every call ended, and past every Ceph timeout
            started = time.monotonic()
            results = bed.calls(t, calls, agent)
            time.sleep(max(0.0, PAUSE - (time.monotonic() - started)))
        for r in results:
            lines = r.stderr.strip().splitlines()
            if r.rc != 0 and (len(lines) != 1 or not lines[0].startswith(f"rbd {r.action}: ")):
                t.unanswered.append(f"{r.action}: not one line: {r.stderr!r}")
        bed.settled()
        # Ganeti's follow-ups: deactivate, close, remove whatever the calls may have made.
        bed.ok(t, "detach", victim)
        bed.ok(t, "close", victim)
        bed.remove(t, [snap, victim, doomed, new])
