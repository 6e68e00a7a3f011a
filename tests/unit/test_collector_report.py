"""The status-code mapping, from real mon command outputs captured on local clusters.

Each file in test_collector_data/ is what `ganeti-ceph-collector --raw` (the
mon commands of gather.COMMANDS) answered in one real situation: healthy, an
OSD killed, two OSDs killed, OSDs back, recovery, the mgr killed, one and two
of three mons killed, a pool over its quota, OSDs near full and full. A fake
session serves them to gather.fetch, so which commands are asked is tested
too; the crafted cases below vary them where no real capture exists.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from data_collector import gather, node, report
from ganeti_ceph.errors import CephUnavailable
from tests.unit.test_collector_formats import validate_report

DATA = Path(__file__).with_name("test_collector_data")
KEY = {(prefix, json.dumps(args, sort_keys=True)): key for key, prefix, args in (*gather.COMMANDS, gather.PG_BRIEF,
                                                                                        *gather.OPTIONAL)}
FACTS = node.Facts(name="vm", addresses=["127.0.0.1"])


class FakeSession:
    """Answers mon commands from a capture; what the capture lacks timed out (as it did when captured)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw, self.asked = raw, []

    def mon_command(self, prefix: str, **args: Any) -> Any:
        key = KEY[(prefix, json.dumps(args, sort_keys=True))]
        self.asked.append(key)
        if key not in self.raw:
            raise CephUnavailable(f"cluster test: {prefix} timed out")
        return copy.deepcopy(self.raw[key])

    def mgr_command(self, prefix: str, pool_spec: str) -> Any:
        """rbd_support's answers, captured per pool: {prefix: {pool: answer}}."""
        self.asked.append(f"{prefix} {pool_spec}")
        answers = self.raw.get(prefix) or {}
        if pool_spec not in answers:
            raise CephUnavailable(f"cluster test: {prefix} {pool_spec} timed out")
        return copy.deepcopy(answers[pool_spec])


def captured(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def make(name: str, change: Callable[[dict[str, Any]], None] | None = None,
         facts: node.Facts = FACTS) -> tuple[dict[str, Any], list[str]]:
    raw = captured(name)
    if change:
        change(raw)
    session = FakeSession(raw)
    rep = report.build(gather.fetch(session), facts, cluster="ceph", version="test", error=None,
                       timestamp_ns=1_800_000_000 * 10**9, duration=0.01)
    validate_report(rep)
    return rep, session.asked


# name: (code, words the message must hold)
REAL = {
    "healthy": (0, ["healthy"]),
    "healthy-3mons": (0, ["healthy"]),
    "osd-down": (1, ["self-healing", "OSD_DOWN", "osd.1", "PG_DEGRADED"]),
    "osd-down-muted": (1, ["PG_DEGRADED"]),
    "osds-back-stale": (1, ["PG_AVAILABILITY", "stale"]),  # stale PGs whose OSDs are up again
    "osds-back-peering": (1, ["peering"]),
    "recovering": (1, ["PG_DEGRADED"]),  # an OSD marked out: recovery in progress
    "two-osds-down": (4, ["PGs unavailable", "rbd", "osd.1, osd.2"]),  # before Ceph says so (60 s)
    "two-osds-down-stuck": (4, ["PG_AVAILABILITY", "stale"]),
    "mgr-down": (4, ["MGR_DOWN"]),
    "mon-down-1-of-3": (4, ["MON_DOWN", "mon.c", "quorum is lost if one more mon fails"]),
    "no-quorum": (2, ["no mon quorum"]),
    "pool-quota-full": (4, ["POOL_FULL", "pool quota"]),
    "osd-nearfull": (4, ["OSD_NEARFULL", "POOL_NEARFULL"]),
    "osd-full": (4, ["OSD_FULL"]),
}


def test_every_capture_is_covered() -> None:
    assert {p.stem for p in DATA.glob("*.json")} == set(REAL)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_situations(name: str) -> None:
    rep, _ = make(name)
    code, words = REAL[name]
    status = rep["data"]["status"]
    assert status["code"] == code, status["message"]
    for word in words:
        assert word in status["message"], status["message"]


def test_muted_check_is_listed_but_does_not_count() -> None:
    rep, _ = make("osd-down-muted")
    checks = {c["name"]: c for c in rep["data"]["health"]["checks"]}
    assert checks["OSD_DOWN"]["muted"] and "OSD_DOWN" not in rep["data"]["status"]["message"]


def test_everything_muted_is_healthy() -> None:
    def mute(raw: dict[str, Any]) -> None:
        for c in raw["health detail"]["checks"].values():
            c["muted"] = True

    rep, _ = make("pool-quota-full", mute)
    assert rep["data"]["status"] == {"code": 0, "message": "healthy (muted: POOL_FULL)"}


def test_health_err_needs_an_admin_even_for_a_healing_check() -> None:
    def err(raw: dict[str, Any]) -> None:
        raw["health detail"]["checks"]["PG_DEGRADED"]["severity"] = "HEALTH_ERR"

    assert make("osd-down", err)[0]["data"]["status"]["code"] == 4


def test_unknown_warning_needs_an_admin() -> None:
    def crash(raw: dict[str, Any]) -> None:
        raw["health detail"]["checks"]["RECENT_CRASH"] = {
            "severity": "HEALTH_WARN", "summary": {"message": "1 daemons have recently crashed", "count": 1},
            "detail": [{"message": "osd.2 crashed on host vm at 2026-11-21"}], "muted": False}

    status = make("healthy", crash)[0]["data"]["status"]
    assert status["code"] == 4 and "RECENT_CRASH" in status["message"] and "osd.2" in status["message"]


def five_mons(down: int) -> Callable[[dict[str, Any]], None]:
    """The 1-of-3 capture as a 5-mon cluster with `down` mons out of quorum."""
    def change(raw: dict[str, Any]) -> None:
        mons = raw["mon dump"]["mons"]
        for name in "de":
            mons.append({**copy.deepcopy(mons[0]), "name": name})
        names = [m["name"] for m in mons]
        raw["status"]["monmap"]["num_mons"] = 5
        raw["status"]["quorum_names"] = names[: 5 - down]
        raw["health detail"]["checks"]["MON_DOWN"]["summary"]["message"] = f"{down}/5 mons down"
    return change


def test_mon_down_with_quorum_to_spare_is_self_healing() -> None:
    rep, _ = make("mon-down-1-of-3", five_mons(1))
    assert rep["data"]["status"]["code"] == 1 and not rep["data"]["mons"]["quorum_at_risk"]


def test_mon_down_leaving_a_bare_majority_needs_an_admin() -> None:
    rep, _ = make("mon-down-1-of-3", five_mons(2))
    assert rep["data"]["status"]["code"] == 4 and rep["data"]["mons"]["quorum_at_risk"]
    assert rep["data"]["mons"]["out_of_quorum"] == ["d", "e"]


def test_mon_out_of_quorum_without_mon_down_check() -> None:
    """Ceph raises MON_DOWN only a minute after mkfs; the quorum itself already tells."""
    def quiet(raw: dict[str, Any]) -> None:
        raw["health detail"] = raw["status"]["health"] = {"status": "HEALTH_OK", "checks": {}, "mutes": []}

    status = make("mon-down-1-of-3", quiet)[0]["data"]["status"]
    assert status == {"code": 4, "message": "needs an admin: mons out of quorum: mon.c (2 of 3 in quorum) "
                                            "(quorum is lost if one more mon fails)"}

    def five(raw: dict[str, Any]) -> None:
        five_mons(1)(raw)
        quiet(raw)

    assert make("mon-down-1-of-3", five)[0]["data"]["status"]["code"] == 1


def test_health_ok_while_pgs_recover_is_self_healing() -> None:
    def quiet(raw: dict[str, Any]) -> None:
        raw["health detail"] = {"status": "HEALTH_OK", "checks": {}, "mutes": []}

    status = make("recovering", quiet)[0]["data"]["status"]
    assert status["code"] == 1 and "PGs settling" in status["message"] and "recovery_wait" in status["message"]


def test_peering_without_a_pg_listing_is_self_healing() -> None:
    """With the mgr gone there is no PG listing: states alone decide."""
    raw = captured("osds-back-peering")
    by_state = {s["state_name"]: s["count"] for s in raw["status"]["pgmap"]["pgs_by_state"]}
    assert report.pgs(raw["status"], None, None)["unavailable"] > 0  # stale ones count without a listing
    only_peering = {"pgmap": {"num_pgs": 9, "pgs_by_state": [{"state_name": "peering", "count": by_state["peering"]},
                                                              {"state_name": "active+clean", "count": 2}]}}
    assert report.pgs(only_peering, None, None)["unavailable"] == 0


def test_quorum_loss_asks_nothing_after_status() -> None:
    _, asked = make("no-quorum")
    assert asked == ["status"]


def test_mgr_down_skips_the_mgr_commands() -> None:
    rep, asked = make("mgr-down")
    assert "osd pool stats" not in asked and gather.PG_BRIEF[0] not in asked
    assert rep["data"]["pools"][0]["client_io"]["read_bytes_sec"] == 0


def test_a_mgr_command_timing_out_leaves_a_note_not_a_failure() -> None:
    def drop(raw: dict[str, Any]) -> None:
        del raw["osd pool stats"]  # the mgr died a moment ago: the mgrmap still says available

    rep, asked = make("osd-down", drop)
    assert rep["data"]["status"]["code"] == 1
    assert gather.PG_BRIEF[0] not in asked and "osd pool stats" in rep["data"]["collector"]["notes"][0]


def test_pg_listing_only_when_pgs_are_not_clean() -> None:
    assert gather.PG_BRIEF[0] not in make("healthy")[1]
    assert gather.PG_BRIEF[0] in make("osd-down")[1]


def test_pools_usage_quota_and_state() -> None:
    pools = {p["name"]: p for p in make("pool-quota-full")[0]["data"]["pools"]}
    q = pools["quota"]
    assert q["state"] == "unavailable" and "quota reached" in q["problems"]
    assert q["quota_max_objects"] == 5 and q["objects"] == 8 and q["free_objects"] == 0
    assert pools["rbd"]["state"] == "ok" and pools["rbd"]["free_bytes"] == pools["rbd"]["max_avail_bytes"] > 0
    degraded = {p["name"]: p for p in make("osd-down")[0]["data"]["pools"]}
    assert degraded["rbd"]["state"] == "degraded" and degraded["rbd"]["degraded_objects"] == 1


def test_sections_from_a_healthy_cluster() -> None:
    d = make("healthy-3mons")[0]["data"]
    assert d["mons"] == {"total": 3, "in_quorum": ["a", "b", "c"], "out_of_quorum": [], "majority": 2,
                         "quorum_at_risk": False}
    assert d["osds"] == {"total": 3, "up": 3, "in": 3, "names": ["osd.0", "osd.1", "osd.2"], "down": [], "out": []}
    assert d["pgs"]["by_state"] == {"active+clean": 33} and d["pgs"]["unavailable"] == 0
    assert set(d["client_io"]) == set(report.IO_KEYS) and d["mgr"]["available"]


def test_osds_down_are_named() -> None:
    d = make("two-osds-down")[0]["data"]
    assert d["osds"]["down"] == ["osd.1", "osd.2"] and d["osds"]["up"] == 1


def test_unreachable_is_code_2() -> None:
    rep = report.build(None, FACTS, cluster="c1", version="t", error="connect timed out", timestamp_ns=10**19,
                       duration=5.0)
    validate_report(rep)
    assert rep["data"]["status"] == {"code": 2, "message": "cluster could not be asked: connect timed out"}


@pytest.mark.parametrize("state,acting,up,unavailable", [
    ("active+clean", [0, 1], {0, 1}, False),
    ("peering", [1, 2], {1, 2}, False),
    ("down", [1], {0}, True),
    ("incomplete", [0], {0}, True),
    ("undersized+degraded+peered", [0], {0}, True),
    ("stale+active+clean", [1, 0], {0}, False),  # the other replica's OSD re-peers it
    ("stale+active+undersized", [2], {0, 1}, True),
    ("unknown", [], {0}, True),
])
def test_pg_availability(state: str, acting: list[int], up: set[int], unavailable: bool) -> None:
    assert report.pg_unavailable(state, acting, up) is unavailable


def test_report_envelope_is_ganetis() -> None:
    rep = make("healthy")[0]
    assert (rep["name"], rep["category"], rep["kind"], rep["format_version"]) == ("ceph", "storage", 1, 1)
