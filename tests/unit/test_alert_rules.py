"""The shipped alerting rules, through Debian's real promtool: `check rules`, and `test rules`
(tests/alerts/, with the shipped `for:` durations); every alert has a test, and every metric a
rule reads is one /metrics serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from data_collector import metrics
from tests.conftest import REPO
from tests.unit.test_collector_metrics import NODE, with_node_facts
from tests.unit.test_collector_report import make

RULES = Path(REPO) / "data_collector" / "alerts" / "ganeti-ceph.rules.yml"
TESTS = Path(REPO) / "tests" / "alerts" / "ganeti-ceph.rules.test.yml"
PROMTOOL = shutil.which("promtool") or "promtool"  # Debian's prometheus package (scripts/install-deps)


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules())} rules found" in res.stdout


def test_promtool_test_rules() -> None:
    res = promtool("test", "rules", str(TESTS))
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_every_alert_is_tested() -> None:
    tested = {t["alertname"] for case in yaml.safe_load(TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {r["alert"] for r in rules()} == tested


def test_rules_read_only_served_metrics() -> None:
    served = {f.name for name in ("osd-down", "pool-quota-full", "mon-down-1-of-3")
              for f in metrics.families(make(name, with_node_facts, NODE)[0])}
    read = {m for r in rules() for m in re.findall(r"\b(?:ceph|ganeti_ceph)_\w+", r["expr"])}
    assert read and read <= served, read - served
