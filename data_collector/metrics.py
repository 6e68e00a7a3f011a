"""The report as Prometheus metrics (text exposition format 0.0.4); a pure function.

The same facts as the mond report, so an admin's existing Prometheus can
scrape them: one gauge family per fact, labelled by pool, OSD, check...
Everything is derived from the report, never fetched separately.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PREFIX = "ganeti_ceph_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
POOL_GAUGES = (("stored_bytes", "pool_stored_bytes", "Bytes stored in the pool (before replication)"),
               ("used_bytes", "pool_bytes_used", "Raw bytes the pool uses (after replication)"),
               ("objects", "pool_objects", "Objects in the pool"),
               ("max_avail_bytes", "pool_max_avail_bytes", "Bytes that can still be stored in the pool"),
               ("free_bytes", "pool_free_bytes", "Bytes that can still be stored, within the pool's quota"),
               ("quota_max_bytes", "pool_quota_max_bytes", "The pool's byte quota (0: none)"),
               ("quota_max_objects", "pool_quota_max_objects", "The pool's object quota (0: none)"),
               ("degraded_objects", "pool_degraded_objects", "Objects of the pool with too few copies"))
IO = (("read_bytes_sec", "client_read_bytes_per_second"), ("write_bytes_sec", "client_write_bytes_per_second"),
      ("read_op_per_sec", "client_read_ops_per_second"), ("write_op_per_sec", "client_write_ops_per_second"))
POOL_STATES = ("ok", "degraded", "unavailable")
HEALTH = {"HEALTH_OK": 0, "HEALTH_WARN": 1, "HEALTH_ERR": 2}


def escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Writer:
    """Families in exposition format: HELP and TYPE once, then the samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, help_text: str, samples: Iterable[tuple[dict[str, Any], float | int | None]],
               kind: str = "gauge") -> None:
        rows = [(labels, value) for labels, value in samples if value is not None]
        if not rows:
            return
        self.lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
        for labels, value in rows:
            lab = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
            num = float(value)
            text = str(int(num)) if num.is_integer() and abs(num) < 2**53 else repr(num)
            self.lines.append(f"{PREFIX}{name}{'{' + lab + '}' if lab else ''} {text}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(report: dict[str, Any]) -> str:
    d = report["data"]
    w = Writer()
    code = d["status"]["code"]
    w.family("status_code", "Ganeti status code: 0 healthy, 1 self-healing, 2 unknown, 4 needs an admin",
             [({}, code)])
    w.family("up", "1 if the cluster could be asked", [({}, 0 if code == 2 else 1)])
    w.family("report_timestamp_seconds", "When the report was made", [({}, report["timestamp"] / 1e9)])
    w.family("collect_duration_seconds", "How long making the report took", [({}, d["collector"]["duration_s"])])
    if "health" in d:
        status = d["health"].get("status")
        w.family("health_status", "Overall health: 0 HEALTH_OK, 1 HEALTH_WARN, 2 HEALTH_ERR",
                 [({"status": status}, HEALTH.get(status, 3))])
        w.family("health_check", "Active health checks, with the count of affected items",
                 [({"name": c["name"], "severity": c["severity"], "muted": str(c["muted"]).lower()}, c["count"])
                  for c in d["health"]["checks"]])
        m = d["mons"]
        w.family("mons", "Monitors by state", [({"state": "total"}, m["total"]),
                                               ({"state": "in_quorum"}, len(m["in_quorum"])),
                                               ({"state": "out_of_quorum"}, len(m["out_of_quorum"]))])
        w.family("mon_in_quorum", "1 if the mon is in quorum",
                 [({"mon": n}, 1) for n in m["in_quorum"]] + [({"mon": n}, 0) for n in m["out_of_quorum"]])
        w.family("mon_quorum_at_risk", "1 if losing one more mon loses quorum", [({}, int(m["quorum_at_risk"]))])
        w.family("mgr_available", "1 if a mgr is active", [({}, int(d["mgr"]["available"]))])
        o = d["osds"]
        w.family("osds", "OSDs by state", [({"state": s}, o[s]) for s in ("total", "up", "in")])
        w.family("osd_down", "OSDs that are down", [({"osd": n}, 1) for n in o["down"]])
        w.family("pgs", "Placement groups by state", [({"state": s}, n) for s, n in d["pgs"]["by_state"].items()])
        w.family("pgs_unavailable", "Placement groups serving no I/O", [({}, d["pgs"]["unavailable"])])
        u = d["usage"]
        w.family("cluster_bytes", "Raw capacity", [({"state": k.removesuffix("_bytes")}, u[k])
                                                   for k in ("total_bytes", "used_bytes", "avail_bytes")])
        for key, name, text in POOL_GAUGES:
            w.family(name, text, [({"pool": p["name"]}, p[key]) for p in d["pools"]])
        w.family("pool_state", "1 for the pool's state (ok, degraded, unavailable)",
                 [({"pool": p["name"], "state": s}, int(p["state"] == s)) for p in d["pools"] for s in POOL_STATES])
        for key, name in IO:
            w.family(name, f"Client I/O rate ({key})", [({}, d["client_io"][key])])
            w.family(f"pool_{name}", f"Client I/O rate per pool ({key})",
                     [({"pool": p["name"]}, p["client_io"][key]) for p in d["pools"]])
        w.family("recovery_bytes_per_second", "Recovery rate", [({}, d["recovery"]["recovering_bytes_per_sec"])])
    n = d["node"]
    w.family("node_daemon_running", "Ceph daemons of this cluster on this node",
             [({"daemon": x["name"]}, int(x["running"])) for x in n["daemons"]])
    w.family("node_daemon_rss_bytes", "Resident memory of the daemon",
             [({"daemon": x["name"]}, x.get("rss_bytes")) for x in n["daemons"]])
    w.family("node_daemon_cpu_seconds_total", "CPU time used by the daemon",
             [({"daemon": x["name"]}, x.get("cpu_seconds")) for x in n["daemons"]], kind="counter")
    w.family("node_daemon_cpu_percent", "CPU use since the previous report",
             [({"daemon": x["name"]}, x.get("cpu_percent")) for x in n["daemons"]])
    w.family("node_mapped_devices", "Images mapped to block devices on this node", [({}, len(n["mapped_devices"]))])
    w.family("node_instance_affected", "Instances on this node with a disk in a degraded or unavailable pool",
             [({"instance": i}, 1) for i in n["affected_instances"]])
    return w.text()
