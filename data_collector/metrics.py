"""The report as Prometheus metric families, through prometheus-client; a pure mapping.

Everything is derived from the report (gather.py did the asking), never
fetched here. Where a fact is one Ceph's mgr `prometheus` module exports, it
has the mgr's name and shape (`ceph_health_status`, `ceph_osd_up{ceph_daemon}`,
`ceph_pool_*{pool_id}` with `ceph_pool_metadata{pool_id,name}` to join on...),
so dashboards and rules written for the mgr work on it; what only a Ganeti
node knows is `ganeti_ceph_*`. No label is named `instance` (Prometheus' own
target label: Ganeti instances are `ganeti_instance`), and no family mixes a
total with its parts. doc/data-collector.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "ganeti_ceph_"
CONTENT_TYPE = CONTENT_TYPE_LATEST
HEALTH = {"HEALTH_OK": 0, "HEALTH_WARN": 1, "HEALTH_ERR": 2}
POOL_STATES = ("ok", "degraded", "unavailable")
# (report key, the mgr module's family, help): per pool, labelled pool_id as the mgr does.
CEPH_POOL = (("stored_bytes", "stored", "Bytes stored in the pool (before replication)"),
             ("used_bytes", "bytes_used", "Raw bytes the pool uses (after replication)"),
             ("max_avail_bytes", "max_avail", "Bytes that can still be stored in the pool"),
             ("objects", "objects", "Objects in the pool"),
             ("used_ratio", "percent_used", "Used share of the pool's capacity (0 to 1)"),
             ("quota_max_bytes", "quota_bytes", "The pool's byte quota (0: none)"),
             ("quota_max_objects", "quota_objects", "The pool's object quota (0: none)"))
# (report key, our name): client I/O rates, cluster-wide and per pool (from `osd pool stats`).
CLIENT_IO = (("read_bytes_sec", "client_read_bytes_per_second"), ("write_bytes_sec", "client_write_bytes_per_second"),
             ("read_op_per_sec", "client_read_ops_per_second"), ("write_op_per_sec", "client_write_ops_per_second"))
# (rbd perf image stats descriptor, our name, scale): one instance disk's I/O, from the mgr's rbd_support.
DISK_IO = (("read_bytes", "read_bytes_per_second", 1.0), ("write_bytes", "write_bytes_per_second", 1.0),
           ("read_ops", "read_ops_per_second", 1.0), ("write_ops", "write_ops_per_second", 1.0),
           ("read_latency", "read_latency_seconds", 1e-9), ("write_latency", "write_latency_seconds", 1e-9))
DISK_LABELS = ("ganeti_instance", "disk", "pool", "image")

Row = tuple[Sequence[object], float | int | bool | None]


def gauge(name: str, text: str, labels: Sequence[str] = (), rows: Iterable[Row] = ()) -> GaugeMetricFamily:
    """One gauge family; rows whose value is None (not known) are left out."""
    fam = GaugeMetricFamily(name, text, labels=list(labels))
    for values, value in rows:
        if value is not None:
            fam.add_metric([str(v) for v in values], float(value))
    return fam


def ours(name: str, text: str, labels: Sequence[str] = (), rows: Iterable[Row] = ()) -> GaugeMetricFamily:
    return gauge(PREFIX + name, text, labels, rows)


def families(report: dict[str, Any]) -> list[Metric]:
    """Every family of one report; families without a sample are left out."""
    d = report["data"]
    code = d["status"]["code"]
    out: list[Metric] = [
        ours("status_code", "Ganeti status code: 0 healthy, 1 self-healing, 2 unknown, 4 needs an admin",
             rows=[((), code)]),
        ours("up", "1 if the cluster could be asked", rows=[((), code != 2)]),
        ours("report_timestamp_seconds", "When the report was made", rows=[((), report["timestamp"] / 1e9)]),
        ours("collect_duration_seconds", "How long making the report took", rows=[((), d["collector"]["duration_s"])]),
    ]
    if "health" in d:
        out += cluster_families(d)
    out += node_families(d["node"])
    return [f for f in out if f.samples]


def cluster_families(d: dict[str, Any]) -> list[Metric]:
    """The cluster's facts: the mgr module's families where it has them, ours for the rest."""
    checks, mons, osds, pools = d["health"]["checks"], d["mons"], d["osds"], d["pools"]
    down, out_ = set(osds["down"]), set(osds["out"])
    fams = [
        gauge("ceph_health_status", "Cluster health: 0 HEALTH_OK, 1 HEALTH_WARN, 2 HEALTH_ERR",
              rows=[((), HEALTH.get(d["health"]["status"]))]),
        gauge("ceph_health_detail", "1 for each active health check", ("name", "severity"),
              [((c["name"], c["severity"]), 1) for c in checks]),
        ours("health_check", "Active health checks, with the count of affected items", ("name", "severity", "muted"),
             [((c["name"], c["severity"], str(c["muted"]).lower()), c["count"]) for c in checks]),
        gauge("ceph_mon_quorum_status", "1 if the mon is in quorum", ("ceph_daemon",),
              [((f"mon.{n}",), 1) for n in mons["in_quorum"]] + [((f"mon.{n}",), 0) for n in mons["out_of_quorum"]]),
        ours("mon_quorum_at_risk", "1 if losing one more mon loses quorum", rows=[((), mons["quorum_at_risk"])]),
        ours("mgr_available", "1 if a mgr is active", rows=[((), d["mgr"]["available"])]),
        gauge("ceph_osd_up", "1 if the OSD is up", ("ceph_daemon",), [((n,), n not in down) for n in osds["names"]]),
        gauge("ceph_osd_in", "1 if the OSD is in", ("ceph_daemon",), [((n,), n not in out_) for n in osds["names"]]),
        ours("pgs", "Placement groups by state (each PG in one state)", ("state",),
             [((s,), n) for s, n in d["pgs"]["by_state"].items()]),
        ours("pgs_unavailable", "Placement groups serving no I/O", rows=[((), d["pgs"]["unavailable"])]),
        gauge("ceph_cluster_total_bytes", "Raw capacity", rows=[((), d["usage"]["total_bytes"])]),
        gauge("ceph_cluster_total_used_bytes", "Raw capacity used", rows=[((), d["usage"]["used_bytes"])]),
        gauge("ceph_pool_metadata", "One per pool: its name, to join the pool_id of the ceph_pool_* families",
              ("pool_id", "name"), [((p["id"], p["name"]), 1) for p in pools]),
    ]
    fams += [gauge(f"ceph_pool_{name}", text, ("pool_id",), [((p["id"],), p[key]) for p in pools])
             for key, name, text in CEPH_POOL]
    fams += [
        ours("pool_free_bytes", "Bytes that can still be stored, within the pool's quota", ("pool_id",),
             [((p["id"],), p["free_bytes"]) for p in pools]),
        ours("pool_degraded_objects", "Objects of the pool with too few copies", ("pool_id",),
             [((p["id"],), p["degraded_objects"]) for p in pools]),
        ours("pool_state", "1 for the pool's state (ok, degraded, unavailable)", ("pool_id", "state"),
             [((p["id"], s), p["state"] == s) for p in pools for s in POOL_STATES]),
        ours("recovery_bytes_per_second", "Recovery rate", rows=[((), d["recovery"]["recovering_bytes_per_sec"])]),
    ]
    for key, name in CLIENT_IO:
        fams.append(ours(name, f"Client I/O rate, whole cluster ({key})", rows=[((), d["client_io"][key])]))
        fams.append(ours(f"pool_{name}", f"Client I/O rate per pool ({key})", ("pool_id",),
                         [((p["id"],), p["client_io"][key]) for p in pools]))
    return fams


def node_families(n: dict[str, Any]) -> list[Metric]:
    """This node's facts: its Ceph daemons, mappings, Ganeti instance disks, the agent, a fence."""
    daemons, disks = n["daemons"], n["instance_disks"]
    cpu = CounterMetricFamily(PREFIX + "node_daemon_cpu_seconds", "CPU time used by the daemon",
                              labels=["ceph_daemon"])
    for x in daemons:
        if x.get("cpu_seconds") is not None:
            cpu.add_metric([x["name"]], x["cpu_seconds"])
    fams: list[Metric] = [
        ours("node_daemon_running", "1 if this Ceph daemon of the cluster runs on this node", ("ceph_daemon",),
             [((x["name"],), x["running"]) for x in daemons]),
        ours("node_daemon_rss_bytes", "Resident memory of the daemon", ("ceph_daemon",),
             [((x["name"],), x.get("rss_bytes")) for x in daemons]),
        cpu,
        ours("node_daemon_cpu_percent", "CPU use since the previous report", ("ceph_daemon",),
             [((x["name"],), x.get("cpu_percent")) for x in daemons]),
        ours("mapping_in_use", "Images mapped to a block device on this node: 1 if a Ganeti instance disk here "
             "uses it, 0 if none does (stale unless an admin activated it)", ("pool", "image", "device"),
             [((m["pool"], m["image"], m["device"]), m.get("in_use", False)) for m in n["mapped_devices"]]),
        ours("instance_disk_attached", "Ceph disks of instances running on this node (access: kernelspace or "
             "userspace)", (*DISK_LABELS, "access"),
             [((d["instance"], d["index"], d["pool"], d["image"], d["access"]), 1) for d in disks]),
        ours("instance_affected", "Instances on this node with a disk in a degraded or unavailable pool",
             ("ganeti_instance",), [((i,), 1) for i in n["affected_instances"]]),
        ours("agent_up", "1 if the provider's agent (ganeti-ceph-agent) runs on this node",
             rows=[((), n.get("agent_running"))]),
        ours("node_fenced", "1 if this node's IP is in the OSD blocklist: its Ceph clients are cut off",
             rows=[((), n.get("fenced"))]),
    ]
    for key, name, scale in DISK_IO:
        fams.append(ours(f"instance_disk_{name}", f"The disk's image I/O (mgr rbd_support, {key})", DISK_LABELS,
                         [((d["instance"], d["index"], d["pool"], d["image"]), d["io"].get(key, 0.0) * scale)
                          for d in disks if d.get("io") is not None]))
    return fams


class ReportCollector(Collector):
    """A prometheus-client collector over the latest report: `latest` is called at each scrape."""

    def __init__(self, latest: Callable[[], dict[str, Any]]) -> None:
        self.latest = latest

    def collect(self) -> Iterator[Metric]:
        yield from families(self.latest())


def render(report: dict[str, Any]) -> str:
    """The exposition text of one report (format 0.0.4, CONTENT_TYPE)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(lambda: report))
    return generate_latest(registry).decode()
