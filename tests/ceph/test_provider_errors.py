"""Failures of the provider: bad input, bad config, unreachable monitors, unavailable mappers.

Each failure must be exactly one stderr line `rbd <action>: ...`, a non-zero
exit, and no change anywhere: no image, size, metadata, snapshot or mapping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import rbd

from ganeti_ceph import config
from ganeti_ceph.errors import CephUnavailable
from ganeti_ceph.session import Session
from tests.ceph.provider_env import MIB, Provider, mounts_under, provider_fixture
from tests.conftest import LocalCluster

CREATE_CASES: dict[str, dict[str, str | None]] = {
    "bad-name": {"VOL_NAME": "Bad/Name"},
    "name-dot": {"VOL_NAME": "."},
    "name-dotdot": {"VOL_NAME": ".."},
    "name-leading-dot": {"VOL_NAME": ".hidden.ext.disk0"},
    "pool-dot": {"EXTP_POOL": "."},
    "pool-dotdot": {"EXTP_POOL": ".."},
    "pool-leading-dot": {"EXTP_POOL": ".rbd"},
    "data-pool-dotdot": {"EXTP_DATA_POOL": ".."},
    "origin-dotdot": {"EXTP_ORIGIN": "rbd/.."},
    "size-abc": {"VOL_SIZE": "abc"},
    "size-zero": {"VOL_SIZE": "0"},
    "size-negative": {"VOL_SIZE": "-5"},
    "size-2-to-the-70": {"VOL_SIZE": str(2**70)},
    "size-underscored": {"VOL_SIZE": "6_4"},
    "size-missing": {"VOL_SIZE": None},
    "unknown-parameter": {"EXTP_BOGUS": "1"},
    "bad-access": {"EXTP_ACCESS": "sideways"},
    "bad-features": {"EXTP_FEATURES": "layering,teleport"},
    "feature-without-its-dependency": {"EXTP_FEATURES": "layering,fast-diff"},
    "bad-pool": {"EXTP_POOL": "no/pool"},
    "bad-data-pool": {"EXTP_DATA_POOL": "no/pool"},
    "bad-origin": {"EXTP_ORIGIN": "rbd/Bad_Image"},
}
OTHER_CASES: list[tuple[str, dict[str, str | None]]] = [
    ("grow", {"VOL_SIZE": "64", "VOL_NEW_SIZE": "abc"}),
    ("grow", {"VOL_SIZE": "64", "VOL_NEW_SIZE": "0"}),
    ("grow", {"VOL_SIZE": "64", "VOL_NEW_SIZE": "-5"}),
    ("grow", {"VOL_SIZE": "64", "VOL_NEW_SIZE": "32"}),
    ("grow", {"VOL_SIZE": "64", "VOL_NEW_SIZE": str(2**70)}),
    ("attach", {"EXTP_ACCESS": "sideways"}),
    ("attach", {"EXTP_BOGUS": "1"}),
    ("open", {"VOL_OPEN_EXCLUSIVE": "maybe"}),
    ("setinfo", {"VOL_METADATA": "originstname+x", "EXTP_BOGUS": "1"}),
    ("snapshot", {"VOL_SNAPSHOT_NAME": "Bad/Snap"}),
    ("snapshot", {"VOL_SNAPSHOT_NAME": None}),
    ("snapshot", {"VOL_SNAPSHOT_NAME": ".."}),
    ("snapshot", {"VOL_SNAPSHOT_NAME": ".snap"}),
    ("attach", {"EXTP_POOL": ".."}),
    ("remove", {"EXTP_POOL": "no/pool"}),
    ("verify", {"EXTP_FEATURES": "teleport"}),
]
CONFIGS = {
    "missing": None,
    "unknown-key": "conf: /etc/ceph/ceph.conf\nkeyring: /etc/ceph/k\nmappr: krbd\n",
    "bad-yaml": "conf: [unclosed\n  keyring: : :\n",
}


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("provider-errors")))


@pytest.fixture(scope="module")
def victim(prov: Provider) -> Iterator[str]:
    """An existing volume with data, metadata and a mapping-free state that failures must not change."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64", VOL_CNAME="victim").ok()
    prov.write(vol, b"\xa5" * MIB)
    prov.run("setinfo", vol, VOL_METADATA="originstname+victim").ok()
    yield vol
    prov.run("remove", vol).ok()


def pool_images(local_cluster: LocalCluster) -> set[str]:
    with Session(local_cluster.admin) as s, s.ioctx("rbd") as io:
        return set(rbd.RBD().list(io))


def state(prov: Provider, vol: str) -> tuple[Any, ...]:
    """Everything a failed action might have changed about `vol`."""
    with prov.image(vol) as img:
        image = (img.size(), sorted(img.metadata_list()), [s["name"] for s in img.list_snaps()],
                 [w["addr"] for w in img.watchers_list()], img.read(0, MIB))
    return image, [m for d in sorted(prov.run_dirs) for m in mounts_under(d)], pool_images(prov.cluster)


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_bad_create_input_changes_nothing(prov: Provider, case: str) -> None:
    """Bad input to create is one line, a non-zero exit, and no image."""
    vol = prov.volume()
    before = pool_images(prov.cluster)
    env = {"VOL_SIZE": "64", **CREATE_CASES[case]}
    prov.run("create", vol, **env).one_error()
    assert pool_images(prov.cluster) == before


@pytest.mark.parametrize(("action", "env"), OTHER_CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(OTHER_CASES)])
def test_bad_input_to_other_actions_changes_nothing(prov: Provider, victim: str, action: str,
                                                    env: dict[str, str | None]) -> None:
    """Bad input to grow, attach, open, setinfo, snapshot, remove, verify is one line and changes nothing."""
    before = state(prov, victim)
    prov.run(action, victim, **env).one_error()
    assert state(prov, victim) == before


@pytest.mark.parametrize("action", ["create", "attach", "remove"])
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_bad_config_changes_nothing(prov: Provider, victim: str, kind: str, action: str) -> None:
    """A missing config file, an unknown key or invalid YAML is one line naming the file; nothing changes."""
    path = os.path.join(prov.base, f"config-{kind}.yaml")
    if CONFIGS[kind] is not None:
        with open(path, "w") as fh:
            fh.write(CONFIGS[kind])
    vol = victim if action != "create" else prov.volume()
    before = state(prov, victim)
    line = prov.run(action, vol, path, VOL_SIZE="64").one_error()
    assert path in line
    assert state(prov, victim) == before


MISSING_CASES: list[tuple[str, dict[str, str]]] = [
    ("snapshot", {"VOL_SNAPSHOT_NAME": "x.snap"}), ("grow", {"VOL_SIZE": "64", "VOL_NEW_SIZE": "128"}),
    ("setinfo", {"VOL_METADATA": "x"}), ("open", {"VOL_OPEN_EXCLUSIVE": "True"}), ("close", {}),
    ("attach", {"EXTP_ACCESS": "userspace"}), ("verify", {"EXTP_ORIGIN": "no-such-template"}),
]


@pytest.mark.parametrize(("action", "env"), MISSING_CASES, ids=[a for a, _ in MISSING_CASES])
def test_actions_on_a_missing_volume_are_one_line_not_found(prov: Provider, action: str,
                                                           env: dict[str, str]) -> None:
    """Every librbd call is mapped: a missing volume (or origin) is one line and exit 5, never a traceback
    or an "internal error"; close of a volume never opened is fine; nothing is made."""
    vol = prov.volume()
    before = pool_images(prov.cluster)
    res = prov.run(action, vol, **env)
    if action == "close":
        res.ok()
    else:
        line = res.one_error()
        assert res.rc == 5 and "internal error" not in line, line
    assert pool_images(prov.cluster) == before


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_monitors_fail_every_action_in_time(prov: Provider, victim: str, tmp_path: Any) -> None:
    """With the monitors unreachable and timeouts.connect: 2, every action that needs the cluster exits 4
    within the bound (plus start-up slack) with one line naming the cluster, and the Session alone gives up
    after the configured 2 s; detach, which needs no cluster when
    the conf gives the fsid, still succeeds."""
    with Session(prov.cluster.admin) as s:
        fsid = s.fsid()
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\n\tfsid = {fsid}\n\tmon_host = v1:127.0.0.1:{closed_port()}\n")
    cfg = prov.config("unreachable", conf=str(conf), cluster="far-away", timeouts={"connect": 2})
    calls: list[tuple[str, dict[str, str]]] = [
        ("create", {"VOL_SIZE": "64"}), ("attach", {}), ("attach", {"EXTP_ACCESS": "userspace"}), ("remove", {}),
        ("grow", {"VOL_SIZE": "64", "VOL_NEW_SIZE": "128"}), ("open", {"VOL_OPEN_EXCLUSIVE": "True"}),
        ("close", {}), ("snapshot", {"VOL_SNAPSHOT_NAME": f"{victim}.snap"}), ("setinfo", {"VOL_METADATA": "x"}),
        ("verify", {}),
    ]
    before = state(prov, victim)
    with ThreadPoolExecutor(len(calls)) as pool:
        results = list(pool.map(lambda c: prov.run(c[0], victim, cfg, timeout=60, **c[1]), calls))
    for res in results:
        line = res.one_error()
        assert res.rc == 4 and "far-away" in line, line
        # Ten processes starting at once on a loaded 2-core host take seconds before they connect (seen:
        # 7-9 s in all at load 30), so the whole process gets slack; the Session itself gets little, below.
        assert res.elapsed < 2 + 13, f"{res.action} took {res.elapsed:.1f} s"
    # The bound itself, without process start-up: the Session built from that very config gives up after
    # its 2 s, not after a default (Timeouts' 10 s, or librados' own). The option values themselves are
    # checked in tests/unit/test_session_options.py.
    started = time.monotonic()
    with pytest.raises(CephUnavailable):
        Session(config.load(cfg)).connect()
    assert time.monotonic() - started < 2 + 1.5
    assert "was not mapped" in prov.run("detach", victim, cfg, timeout=30).ok().note
    assert state(prov, victim) == before


def kernel_has(mapper: str) -> bool:
    module = {"krbd": "rbd", "rbd-nbd": "nbd"}[mapper]
    if os.path.exists("/sys/bus/rbd" if module == "rbd" else "/sys/module/nbd"):
        return True
    try:
        return subprocess.run(["modprobe", "-n", module], capture_output=True, check=False,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).returncode == 0
    except FileNotFoundError:  # no modprobe: no module loading either
        return False


@pytest.mark.parametrize("mapper", ["krbd", "rbd-nbd"])
def test_kernel_mappers(prov: Provider, mapper: str) -> None:
    """mapper: krbd / rbd-nbd map for real where the kernel has the module; where it lacks it, attach is
    one line telling the admin to pick another mapper, and nothing is mapped."""
    cfg = prov.config(f"mapper-{mapper}", mapper=mapper)
    vol = prov.volume()
    prov.run("create", vol, cfg, VOL_SIZE="64").ok()
    if kernel_has(mapper):
        dev, _ = prov.attach(vol, cfg)
        assert os.minor(os.stat(dev).st_rdev) > 0 and prov.attach(vol, cfg)[0] == dev
        prov.run("detach", vol, cfg).ok()
    else:
        line = prov.run("attach", vol, cfg).one_error()
        assert "mapper" in line and "fuse-loop" in line, line
        assert not os.path.exists(os.path.join(prov.base, f"run-mapper-{mapper}", "dev"))
        module = {"krbd": "rbd", "rbd-nbd": "nbd"}[mapper]
        warnings.warn(f"{mapper} mapping could not run on this kernel (no {module} module): "
                      "only the error path was tested", stacklevel=1)
    with prov.image(vol) as img:
        assert list(img.watchers_list()) == []
    prov.run("remove", vol, cfg).ok()


def test_journaling_is_refused_with_krbd(prov: Provider) -> None:
    """features with journaling on a kernelspace disk with mapper krbd is refused before anything is made."""
    cfg = prov.config("journaling-krbd", mapper="krbd")
    vol = prov.volume()
    line = prov.run("create", vol, cfg, VOL_SIZE="64", EXTP_FEATURES="layering,exclusive-lock,journaling").one_error()
    assert "journaling" in line and not prov.exists(vol)


def test_nothing_leaked(prov: Provider, victim: str) -> None:
    """Last in the module: nothing but the shared victim volume is left, and it is intact."""
    assert prov.leaks(allow=(victim,)) == []
    assert prov.read(victim, 0, MIB) == b"\xa5" * MIB
