"""The pure mapping report -> Prometheus families (data_collector/metrics.py), read back with
prometheus-client's own exposition parser, from reports made of real captured mon answers."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from data_collector import metrics, node
from tests.unit.test_collector_report import REAL, make

# The families Ceph's mgr `prometheus` module has too: same names, same label names.
CEPH_LABELS = {"ceph_health_status": set(), "ceph_health_detail": {"name", "severity"},
               "ceph_mon_quorum_status": {"ceph_daemon"}, "ceph_osd_up": {"ceph_daemon"},
               "ceph_osd_in": {"ceph_daemon"}, "ceph_pool_metadata": {"pool_id", "name"},
               "ceph_pool_stored": {"pool_id"}, "ceph_pool_bytes_used": {"pool_id"},
               "ceph_pool_max_avail": {"pool_id"}, "ceph_pool_objects": {"pool_id"},
               "ceph_pool_percent_used": {"pool_id"}, "ceph_pool_quota_bytes": {"pool_id"},
               "ceph_pool_quota_objects": {"pool_id"}, "ceph_cluster_total_bytes": set(),
               "ceph_cluster_total_used_bytes": set()}
STATS = {"timestamp": 1.0, "pool_descriptors": {"0": "rbd"},
         "stat_descriptors": ["write_ops", "read_ops", "write_bytes", "read_bytes", "write_latency", "read_latency"],
         "stats": [{"0/img3": [1.0, 2.0, 1048576.0, 4096.0, 5613049.0, 115679.0]}]}  # as pacific's mgr answers
NODE = node.Facts(name="vm", addresses=["127.0.0.1"],
                  mapped=[("rbd", "img1", "/dev/rbd0"), ("rbd", "img2", "/dev/rbd1")],
                  disk_links={"web:0": "/dev/rbd0"}, runtimes={"db": [0, 0, 0, [[{}, "x", "rbd:rbd/img3:id=ganeti"]]]},
                  agent_running=True)


def parsed(rep: dict[str, Any]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} through prometheus_client.parser; no series twice."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(metrics.render(rep)):
        assert fam.documentation and fam.type in ("gauge", "counter"), fam.name
        for s in fam.samples:
            key = tuple(sorted(s.labels.items()))
            assert key not in out.setdefault(s.name, {}), f"{s.name}{key} twice"
            out[s.name][key] = s.value
    return out


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_situation_parses_with_aligned_labels(name: str) -> None:
    rep = make(name)[0]
    fams = parsed(rep)
    assert fams["ganeti_ceph_status_code"][()] == rep["data"]["status"]["code"]
    labels = {n: {k for key in s for k, _ in key} for n, s in fams.items()}
    assert not [n for n, ls in labels.items() if "instance" in ls], "`instance` is Prometheus' target label"
    assert not [n for n, s in fams.items() for key in s if ("state", "total") in key], "a total among parts"
    if name == "no-quorum":
        assert fams["ganeti_ceph_up"][()] == 0 and not [n for n in fams if n.startswith("ceph_")]
        return
    for fam, want in CEPH_LABELS.items():
        assert labels.get(fam, want) == want, fam  # ceph_health_detail: only while a check is active
    pools = {p["id"]: p for p in rep["data"]["pools"]}
    assert {int(dict(k)["pool_id"]): dict(k)["name"] for k in fams["ceph_pool_metadata"]} == \
        {i: p["name"] for i, p in pools.items()}
    osds = rep["data"]["osds"]
    assert fams["ceph_osd_up"] == {(("ceph_daemon", n),): float(n not in osds["down"]) for n in osds["names"]}
    mons = rep["data"]["mons"]
    assert sorted(v for v in fams["ceph_mon_quorum_status"].values()) == \
        [0.0] * len(mons["out_of_quorum"]) + [1.0] * len(mons["in_quorum"])


@pytest.mark.parametrize(("name", "health", "detail"), [("healthy", 0, set()), ("osd-down", 1, {"OSD_DOWN"}),
                                                        ("mon-down-1-of-3", 1, {"MON_DOWN"}),
                                                        ("pool-quota-full", 1, {"POOL_FULL"})])
def test_health_as_the_mgr_says_it(name: str, health: int, detail: set[str]) -> None:
    fams = parsed(make(name)[0])
    assert fams["ceph_health_status"][()] == health
    assert detail <= {dict(k)["name"] for k in fams.get("ceph_health_detail", {})}


def test_down_osd_and_out_of_quorum_mon() -> None:
    assert parsed(make("osd-down")[0])["ceph_osd_up"][(("ceph_daemon", "osd.1"),)] == 0
    quorum = parsed(make("mon-down-1-of-3")[0])["ceph_mon_quorum_status"]
    assert list(quorum.values()).count(0.0) == 1 and len(quorum) == 3


def test_pool_over_quota() -> None:
    rep = make("pool-quota-full")[0]
    fams = parsed(rep)
    full = [p for p in rep["data"]["pools"] if "full_quota" in p["flags"]]
    assert full
    for p in full:
        pid = (("pool_id", str(p["id"])),)
        quota = fams["ceph_pool_quota_bytes"][pid], fams["ceph_pool_quota_objects"][pid]
        assert quota == (p["quota_max_bytes"], p["quota_max_objects"]) and max(quota) > 0
        assert fams["ganeti_ceph_pool_state"][(*pid, ("state", "unavailable"))] == 1


def with_node_facts(raw: dict[str, Any]) -> None:
    raw["osd blocklist ls"] = [{"addr": "127.0.0.1:0/0", "until": "2036-11-30T00:00:00.000000+0000"}]
    raw["rbd perf image stats"] = {"rbd": STATS}


def test_disks_mappings_agent_fence_and_disk_io() -> None:
    fams = parsed(make("healthy", with_node_facts, NODE)[0])
    assert fams["ganeti_ceph_mapping_in_use"] == {
        (("device", "/dev/rbd0"), ("image", "img1"), ("pool", "rbd")): 1,
        (("device", "/dev/rbd1"), ("image", "img2"), ("pool", "rbd")): 0}  # no instance disk here uses it
    web = (("disk", "0"), ("ganeti_instance", "web"), ("image", "img1"), ("pool", "rbd"))
    db = (("disk", "0"), ("ganeti_instance", "db"), ("image", "img3"), ("pool", "rbd"))
    assert set(fams["ganeti_ceph_instance_disk_attached"]) == {
        tuple(sorted((*web, ("access", "kernelspace")))), tuple(sorted((*db, ("access", "userspace"))))}
    assert fams["ganeti_ceph_instance_disk_write_bytes_per_second"] == {db: 1048576.0, web: 0.0}
    assert fams["ganeti_ceph_instance_disk_read_ops_per_second"][db] == 2.0
    assert fams["ganeti_ceph_instance_disk_write_latency_seconds"][db] == pytest.approx(0.005613049)
    assert fams["ganeti_ceph_agent_up"][()] == 1 and fams["ganeti_ceph_node_fenced"][()] == 1


def test_unknown_facts_are_left_out() -> None:
    """No blocklist or image stats answer (e.g. no mgr): no fence or disk I/O sample, not a false 0."""
    fams = parsed(make("healthy", facts=NODE)[0])
    assert "ganeti_ceph_node_fenced" not in fams and "ganeti_ceph_instance_disk_read_bytes_per_second" not in fams
    assert fams["ganeti_ceph_agent_up"][()] == 1
    other = node.Facts(name="vm", addresses=["192.0.2.7"])
    assert parsed(make("healthy", with_node_facts, other)[0])["ganeti_ceph_node_fenced"][()] == 0


def test_collector_reads_the_latest_report_at_each_scrape() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    reports = [make("healthy")[0], make("osd-down")[0]]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.ReportCollector(lambda: reports[0]))
    assert b"ceph_health_status 0.0" in generate_latest(registry)
    reports.pop(0)
    assert b"ceph_health_status 1.0" in generate_latest(registry)
