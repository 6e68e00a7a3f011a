"""The Ceph health collector: one report, versus asking `ceph` by hand; and its cost with many images.

Baseline for both report benches: `ceph status -f json` plus `ceph health
detail -f json`, each a whole process, as the admin client, on the same
cluster (what a monitoring script would run).
- collector-daemon: one report from the running ganeti-ceph-mond, an HTTP
  GET of /1/report/storage/ceph (a fresh connection each time, in-process,
  as a scraper does).
- collector-one-shot: the whole `ganeti-ceph-collector` process.
- collector-1000-images: the daemon's cost, one refresh (Collector.report()
  on its kept connection, as its refresh thread does), with 1000 images in
  the pool (ours) versus 10 (baseline): a second cluster, the images made
  in-process with librbd.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from harness import GNT_STORAGE, SCRATCH, VENV_BIN, BenchError, Ctx, Result, Shared, bench, compare, log, time_cmd

from data_collector import gather
from ganeti_ceph import config
from ganeti_ceph.session import Session
from gnt_storage.deploy.local import admin_config

MOND_PORT = 14290  # below the bench slots' Ceph ports (14300+)
RUNS = 10


class Clusters:
    """Two local clusters (10 and 1000 images) and a ganeti-ceph-mond on the first."""

    def __init__(self, shared: Shared) -> None:
        self.dirs: dict[int, str] = {}
        for images in (10, 1000):
            root, port = shared.slots.slot(f"collector-{images}")
            shared.on_close(lambda root=root: time_cmd([GNT_STORAGE, "local-cluster", "down", "--dir", root]))
            log(f"collector benches: a cluster with {images} images in {root} (port {port})")
            time_cmd([GNT_STORAGE, "local-cluster", "up", "--dir", root, "--port", str(port)], timeout=300)
            make_images(root, images)
            self.dirs[images] = root
        self.pidfile = os.path.join(SCRATCH, "collector-mond.pid")
        shared.on_close(lambda: time_cmd([*self.mond_argv("stop")]))
        time_cmd(self.mond_argv("start"))
        self.wait_for_report()

    def yaml(self, images: int = 10) -> str:
        return os.path.join(self.dirs[images], "ganeti-ceph.yaml")

    def mond_argv(self, action: str) -> list[str]:
        return [os.path.join(VENV_BIN, "ganeti-ceph-mond"), action, "--bind", "127.0.0.1", "--port", str(MOND_PORT),
                "--config", self.yaml(), "--pidfile", self.pidfile, "--log", os.path.join(SCRATCH, "mond.log")]

    def wait_for_report(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if json.loads(get_report())["data"]["status"]["code"] == 0:
                return
            time.sleep(0.2)
        raise BenchError("ganeti-ceph-mond gave no healthy report within 30 s")

    def ceph(self, *args: str) -> float:
        root = self.dirs[10]
        return time_cmd(["ceph", "-c", os.path.join(root, "ceph.conf"), "--id", "admin", "--keyring",
                         os.path.join(root, "ceph.client.admin.keyring"), *args])


def make_images(root: str, count: int) -> None:
    """`count` empty 1 GiB images in the pool, in-process and in parallel (~13 ms each)."""
    import rbd

    with Session(admin_config(root)) as s, s.ioctx("rbd") as ioctx:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: rbd.RBD().create(ioctx, f"vol{i:04d}", 1 << 30, old_format=False),
                          range(count)))
        made = len(rbd.RBD().list(ioctx))
    if made < count:
        raise BenchError(f"made {made} images in {root}, wanted {count}")


def get_report() -> str:
    conn = http.client.HTTPConnection("127.0.0.1", MOND_PORT, timeout=10)
    try:
        conn.request("GET", "/1/report/storage/ceph")
        res = conn.getresponse()
        body = res.read().decode()
    finally:
        conn.close()
    if res.status != 200:
        raise BenchError(f"GET /1/report/storage/ceph answered {res.status}")
    return body


def clusters(ctx: Ctx) -> Clusters:
    return ctx.shared.get("collector-clusters", Clusters)


def by_hand(c: Clusters) -> float:
    return c.ceph("status", "-f", "json") + c.ceph("health", "detail", "-f", "json")


@bench("collector-daemon", runs=RUNS)
def daemon_report(ctx: Ctx) -> Result:
    c = clusters(ctx)

    def ours() -> float:
        started = time.monotonic()
        json.loads(get_report())
        return time.monotonic() - started

    return compare("collector-daemon", "ceph status+health", ctx.runs, ours, lambda: by_hand(c))


@bench("collector-one-shot", runs=RUNS)
def one_shot(ctx: Ctx) -> Result:
    c = clusters(ctx)
    argv = [os.path.join(VENV_BIN, "ganeti-ceph-collector"), "--config", c.yaml()]
    return compare("collector-one-shot", "ceph status+health", ctx.runs, lambda: time_cmd(argv),
                   lambda: by_hand(c))


@bench("collector-1000-images", runs=3 * RUNS)  # ~20 ms a sample: more samples against noise
def scaling(ctx: Ctx) -> Result:
    c = clusters(ctx)
    collectors = {n: gather.Collector(config.load(c.yaml(n))) for n in (10, 1000)}
    for col in collectors.values():
        col.report()  # connect: the daemon keeps its connection

    def refresh(n: int) -> float:
        started = time.monotonic()
        rep = collectors[n].report()
        took = time.monotonic() - started
        if rep["data"]["status"]["code"] == 2:
            raise BenchError(f"the {n}-image cluster could not be asked: {rep['data']['status']['message']}")
        return took

    try:
        return compare("collector-1000-images", "10 images", ctx.runs, lambda: refresh(1000), lambda: refresh(10))
    finally:
        for col in collectors.values():
            col.close()
