"""Checkers for the collector's two output formats, shared with tests/ceph.

`validate_report` holds a report to Ganeti's report object format (see
ganeti-contract.md, monitoring daemon) and to our data schema;
`parse_prometheus` is a strict parser of the text exposition format 0.0.4
(python3-prometheus-client is not installed here). Both raise AssertionError
with the reason; their own tests follow.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

REPORT_KEYS = {"name", "version", "format_version", "timestamp", "category", "kind", "data"}
CATEGORIES = {"instance", "storage", "daemon", "hypervisor", None}
CODES = {0, 1, 2, 4}
CLUSTER_KEYS = {"health", "mons", "mgr", "osds", "pgs", "usage", "pools", "client_io", "recovery"}
POOL_KEYS = {"name", "id", "stored_bytes", "used_bytes", "objects", "max_avail_bytes", "quota_max_bytes",
             "quota_max_objects", "free_bytes", "state", "client_io", "flags", "problems"}
CHECK_KEYS = {"name", "severity", "summary", "count", "muted", "entities", "detail"}
NODE_KEYS = {"name", "daemons", "mapped_devices", "instance_disks", "affected_instances"}


def validate_report(rep: Any) -> None:
    """Ganeti's report object, kind 1 (status), with our data schema."""
    assert isinstance(rep, dict) and set(rep) == REPORT_KEYS, f"keys {sorted(rep) if isinstance(rep, dict) else rep}"
    assert json.loads(json.dumps(rep)) == rep, "not plain JSON"
    assert rep["name"] == "ceph" and isinstance(rep["version"], str) and rep["version"]
    assert type(rep["format_version"]) is int and rep["format_version"] == 1
    assert type(rep["timestamp"]) is int and rep["timestamp"] > 10**18, "timestamp must be ns since the epoch"
    assert rep["category"] in CATEGORIES and rep["category"] == "storage"
    assert type(rep["kind"]) is int and rep["kind"] == 1
    data = rep["data"]
    status = data["status"]
    assert set(status) == {"code", "message"} and status["code"] in CODES and isinstance(status["message"], str)
    assert status["message"], "an empty message says nothing"
    assert set(data["node"]) >= NODE_KEYS
    for d in data["node"]["daemons"]:
        assert isinstance(d["name"], str) and isinstance(d["running"], bool)
    if status["code"] == 2:
        return
    assert set(data) >= CLUSTER_KEYS | {"status", "node", "cluster", "collector"}
    assert data["health"]["status"] in ("HEALTH_OK", "HEALTH_WARN", "HEALTH_ERR")
    for c in data["health"]["checks"]:
        assert set(c) == CHECK_KEYS and isinstance(c["muted"], bool) and isinstance(c["count"], int)
    m = data["mons"]
    assert not set(m["in_quorum"]) & set(m["out_of_quorum"])
    assert len(m["in_quorum"]) + len(m["out_of_quorum"]) <= m["total"]
    o = data["osds"]
    assert 0 <= o["up"] <= o["total"] and 0 <= o["in"] <= o["total"]
    assert sum(data["pgs"]["by_state"].values()) == data["pgs"]["total"]
    for p in data["pools"]:
        assert set(p) >= POOL_KEYS and p["state"] in ("ok", "degraded", "unavailable")


# -- Prometheus text format --------------------------------------------------------------

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^\n]*\})?\s+(\S+)(\s+-?\d+)?$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _labels(text: str) -> tuple[tuple[str, str], ...]:
    body, out, pos = text[1:-1], [], 0
    while pos < len(body):
        m = LABEL_RE.match(body, pos)
        assert m, f"bad labels {text!r}"
        value = re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), m.group(2))
        out.append((m.group(1), value))
        pos = m.end()
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), f"duplicate label in {text!r}"
    return tuple(out)


def _value(text: str) -> float:
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text), f"bad value {text!r}"
    return float(text)


def parse_prometheus(text: str) -> dict[str, dict[str, Any]]:
    """{family: {"type", "help", "samples": {labels: value}}}; strict about order and duplicates."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families: dict[str, dict[str, Any]] = {}
    current = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert NAME_RE.match(name), f"bad name in {line!r}"
                fam = families.setdefault(name, {"type": "untyped", "help": None, "samples": {}})
                assert not fam["samples"], f"{parts[1]} after samples of {name}"
                if parts[1] == "TYPE":
                    assert len(parts) == 4 and parts[3] in TYPES, f"bad TYPE line {line!r}"
                    fam["type"] = parts[3]
                else:
                    assert fam["help"] is None, f"second HELP for {name}"
                    fam["help"] = parts[3] if len(parts) == 4 else ""
                current = name
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"bad sample line {line!r}"
        name, labels = m.group(1), _labels(m.group(2)) if m.group(2) else ()
        assert name in families and name == current, f"sample {name} outside its family's block"
        assert labels not in families[name]["samples"], f"duplicate series {line!r}"
        families[name]["samples"][labels] = _value(m.group(3))
    return families


# -- the checkers' own tests ---------------------------------------------------------------------

def test_parser_accepts_the_format() -> None:
    text = ('# HELP a_b Things.\n# TYPE a_b gauge\na_b{x="1",y="q\\"\\\\\\n"} 3\na_b{x="2"} -1.5e3\n'
            "# TYPE c counter\nc NaN\n")
    fams = parse_prometheus(text)
    assert fams["a_b"]["samples"][(("x", "1"), ("y", 'q"\\\n'))] == 3
    assert fams["a_b"]["samples"][(("x", "2"),)] == -1500 and math.isnan(fams["c"]["samples"][()])


@pytest.mark.parametrize("bad", [
    "a 1",  # no newline at the end
    "a{x=1} 1\n",  # unquoted label value
    "# TYPE a gauge\na 1\na 2\n",  # duplicate series
    "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 3\n",  # family split in two blocks
    "# TYPE a gauge\na one\n",  # not a number
    "# TYPE a wobbly\na 1\n",  # unknown type
    "# TYPE 1a gauge\n1a 1\n",  # bad name
])
def test_parser_rejects(bad: str) -> None:
    with pytest.raises(AssertionError):
        parse_prometheus(bad)


def test_validator_rejects_a_non_report() -> None:
    with pytest.raises(AssertionError):
        validate_report({"name": "ceph", "data": {}})
    with pytest.raises(AssertionError):
        validate_report({"name": "ceph", "version": "1", "format_version": 1, "timestamp": 5, "category": "storage",
                         "kind": 1, "data": {"status": {"code": 0, "message": "ok"}}})
