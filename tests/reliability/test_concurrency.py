"""32 provider calls at once, on one shared volume and on 32 distinct ones, through the agent and in-process.

Ganeti runs jobs in parallel, so one node's provider sees many calls at a
time. Each phase fires 32 executables together; every call must answer
(success, or a refusal in one line), no traceback, and the end state must
hold every acknowledged effect: the largest acknowledged grow, the open
record, one mapping per kernelspace volume, nothing left after close,
detach and remove. Kernelspace (fuse-loop) mappings stay at 2: this machine
has 7 usable loop devices, shared with the other test beds.
"""

from __future__ import annotations

import os

import pytest

from ganeti_ceph.rbd import locks
from tests.ceph.provider_env import Result
from tests.reliability.bed import Bed, Tally
from tests.reliability.ledger import Ledger

N = 32
WAYS = pytest.mark.parametrize("agent", [True, False], ids=["agent", "in-process"])


def answered(t: Tally, results: list[Result]) -> list[Result]:
    """The acknowledged calls. A failure must still be an answer: one line `rbd <action>: ...`
    (a refusal such as "refusing to shrink" or "busy, retry"); anything else is a lost call."""
    ok = [r for r in results if r.rc == 0]
    for r in results:
        lines = r.stderr.strip().splitlines()
        if r.rc != 0 and not (len(lines) == 1 and lines[0].startswith(f"rbd {r.action}: ")):
            t.unanswered.append(f"{r.action} rc {r.rc}: {r.stderr.strip()!r}")
    t.acked += len(ok)
    return ok


def open_records(bed: Bed, vol: str) -> list[locks.Holder]:
    return locks.parse_holders(bed.prov.metadata(vol))


def links(bed: Bed) -> list[str]:
    base = os.path.join(bed.run_dir, "dev")
    return [os.path.join(d, f) for d, _, files in os.walk(base) for f in files]


@WAYS
def test_32_calls_on_one_shared_volume(bed: Bed, ledger: Ledger, agent: bool) -> None:
    way = "agent" if agent else "in-process"
    with bed.scenario(f"32 parallel calls, one shared volume ({way})", ledger.record) as t:
        vol = bed.new_volume(t, 64, agent)
        sizes = [64 + 8 * (i + 1) for i in range(8)]
        first = ([("create", vol, {"VOL_SIZE": "64"})] * 6
                 + [("grow", vol, {"VOL_SIZE": "64", "VOL_NEW_SIZE": str(s)}) for s in sizes]
                 + [("open", vol, {"VOL_OPEN_EXCLUSIVE": "False"})] * 6
                 + [("attach", vol, {"EXTP_ACCESS": "userspace"})] * 6
                 + [("attach", vol, {"EXTP_ACCESS": "kernelspace"})] * 2
                 + [("setinfo", vol, {"VOL_METADATA": f"m{i}"}) for i in range(4)])
        assert len(first) == N
        ok = answered(t, bed.calls(t, first, agent))
        grown = [int(r.note.split(" is ")[1].split()[0]) for r in ok if r.action == "grow"]
        if bed.prov.size_mib(vol) != max(sizes) or max(grown, default=0) != max(sizes):
            t.lost.append(f"size {bed.prov.size_mib(vol)} MiB after grows acknowledged to {sorted(grown)}")
        holders = open_records(bed, vol)
        if [h.exclusive for h in holders] != [False]:
            t.lost.append(f"open records after 6 shared opens: {holders}")
        devs = {r.stdout.split("\n")[0] for r in ok if r.action == "attach" and r.stdout.split("\n")[0]}
        if len(devs) > 1 or len(links(bed)) != len(devs):
            t.lost.append(f"two kernelspace attaches gave {devs}, links {links(bed)}")
        if bed.prov.metadata(vol).get("ganeti.metadata") not in {f"m{i}" for i in range(4)}:
            t.lost.append("no acknowledged setinfo is in the metadata")

        second = [("close", vol, {})] * 12 + [("detach", vol, {})] * 12 + [("verify", vol, {})] * 8
        answered(t, bed.calls(t, second, agent))
        t.leaks += bed.held([vol]) + links(bed)

        ok = answered(t, bed.calls(t, [("remove", vol, {})] * N, agent))
        if bed.prov.exists(vol) or not any(r.note.endswith(" removed") for r in ok):
            t.lost.append(f"after 32 removes: exists {bed.prov.exists(vol)}, notes {sorted({r.note for r in ok})}")


@WAYS
def test_32_calls_on_distinct_volumes(bed: Bed, ledger: Ledger, agent: bool) -> None:
    way = "agent" if agent else "in-process"
    with bed.scenario(f"32 parallel calls, 32 distinct volumes ({way})", ledger.record) as t:
        vols = [bed.prov.volume() for _ in range(N)]
        answered(t, bed.calls(t, [("create", v, {"VOL_SIZE": "64"}) for v in vols], agent))
        missing = [v for v in vols if not bed.prov.exists(v)]
        t.lost += [f"created {v} is missing" for v in missing]

        def second(i: int, v: str) -> tuple[str, str, dict[str, str]]:
            return [("attach", v, {"EXTP_ACCESS": "kernelspace" if i in (0, 4) else "userspace"}),
                    ("grow", v, {"VOL_SIZE": "64", "VOL_NEW_SIZE": "96"}),
                    ("open", v, {"VOL_OPEN_EXCLUSIVE": "True"}),
                    ("setinfo", v, {"VOL_METADATA": v})][i % 4]

        results = bed.calls(t, [second(i, v) for i, v in enumerate(vols)], agent)
        answered(t, results)
        done = {(r.action, v) for r, v in zip(results, vols, strict=True) if r.rc == 0}
        t.lost += [f"{v} not grown" for v in vols[1::4] if ("grow", v) in done and bed.prov.size_mib(v) != 96]
        t.lost += [f"{v} not open" for v in vols[2::4]
                   if ("open", v) in done and [h.exclusive for h in open_records(bed, v)] != [True]]
        t.lost += [f"{v} metadata" for v in vols[3::4]
                   if ("setinfo", v) in done and bed.prov.metadata(v).get("ganeti.metadata") != v]
        mapped = [v for v in (vols[0], vols[4]) if ("attach", v) in done]
        if len(links(bed)) != len(mapped):
            t.lost.append(f"kernelspace attaches acknowledged for {mapped}, mapping links {links(bed)}")

        answered(t, bed.calls(t, [("close" if i % 4 == 2 else "detach", v, {}) for i, v in enumerate(vols)], agent))
        t.leaks += bed.held(vols) + links(bed)
        answered(t, bed.calls(t, [("remove", v, {}) for v in vols], agent))
        t.lost += [f"{v} still there after its remove" for v in vols if bed.prov.exists(v)]
