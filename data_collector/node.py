"""This node's part of the report: Ceph daemons, mapped devices, instances hurt; pure functions.

gather.py collects the facts (/proc, the mappers' links, Ganeti's
instance-disks links and KVM runtime files) into `Facts`; here they are
joined with the cluster's answers. Disks are matched to images by device
(kernelspace: Ganeti's link and our mapper's link point at the same device)
or by the `rbd:<pool>/<image>` URI QEMU was given (userspace).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ganeti_ceph.rbd import fencing

URI_RE = re.compile(r"^rbd:(\w+)/([A-Za-z0-9.-]+)")
BAD_POOL_STATES = ("degraded", "unavailable")


@dataclass(frozen=True)
class Facts:
    """What gather.py found on this node."""

    name: str
    addresses: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)  # {name, pid, rss_bytes, cpu_*}
    mapped: list[tuple[str, str, str]] = field(default_factory=list)  # (pool, image, device)
    disk_links: dict[str, str] = field(default_factory=dict)  # "<instance>:<n>" -> device
    runtimes: dict[str, Any] = field(default_factory=dict)  # instance -> KVM runtime JSON
    agent_running: bool = False  # the provider's agent (ganeti-ceph-agent) runs here


def parse_daemon_argv(argv: list[str]) -> dict[str, str] | None:
    """{type, id, name, conf} of a ceph-mon/osd/mgr command line, or None if it names no daemon."""
    if not argv:
        return None
    kind = os.path.basename(argv[0]).removeprefix("ceph-")
    opts: dict[str, str] = {}
    for a, b in itertools.pairwise([*argv, ""]):
        for flag, key in (("-i", "id"), ("--id", "id"), ("-n", "name"), ("--name", "name"), ("-c", "conf"),
                          ("--conf", "conf"), ("--cluster", "cluster")):
            if a == flag:
                opts[key] = b
            elif flag.startswith("--") and a.startswith(flag + "="):
                opts[key] = a.split("=", 1)[1]
    ident = opts.get("id") or opts.get("name", "").partition(".")[2]
    if kind not in ("mon", "osd", "mgr") or not ident:
        return None
    conf = opts.get("conf") or f"/etc/ceph/{opts.get('cluster', 'ceph')}.conf"
    return {"type": kind, "id": ident, "name": f"{kind}.{ident}", "conf": conf}


def _host(addr: str) -> str:
    """'127.0.0.1:6789/0' or '[::1]:6789' -> the IP."""
    return addr.split("/")[0].rsplit(":", 1)[0].strip("[]")


def expected_daemons(facts: Facts, raw: dict[str, Any] | None) -> list[str]:
    """Daemons the cluster places on this node: OSDs under its CRUSH host, mons on its addresses."""
    if raw is None:
        return []
    short = {facts.name, facts.name.split(".")[0]}
    nodes = (raw.get("osd tree") or {}).get("nodes", [])
    by_id = {n["id"]: n for n in nodes}
    names = [by_id[c]["name"] for n in nodes if n.get("type") == "host" and n.get("name") in short
             for c in n.get("children", []) if c in by_id]
    for m in (raw.get("mon dump") or {}).get("mons", []):
        addrs = [a.get("addr", "") for a in m.get("public_addrs", {}).get("addrvec", [])] or [m.get("addr", "")]
        if any(_host(a) in facts.addresses for a in addrs):
            names.append(f"mon.{m['name']}")
    return names


def daemons(facts: Facts, expected: list[str]) -> list[dict[str, Any]]:
    running = {p["name"]: p for p in facts.processes}
    out = [{"name": n, "running": True, **{k: v for k, v in p.items() if k != "name"}} for n, p in running.items()]
    out += [{"name": n, "running": False} for n in expected if n not in running]
    return sorted(out, key=lambda d: d["name"])


def instance_disks(facts: Facts) -> list[dict[str, Any]]:
    """Ceph disks of the instances running here: (instance, index, pool, image, access)."""
    by_dev = {dev: (pool, image) for pool, image, dev in facts.mapped}
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for link, dev in facts.disk_links.items():
        inst, _, idx = link.rpartition(":")
        if inst and idx.isdigit() and dev in by_dev:
            pool, image = by_dev[dev]
            found[(inst, int(idx))] = {"pool": pool, "image": image, "access": "kernelspace", "device": dev}
    for inst, runtime in facts.runtimes.items():
        disks = runtime[3] if isinstance(runtime, list) and len(runtime) > 3 else []
        for idx, entry in enumerate(disks):
            uri = entry[2] if isinstance(entry, list) and len(entry) > 2 and isinstance(entry[2], str) else ""
            m = URI_RE.match(uri)
            if m and (inst, idx) not in found:
                found[(inst, idx)] = {"pool": m.group(1), "image": m.group(2), "access": "userspace", "device": None}
    return [{"instance": i, "index": n, **d} for (i, n), d in sorted(found.items())]


def fenced(facts: Facts, raw: dict[str, Any] | None) -> bool | None:
    """True if one of this node's IPs is fenced (its whole IP in the OSD blocklist); None if not asked."""
    listing = (raw or {}).get("osd blocklist ls")
    if listing is None:
        return None
    entries = {e.get("addr", "") for e in listing}
    return any(fencing.fenced(entries, ip) for ip in facts.addresses)


def section(facts: Facts, raw: dict[str, Any] | None, pool_states: dict[str, str],
            image_io: dict[str, dict[str, dict[str, float]]] | None = None) -> dict[str, Any]:
    """data.node: daemons here, mapped devices (in use by an instance disk here or not), instance
    disks with their pool's state and I/O rates (`image_io`: pool -> image -> rates, report.image_io;
    None for a disk whose pool the mgr did not answer for, {} for an image without I/O), the
    instances hurt, the agent, a fence."""
    io = image_io or {}
    disks = [{**d, "pool_state": pool_states.get(d["pool"], "unknown"),
              "io": io[d["pool"]].get(d["image"], {}) if d["pool"] in io else None}
             for d in instance_disks(facts)]
    used = {d["device"] for d in disks if d["device"]}
    return {
        "name": facts.name,
        "daemons": daemons(facts, expected_daemons(facts, raw)),
        "mapped_devices": [{"pool": p, "image": i, "device": d, "in_use": d in used} for p, i, d in facts.mapped],
        "instance_disks": disks,
        "affected_instances": sorted({d["instance"] for d in disks if d["pool_state"] in BAD_POOL_STATES}),
        "agent_running": facts.agent_running,
        "fenced": fenced(facts, raw),
    }
