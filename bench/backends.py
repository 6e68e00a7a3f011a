"""Backends (doc/backends.md): placement, listing and the placement records at scale.

All on the provider benches' shared local cluster (bench/provider.py), through the installed provider
and its agent, with catalogue files in the bench's scratch dir (config key `catalogue`):

- placement-50-backends: create with tags= (placement among 50 backends, each with limits, so each
  needs its figures) vs create with backend= named (its limits checked alike).
- backend-list-20: `gnt-storage backend list` over 20 backends vs `ceph df detail` alone.
- attach-500-volumes: userspace attach of a placed volume with 500 placement records vs with 5:
  the record is one omap key read, whatever the number of records.
"""

from __future__ import annotations

import dataclasses
import os

import rados
import rbd
import yaml
from harness import GNT_STORAGE, SCRATCH, Ctx, Result, bench, clean_env, compare, time_cmd
from provider import POOL, RUNS, Cluster, Names, cluster, vol_uuid

from ganeti_ceph import config as gconfig
from ganeti_ceph.rbd import backends
from ganeti_ceph.session import Session

SIZE_MIB = "1024"


def catalogue(c: Cluster, name: str, data: dict) -> str:
    """A ganeti-ceph config naming a catalogue file with `data`; its path."""
    cat = os.path.join(SCRATCH, f"{name}-backends.yaml")
    with open(cat, "w") as fh:
        yaml.safe_dump(data, fh)
    cfg = os.path.join(SCRATCH, f"{name}.yaml")
    with open(cfg, "w") as fh:
        fh.write(gconfig.dump(dataclasses.replace(gconfig.load(c.config), catalogue=cat)))
    return cfg


def many(n: int, tags: list[str]) -> list[dict]:
    """n backends on the one pool, each with limits (overcommit 100, a volume quota): figures needed."""
    return [{"name": f"b{i:02d}", "pool": POOL, "tags": tags, "cost": 1 + i % 7, "overcommit": 100,
             "quota_volumes": 100000} for i in range(n)]


def run_with(c: Cluster, cfg: str, action: str, vol: str, **extra: str) -> float:
    """The provider's `action` under the config `cfg` (its catalogue)."""
    return c.action(action, vol, GANETI_CEPH_CONFIG=cfg, **extra)


@bench("placement-50-backends", runs=RUNS)
def placement_50(ctx: Ctx) -> Result:
    c, names = cluster(ctx), Names("place")
    cfg = catalogue(c, "place50", {"backends": many(50, ["ssd"])})
    made: list[str] = []

    def create(**param: str) -> float:
        vol = names.new("v")
        took = run_with(c, cfg, "create", vol, VOL_SIZE=SIZE_MIB, VOL_UUID=vol_uuid(), **param)
        made.append(vol)
        run_with(c, cfg, "remove", vol)
        return took

    try:
        return compare("placement-50-backends", "backend= named", ctx.runs, lambda: create(EXTP_TAGS="ssd"),
                       lambda: create(EXTP_BACKEND="b17"))
    finally:
        c.drop(names.made)


@bench("backend-list-20", runs=RUNS)
def backend_list_20(ctx: Ctx) -> Result:
    c = cluster(ctx)
    cfg = catalogue(c, "list20", {"backends": many(20, ["hdd"])})
    env = {**clean_env(), "GANETI_CEPH_CONFIG": cfg}
    admin = os.path.join(c.root, "ceph.client.admin.keyring")
    return compare("backend-list-20", "ceph df detail", ctx.runs,
                   lambda: time_cmd([GNT_STORAGE, "backend", "list"], env),
                   lambda: time_cmd(["ceph", "-c", c.conf, "--id", "admin", "--keyring", admin, "df", "detail"]))


@bench("attach-500-volumes", runs=RUNS)
def attach_500(ctx: Ctx) -> Result:
    """Two catalogues whose records live in two namespaces of the pool: 500 records in one, 5 in the other."""
    c = cluster(ctx)
    vol = "attach-records"
    cfgs = {}
    for n in (500, 5):
        ns = f"records{n}"
        cfgs[n] = catalogue(c, f"attach{n}", {"backends": [{"name": "idx", "pool": POOL, "namespace": ns}],
                                             "index": "idx"})
    client = gconfig.load(c.config)
    with Session(client) as s:
        for n in (500, 5):
            with s.ioctx(POOL) as io:
                if not rbd.RBD().namespace_exists(io, f"records{n}"):
                    rbd.RBD().namespace_create(io, f"records{n}")
            location = f"{POOL}/records{n}"
            backends.put(s, location, vol, backends.Record("default", 1024 << 20))
            with s.ioctx(location) as io, rados.WriteOpCtx() as op:
                keys = tuple(f"other-{i}.ext.disk0" for i in range(n - 1))
                io.set_omap(op, keys, tuple(backends.Record("default", 1 << 30).dump().encode() for _ in keys))
                io.operate_write_op(op, backends.INDEX)
    try:
        c.new_image(vol)
        return compare("attach-500-volumes", "5 volumes", ctx.runs,
                       lambda: run_with(c, cfgs[500], "attach", vol, EXTP_ACCESS="userspace", VOL_UUID=vol_uuid()),
                       lambda: run_with(c, cfgs[5], "attach", vol, EXTP_ACCESS="userspace", VOL_UUID=vol_uuid()))
    finally:
        c.drop([vol])
        with Session(client) as s:
            for n in (500, 5):
                with s.ioctx(f"{POOL}/records{n}") as io:
                    io.remove_object(backends.INDEX)

