import pytest

from ganeti_ceph.errors import CephUnavailable
from gnt_storage.deploy.bootstrap import health_line, settled_line, wait_booted, wait_healthy


def status(health: str = "HEALTH_OK", mgr: bool = True, up: int = 3, clean: int = 33, total: int = 33) -> dict:
    return {
        "health": {"status": health, "checks": {}},
        "mgrmap": {"available": mgr},
        "osdmap": {"num_osds": 3, "num_up_osds": up, "num_in_osds": 3},
        "pgmap": {"num_pgs": total, "pgs_by_state": [{"state_name": "active+clean", "count": clean},
                                                     {"state_name": "peering", "count": total - clean}]},
    }


def test_settled_only_when_everything_is_clean() -> None:
    assert settled_line(status()) == "HEALTH_OK"
    assert settled_line(status(mgr=False)) == "HEALTH_OK (no active mgr yet)"
    assert "OSDs 2 up" in settled_line(status(up=2))
    assert "PGs 30/33 active+clean" in settled_line(status(clean=30))
    assert "PGs 0/0" in settled_line(status(clean=0, total=0))


def test_health_line_lists_checks() -> None:
    h = {"status": "HEALTH_WARN", "checks": {"MGR_DOWN": {"summary": {"message": "no active mgr"}}}}
    assert health_line(h) == "HEALTH_WARN: MGR_DOWN (no active mgr)"


class Mons:
    """A session whose mon answers `status` and `osd dump` from lists, the last answer repeating."""

    def __init__(self, statuses: list[dict], dumps: list[dict] | None = None) -> None:
        self.answers = {"status": list(statuses), "osd dump": list(dumps or [{}])}

    def mon_command(self, prefix: str) -> dict:
        seq = self.answers[prefix]
        return seq.pop(0) if len(seq) > 1 else seq[0]


def test_wait_healthy_says_each_new_state_once(capsys: pytest.CaptureFixture[str]) -> None:
    mons = Mons([status(up=2), status(up=2), status(clean=30), status()])
    assert wait_healthy(mons, 10, poll=0) == "HEALTH_OK"  # type: ignore[arg-type]
    said = [ln.split(" * ", 1)[1] for ln in capsys.readouterr().err.splitlines()]
    assert said == [f"  health: {settled_line(status(up=2))}", f"  health: {settled_line(status(clean=30))}",
                    "  health: HEALTH_OK"]


def test_wait_healthy_gives_up_at_the_bound_with_the_last_state() -> None:
    with pytest.raises(CephUnavailable, match=r"within 0 s; last: HEALTH_OK \(no active mgr yet\)"):
        wait_healthy(Mons([status(mgr=False)]), 0.05, poll=0.01)  # type: ignore[arg-type]


def test_wait_booted_waits_for_a_newer_up_from_of_every_osd() -> None:
    dump = [{"osds": [{"osd": 0, "up_from": 5}, {"osd": 1, "up_from": 7}]},
            {"osds": [{"osd": 0, "up_from": 9}, {"osd": 1, "up_from": 7}]},
            {"osds": [{"osd": 0, "up_from": 9}, {"osd": 1, "up_from": 10}]}]
    wait_booted(Mons([status()], dump), {"0": 5, "1": 7}, 10, poll=0)  # type: ignore[arg-type]
    with pytest.raises(CephUnavailable, match=r"osd\.1 did not boot within 0 s"):
        wait_booted(Mons([status()], [dump[1]]), {"0": 5, "1": 7}, 0.05, poll=0.01)  # type: ignore[arg-type]
