"""/metrics of the real daemon on the session's real local cluster, read by prometheus-client's own
parser, and a real Prometheus from Debian scraping it and evaluating the shipped alert rules
against a real fault (one OSD stopped with the cluster's own daemon control, then started again).

Prometheus runs from /usr/bin/prometheus with our own config and data dir in a temp dir, on
127.0.0.1 (ports GANETI_CEPH_PROM_PORT, GANETI_CEPH_MOND_PORT; defaults 13791, 13790), bounded
and torn down. Its scrape and evaluation intervals are 1 s and the rules' `for:` is 2 s in
its copy of the rules: the expressions are the shipped ones (promtool's unit tests in
tests/alerts/ cover the shipped durations).

Not here: a Ganeti instance (this machine runs none in this test): the instance disk whose
I/O is checked is named by a KVM runtime file written into a temp Ganeti runtime dir, the way
Ganeti writes it; the image and its I/O (librbd writes) and the mgr's per-image stats are real.
Nor a block device mapping (this kernel has no krbd or nbd): the stale mapping is a row of the
daemon's mapping table (its own temp run_dir) naming a plain file, as a mapper would leave it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from data_collector import gather, metrics
from ganeti_ceph.rbd.mappers import table
from ganeti_ceph.rbd.mappers.table import Target
from ganeti_ceph.session import Session
from gnt_storage.deploy import daemons
from gnt_storage.deploy.daemons import Daemon
from gnt_storage.deploy.local import child_env
from tests.conftest import BIN, REPO, LocalCluster

MOND = os.path.join(BIN, "ganeti-ceph-mond")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"  # Debian's prometheus package
MOND_PORT = int(os.environ.get("GANETI_CEPH_MOND_PORT", "13790"))
PROM_PORT = int(os.environ.get("GANETI_CEPH_PROM_PORT", "13791"))
RULES = Path(REPO) / "data_collector" / "alerts" / "ganeti-ceph.rules.yml"
ALIGNED = ("ceph_health_status", "ceph_osd_up", "ceph_osd_in", "ceph_mon_quorum_status", "ceph_pool_metadata",
           "ceph_pool_stored", "ceph_pool_bytes_used", "ceph_pool_max_avail", "ceph_pool_percent_used",
           "ceph_cluster_total_bytes")
VICTIM = Daemon("osd", "1")


def free(port: int) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # fails loudly if something already listens there
    return port


def get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as res:
        assert res.status == 200
        return res.read().decode()


def until(what: str, seconds: float, probe: Callable[[], Any]) -> Any:
    """probe() until it returns something true, at most `seconds`; its last value in the failure."""
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as exc:  # not listening yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    pytest.fail(f"{what} not seen within {seconds:.0f} s (last: {last!r})")


def families(text: str) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def mond_run_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The daemon's run_dir (its mapping table), a temp dir of this test's own."""
    return str(tmp_path_factory.mktemp("mond-run"))


@pytest.fixture(scope="module")
def mond(local_cluster: LocalCluster, mond_run_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("mond")
    settings = yaml.safe_load(Path(local_cluster.dir, "ganeti-ceph.yaml").read_text())
    (tmp / "ganeti-ceph.yaml").write_text(yaml.safe_dump({**settings, "run_dir": mond_run_dir}))
    argv = ["--bind", "127.0.0.1", "--port", str(free(MOND_PORT)), "--config", str(tmp / "ganeti-ceph.yaml"),
            "--interval", "1", "--timeout", "3", "--pidfile", str(tmp / "mond.pid"), "--log", str(tmp / "mond.log")]
    subprocess.run([MOND, "start", *argv], check=True, timeout=30)
    try:
        yield f"http://127.0.0.1:{MOND_PORT}"
    finally:
        subprocess.run([MOND, "stop", *argv], check=True, timeout=30)


@pytest.fixture(scope="module")
def prometheus(mond: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "2s"  # only the wait: the expressions stay the shipped ones
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [{"job_name": "ganeti-ceph",
                            "static_configs": [{"targets": [mond.removeprefix("http://")]}]}]}))
    argv = [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{free(PROM_PORT)}", "--log.level=warn"]
    with open(tmp / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{PROM_PORT}"
    try:
        until("Prometheus ready", 60, lambda: proc.poll() is None and "Ready" in get(f"{url}/-/ready"))
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = json.loads(get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def alerts(prom: str, name: str) -> list[dict[str, Any]]:
    body = json.loads(get(f"{prom}/api/v1/alerts"))
    return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == name]


def test_daemon_metrics_parse_with_prometheus_client(mond: str) -> None:
    text = until("a report with the cluster's facts", 30, lambda: (t := get(f"{mond}/metrics")) and
                 "ceph_health_status" in t and t)
    fams = families(text)
    assert not [f for f in ALIGNED if f not in fams], "aligned families missing"
    assert {s.labels["ceph_daemon"] for s in fams["ceph_osd_up"]} == {"osd.0", "osd.1", "osd.2"}
    assert {s.labels["ceph_daemon"]: s.value for s in fams["ceph_mon_quorum_status"]} == {"mon.a": 1.0}
    assert "rbd" in {s.labels["name"] for s in fams["ceph_pool_metadata"]}
    assert all(set(s.labels) == {"pool_id"} for s in fams["ceph_pool_stored"])
    assert not [s for ss in fams.values() for s in ss if "instance" in s.labels]
    assert [s.value for s in fams["ganeti_ceph_node_fenced"]] == [0.0]  # the blocklist was read, this node is in none
    assert [s.value for s in fams["ganeti_ceph_up"]] == [1.0]
    assert "ganeti_ceph_agent_up" in fams


def test_instance_disk_io_from_the_mgr(local_cluster: LocalCluster, tmp_path: Path) -> None:
    """A real image with real writes, named as an instance's disk by a KVM runtime file."""
    import rbd

    image = "h3-prom-disk"
    conf = tmp_path / "kvm-hypervisor" / "conf"
    conf.mkdir(parents=True)
    (conf / "web.runtime").write_text(json.dumps(
        [["kvm"], [], {}, [[{"uuid": "x"}, "/var/run/ganeti/instance-disks/web:0", f"rbd:rbd/{image}:id=ganeti"]]]))
    collector = gather.Collector(local_cluster.client, str(tmp_path))
    with Session(local_cluster.client) as s, s.ioctx("rbd") as io:
        rbd.RBD().create(io, image, 64 << 20)
        try:
            with rbd.Image(io, image) as img:
                def written() -> list[Any]:
                    for i in range(8):
                        img.write(b"x" * (1 << 20), (i % 60) << 20)
                    fams = families(metrics.render(collector.report()))
                    return [x for x in fams.get("ganeti_ceph_instance_disk_write_bytes_per_second", [])
                            if x.value > 0]

                (sample,) = until("the disk's writes in the mgr's image stats", 60, written)
        finally:
            collector.close()
            rbd.RBD().remove(io, image)
    assert sample.labels == {"ganeti_instance": "web", "disk": "0", "pool": "rbd", "image": image}


def test_prometheus_fires_osd_down_on_a_stopped_osd(local_cluster: LocalCluster, prometheus: str) -> None:
    until("the daemon scraped with the OSDs up", 60,
          lambda: len(query(prometheus, 'ceph_osd_up{job="ganeti-ceph"} == 1')) == 3)
    assert not alerts(prometheus, "CephOSDDown")
    run_dir, conf = os.path.join(local_cluster.dir, "run"), local_cluster.conf
    assert daemons.stop([VICTIM], run_dir, conf) == [VICTIM.name]
    try:
        fired = until("CephOSDDown firing for osd.1", 90, lambda: [
            a for a in alerts(prometheus, "CephOSDDown")
            if a["state"] == "firing" and a["labels"].get("ceph_daemon") == VICTIM.name])
        assert "instance" not in fired[0]["labels"] and fired[0]["labels"]["severity"] == "warning"
        assert fired[0]["annotations"]["summary"] == "osd.1 is down"
    finally:
        daemons.start([VICTIM], conf, os.path.join(local_cluster.dir, "log"), child_env())
    until("osd.1 up again and the alert gone", 90, lambda: query(
        prometheus, 'ceph_osd_up{ceph_daemon="osd.1"} == 1') and not alerts(prometheus, "CephOSDDown"))
    until("HEALTH_OK again", 120, lambda: query(prometheus, "ceph_health_status == 0"))


def test_prometheus_fires_stale_mapping(mond: str, mond_run_dir: str, prometheus: str, tmp_path: Path) -> None:
    fsid = json.loads(get(f"{mond}/1/report/storage/ceph"))["data"]["cluster"]["fsid"]
    target, dev = Target(fsid, "rbd", "h3-left-behind"), tmp_path / "dev-loop9"
    dev.write_text("")
    assert not alerts(prometheus, "GanetiCephStaleMapping")
    table.publish(mond_run_dir, target, str(dev))
    try:
        fired = until("GanetiCephStaleMapping firing", 60, lambda: [
            a for a in alerts(prometheus, "GanetiCephStaleMapping") if a["state"] == "firing"])
        assert {k: fired[0]["labels"][k] for k in ("pool", "image", "device")} == \
            {"pool": "rbd", "image": target.image, "device": str(dev)}
        assert fired[0]["labels"]["instance"] == mond.removeprefix("http://")  # the node: Prometheus' target
    finally:
        table.unpublish(mond_run_dir, target)
    until("the alert gone", 60, lambda: not alerts(prometheus, "GanetiCephStaleMapping"))
