from gnt_storage.deploy.bootstrap import health_line, settled_line


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
