"""Ceph's JSON -> Ganeti's report object and its status code; pure functions.

gather.py asks Ceph and hands over what it got, keyed by command (see
gather.COMMANDS); this module decides. So the code mapping documented in
doc/data-collector.md is unit-tested from real outputs captured on local
clusters (tests/unit/test_collector_data/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from data_collector import CATEGORY, FORMAT_VERSION, KIND, NAME, node
from ganeti_ceph.rbd.iostats import IMAGE_STATS, image_io

OK, HEALING, UNKNOWN, ADMIN = 0, 1, 2, 4
WHY = {OK: "healthy", HEALING: "self-healing", UNKNOWN: "cluster could not be asked", ADMIN: "needs an admin"}
# Checks Ceph resolves by itself: a down OSD returns or is marked out and its
# data re-replicated. MON_DOWN and PG_AVAILABILITY are decided case by case.
HEALING_CHECKS = frozenset({"OSD_DOWN", "OSD_HOST_DOWN", "PG_DEGRADED"})
SETTLED = frozenset({"active", "clean", "scrubbing", "deep", "snaptrim", "snaptrim_wait", "laggy", "wait"})
TRANSITIONAL = frozenset({"peering", "activating"})  # inactive, but on the way to active
DEGRADED = frozenset({"degraded", "undersized", "recovering", "recovery_wait", "recovery_toofull",
                      "backfill_toofull", "inconsistent", "stale"})
DETAIL_LINES = 10
ENTITY_RE = re.compile(r"\b((?:osd|mon|mgr|mds)\.[\w-]+)|pool '([^']+)'")
IO_KEYS = ("read_bytes_sec", "write_bytes_sec", "read_op_per_sec", "write_op_per_sec")
RECOVERY_KEYS = ("recovering_objects_per_sec", "recovering_bytes_per_sec", "degraded_objects", "misplaced_objects",
                 "unfound_objects")


def parts(state: str) -> set[str]:
    return set(state.split("+"))


def settled(state: str) -> bool:
    p = parts(state)
    return {"active", "clean"} <= p <= SETTLED


def mgr_available(status: dict[str, Any]) -> bool:
    return bool(status.get("mgrmap", {}).get("available"))


def pgs_unsettled(status: dict[str, Any]) -> bool:
    """Some PG is not active+clean: worth one PG listing to say which pools."""
    return any(not settled(s["state_name"]) for s in status.get("pgmap", {}).get("pgs_by_state", []))


def pg_unavailable(state: str, acting: list[int], up: set[int] | None) -> bool:
    """No client I/O is served: inactive and not merely peering, or stale with no acting OSD up."""
    p = parts(state)
    if "stale" in p:
        return up is None or not any(o in up for o in acting)
    if "active" in p:
        return False
    return not p & TRANSITIONAL or bool(p & {"down", "incomplete", "unknown", "peered"})


# -- sections -----------------------------------------------------------------------

def health_checks(health: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, c in sorted((health.get("checks") or {}).items()):
        detail = [d.get("message", "") for d in c.get("detail") or []]
        ents = sorted({a or f"pool {b}" for line in detail for a, b in ENTITY_RE.findall(line)})
        out.append({"name": name, "severity": c.get("severity", "HEALTH_WARN"),
                    "summary": c.get("summary", {}).get("message", ""), "count": c.get("summary", {}).get("count", 0),
                    "muted": bool(c.get("muted")), "entities": ents, "detail": detail[:DETAIL_LINES]})
    return out


def mons(status: dict[str, Any], mondump: dict[str, Any] | None) -> dict[str, Any]:
    """Who is in quorum, who is out, and whether one more loss ends quorum."""
    quorum = list(status.get("quorum_names") or [])
    names = [m["name"] for m in (mondump or {}).get("mons", [])] or quorum
    total = max(len(names), status.get("monmap", {}).get("num_mons", 0))
    majority = total // 2 + 1
    out = [n for n in names if n not in quorum]
    return {"total": total, "in_quorum": quorum, "out_of_quorum": out, "majority": majority,
            "quorum_at_risk": bool(out) and len(quorum) - 1 < majority}


def osds(status: dict[str, Any], tree: dict[str, Any] | None) -> dict[str, Any]:
    m = status.get("osdmap", {})
    items = [n for n in (tree or {}).get("nodes", []) if n.get("type") == "osd"]
    return {"total": m.get("num_osds", 0), "up": m.get("num_up_osds", 0), "in": m.get("num_in_osds", 0),
            "names": sorted((n["name"] for n in items), key=_natural),
            "down": sorted((n["name"] for n in items if n.get("status") != "up"), key=_natural),
            "out": sorted((n["name"] for n in items if not n.get("reweight")), key=_natural)}


def _natural(name: str) -> tuple[str, int]:
    kind, _, num = name.partition(".")
    return (kind, int(num)) if num.isdigit() else (name, -1)


def up_osds(tree: dict[str, Any] | None) -> set[int] | None:
    if tree is None:
        return None
    return {n["id"] for n in tree.get("nodes", []) if n.get("type") == "osd" and n.get("status") == "up"}


def pgs(status: dict[str, Any], brief: dict[str, Any] | None, up: set[int] | None) -> dict[str, Any]:
    """Counts by state, and which pools have unavailable or degraded PGs (from the listing, if fetched)."""
    by_state = {s["state_name"]: s["count"] for s in status.get("pgmap", {}).get("pgs_by_state", [])}
    out: dict[str, Any] = {"total": status.get("pgmap", {}).get("num_pgs", 0), "by_state": by_state}
    if brief is None:
        inactive = {s: n for s, n in by_state.items() if "active" not in parts(s) or "stale" in parts(s)}
        stuck = any(not parts(s) & TRANSITIONAL or "stale" in parts(s) for s in inactive)
        out.update(unavailable=sum(inactive.values()) if stuck else 0, per_pool=None)
        return out
    per_pool: dict[int, dict[str, int]] = {}
    unavailable = 0
    for pg in brief.get("pg_stats", []):
        pool = per_pool.setdefault(int(pg["pgid"].split(".")[0]), {"unavailable": 0, "degraded": 0, "unsettled": 0})
        if pg_unavailable(pg["state"], pg.get("acting", []), up):
            pool["unavailable"] += 1
            unavailable += 1
        elif parts(pg["state"]) & DEGRADED:
            pool["degraded"] += 1
        if not settled(pg["state"]):
            pool["unsettled"] += 1
    out.update(unavailable=unavailable, per_pool=per_pool)
    return out


def pools(raw: dict[str, Any], pg_info: dict[str, Any]) -> list[dict[str, Any]]:
    """Usage, quota, free space, client I/O and a state per pool: ok, degraded or unavailable."""
    df = {p["name"]: p.get("stats", {}) for p in (raw.get("df detail") or {}).get("pools", [])}
    io = {p["pool_name"]: p for p in raw.get("osd pool stats") or []}
    out = []
    for p in raw.get("osd pool ls detail") or []:
        name, st = p["pool_name"], df.get(p["pool_name"], {})
        flags = [f for f in p.get("flags_names", "").split(",") if f]
        qbytes, qobjects = p.get("quota_max_bytes") or 0, p.get("quota_max_objects") or 0
        stored, objects, free = st.get("stored"), st.get("objects"), st.get("max_avail")
        if qbytes and stored is not None:
            free = max(0, min(qbytes - stored, free if free is not None else qbytes))
        stats = io.get(name, {})
        degraded_objects = (stats.get("recovery") or {}).get("degraded_objects", 0)
        pg = ((pg_info.get("per_pool") or {}).get(p["pool_id"])) or {}
        problems = [text for flag, text in (("full_quota", "quota reached"), ("full", "full"),
                                            ("nearfull", "near full"), ("backfillfull", "backfill full"))
                    if flag in flags]
        if pg.get("unavailable"):
            problems.append(f"{pg['unavailable']} PGs unavailable")
        if degraded_objects or pg.get("degraded"):
            problems.append(f"{pg.get('degraded', 0)} PGs degraded, {degraded_objects} objects degraded")
        state = ("unavailable" if pg.get("unavailable") or {"full", "full_quota"} & set(flags)
                 else "degraded" if degraded_objects or pg.get("degraded") else "ok")
        out.append({
            "name": name, "id": p["pool_id"], "applications": sorted(p.get("application_metadata") or {}),
            "size": p.get("size"), "min_size": p.get("min_size"), "pg_num": p.get("pg_num"),
            "stored_bytes": stored, "used_bytes": st.get("bytes_used"), "objects": objects,
            "used_ratio": st.get("percent_used"), "max_avail_bytes": st.get("max_avail"),
            "quota_max_bytes": qbytes, "quota_max_objects": qobjects, "free_bytes": free,
            "free_objects": max(0, qobjects - objects) if qobjects and objects is not None else None,
            "flags": flags, "state": state, "problems": problems, "degraded_objects": degraded_objects,
            "client_io": _rates(stats.get("client_io_rate") or {}, IO_KEYS),
            "recovery_io": stats.get("recovery_rate") or {},
        })
    return out


def rbd_pools(listing: list[dict[str, Any]] | None) -> list[str]:
    """The pools of the RBD application, from `osd pool ls detail`."""
    return [p["pool_name"] for p in listing or [] if "rbd" in (p.get("application_metadata") or {})]


def _rates(src: dict[str, Any], keys: tuple[str, ...]) -> dict[str, int]:
    return {k: int(src.get(k) or 0) for k in keys}


# -- the status code ----------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    code: int
    text: str


def findings(checks: list[dict[str, Any]], mon: dict[str, Any], pg: dict[str, Any],
             pool_list: list[dict[str, Any]]) -> list[Finding]:
    """One finding per unmuted health check, plus PG trouble no check reports yet."""
    out = []
    bad_pools = sorted(p["name"] for p in pool_list if p["state"] == "unavailable")
    for c in (c for c in checks if not c["muted"]):
        name, extra = c["name"], ""
        if c["severity"] == "HEALTH_ERR":
            code = ADMIN
        elif name == "MON_DOWN":
            code = ADMIN if mon["quorum_at_risk"] else HEALING
            extra = " (quorum is lost if one more mon fails)" if mon["quorum_at_risk"] else ""
        elif name == "PG_AVAILABILITY":
            code = ADMIN if pg["unavailable"] else HEALING
        else:
            code = HEALING if name in HEALING_CHECKS else ADMIN
        names = [e for e in c["entities"] if e not in c["summary"]]
        ents = f" [{', '.join(names[:8])}{', ...' if len(names) > 8 else ''}]" if names else ""
        out.append(Finding(code, f"{name}: {c['summary']}{ents}{extra}"))
    reported = {c["name"] for c in checks}
    if mon["out_of_quorum"] and "MON_DOWN" not in reported:  # Ceph holds MON_DOWN back a minute after mkfs
        out.append(Finding(ADMIN if mon["quorum_at_risk"] else HEALING,
                           f"mons out of quorum: {', '.join('mon.' + n for n in mon['out_of_quorum'])} "
                           f"({len(mon['in_quorum'])} of {mon['total']} in quorum)"
                           + (" (quorum is lost if one more mon fails)" if mon["quorum_at_risk"] else "")))
    if pg["unavailable"] and "PG_AVAILABILITY" not in reported:
        where = f" (pools {', '.join(bad_pools)})" if bad_pools else ""
        out.append(Finding(ADMIN, f"{pg['unavailable']} PGs unavailable{where}: no up OSD serves them"))
    if not out and any(not settled(s) for s in pg["by_state"]):
        states = ", ".join(f"{n} {s}" for s, n in sorted(pg["by_state"].items()) if not settled(s))
        out.append(Finding(HEALING, f"PGs settling: {states}"))
    return out


def status_of(found: list[Finding], muted: list[str], affected: list[str]) -> dict[str, Any]:
    if not found:
        return {"code": OK, "message": WHY[OK] + (f" (muted: {', '.join(muted)})" if muted else "")}
    code = max(f.code for f in found)
    message = f"{WHY[code]}: " + "; ".join(f.text for f in found if f.code == code)
    lesser = [f.text for f in found if f.code < code]
    if lesser:
        message += "; also self-healing: " + "; ".join(lesser)
    if affected:
        message += f"; instances affected on this node: {', '.join(affected)}"
    return {"code": code, "message": message}


# -- the report -----------------------------------------------------------------------

def envelope(data: dict[str, Any], version: str, timestamp_ns: int) -> dict[str, Any]:
    """Ganeti's report object (ganeti-contract.md, monitoring daemon)."""
    return {"name": NAME, "version": version, "format_version": FORMAT_VERSION, "timestamp": timestamp_ns,
            "category": CATEGORY, "kind": KIND, "data": data}


def build(raw: dict[str, Any] | None, facts: node.Facts, *, cluster: str, version: str, error: str | None,
          timestamp_ns: int, duration: float) -> dict[str, Any]:
    """The report from the raw answers (None: the cluster could not be asked, `error` says why)."""
    commands = sorted(k for k in raw or {} if not k.startswith("_"))
    notes = list((raw or {}).get("_notes") or [])
    if raw is not None and not raw["status"].get("quorum_names"):
        total = raw["status"].get("monmap", {}).get("num_mons", "?")
        raw, error = None, f"no mon quorum: the mon that answered is out of quorum ({total} mons in the monmap)"
    if raw is None:
        here = node.section(facts, None, {})
        data: dict[str, Any] = {"status": {"code": UNKNOWN, "message": f"{WHY[UNKNOWN]}: {error or 'no answer'}"},
                                "cluster": {"name": cluster, "fsid": None}, "node": here}
    else:
        status = raw["status"]
        tree = raw.get("osd tree")
        pg = pgs(status, raw.get("pg dump pgs_brief"), up_osds(tree))
        pool_list = pools(raw, pg)
        checks = health_checks(raw.get("health detail") or status.get("health", {}))
        mon = mons(status, raw.get("mon dump"))
        here = node.section(facts, raw, {p["name"]: p["state"] for p in pool_list},
                            image_io(raw.get(IMAGE_STATS) or {}))
        found = findings(checks, mon, pg, pool_list)
        pgmap = status.get("pgmap", {})
        data = {
            "status": status_of(found, [c["name"] for c in checks if c["muted"]], here["affected_instances"]),
            "cluster": {"name": cluster, "fsid": status.get("fsid")},
            "health": {"status": (raw.get("health detail") or status.get("health", {})).get("status"),
                       "checks": checks},
            "mons": mon, "mgr": {"available": mgr_available(status),
                                 "standbys": status.get("mgrmap", {}).get("num_standbys", 0)},
            "osds": osds(status, tree),
            "pgs": {k: v for k, v in pg.items() if k != "per_pool"},
            "usage": {"total_bytes": pgmap.get("bytes_total"), "used_bytes": pgmap.get("bytes_used"),
                      "avail_bytes": pgmap.get("bytes_avail"), "stored_bytes": pgmap.get("data_bytes"),
                      "objects": pgmap.get("num_objects")},
            "pools": pool_list,
            "client_io": _rates(pgmap, IO_KEYS),
            "recovery": _rates(pgmap, RECOVERY_KEYS),
            "node": here,
        }
    data["collector"] = {"duration_s": round(duration, 4), "commands": commands, "notes": notes}
    return envelope(data, version, timestamp_ns)
