"""Backends through real Ganeti: the catalogue made on the master reaches the other node
(gnt-cluster copyfile), `gnt-instance add` with tags=ssd lands the disk on the tagged pool, the
instance starts and stops on it, a backend's volume quota and a project's quota refuse the next
add in one line with nothing made, and a grow past the project's quota is vetoed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
import rados
import rbd

from ganeti_ceph.config import Config
from ganeti_ceph.rbd import backends
from ganeti_ceph.session import Session
from testbed.ganeti import Testbed
from tests.ganeti.test_access_switch import disks

CATALOGUE = "/etc/ganeti/ceph-backends.yaml"
POOL = "fast"


def gs(tb: Testbed, *args: str) -> tuple[int, str, str]:
    res = tb.run(0, [tb.gnt_storage, *args], check=False, timeout=300)
    return res.returncode, res.stdout, res.stderr


def add(tb: Testbed, name: str, *extra: str, disk: str = "0:size=64M,provider=rbd") -> tuple[int, str]:
    res = tb.run(0, ["gnt-instance", "add", "-t", "ext", "--disk", disk, "--hypervisor", "kvm", "-o",
                     "noop+default", "-B", "memory=128M", "-n", tb.node_names[0], "--no-ip-check", "--no-name-check",
                     "--no-start", *extra, name], check=False, timeout=300)
    return res.returncode, res.stdout + res.stderr


def instances(tb: Testbed) -> list[str]:
    return tb.gnt("gnt-instance", "list", "--no-headers", "-o", "name").split()


def images(admin: Config, pool: str) -> set[str]:
    with Session(admin) as s, s.ioctx(pool) as io:
        return set(rbd.RBD().list(io))


@pytest.fixture
def catalogue(testbed: Testbed, ceph_admin: Config) -> Iterator[list[str]]:
    """Pool `fast` in the bed's Ceph (the client's caps widened), and a catalogue removed afterwards
    from every node, with its placement records."""
    with Session(ceph_admin) as s:
        if POOL not in (s.mon_command("osd pool ls") or []):
            s.mon_command("osd pool create", pool=POOL, pg_num=8, pgp_num=8)
            s.mon_command("osd pool application enable", pool=POOL, app="rbd")
        client = next(e["entity"] for e in s.mon_command("auth ls")["auth_dump"]
                      if e["entity"].startswith("client.") and e["entity"] != "client.admin"
                      and "profile rbd pool=rbd" in e.get("caps", {}).get("osd", ""))
        deadline = time.monotonic() + 60  # a new pool reaches `ceph df` (the mgr's digest) a moment later
        while POOL not in backends.pool_stats(s.mon_command("df", detail="detail")):
            assert time.monotonic() < deadline, f"pool {POOL} never showed in ceph df"
            time.sleep(0.5)
        before = s.mon_command("auth get", entity=client)[0]["caps"]  # given back at the end
        caps = f"profile rbd pool=rbd, profile rbd pool={POOL}"
        s.mon_command("auth caps", entity=client, caps=["mon", "profile rbd", "osd", caps, "mgr", caps])
    made: list[str] = []  # instances to remove afterwards
    yield made
    for name in made:
        testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", name], check=False)
    for index in range(len(testbed.nodes)):
        testbed.run(index, ["rm", "-f", CATALOGUE], check=False)
    with Session(ceph_admin) as s:
        s.mon_command("auth caps", entity=client, caps=[x for kv in sorted(before.items()) for x in kv])
        with s.ioctx("rbd") as io, contextlib.suppress(rados.ObjectNotFound):
            io.remove_object(backends.INDEX)


def test_placement_and_quotas_through_ganeti(testbed: Testbed, ceph_admin: Config, catalogue: list[str]) -> None:
    tb, made = testbed, catalogue
    code, out, err = gs(tb, "backend", "add", POOL, "--pool", POOL, "--tags", "ssd", "--cost", "1")
    assert code == 0 and "copied to every node" in out, err
    assert tb.run(1, ["cat", CATALOGUE]).stdout == tb.run(0, ["cat", CATALOGUE]).stdout  # the other node has it

    stamp = time.monotonic_ns() % 10**6
    first = f"bk{stamp}a.gcb.test"
    code, text = add(tb, first, disk="0:size=64M,provider=rbd,tags=ssd")
    assert code == 0, text
    made.append(first)
    vol = disks(tb, first)[0]["logical_id"][1]
    assert vol in images(ceph_admin, POOL) and vol not in images(ceph_admin, "rbd")
    tb.gnt("gnt-instance", "start", first)  # the pre hook and attach find it by its record
    tb.gnt("gnt-instance", "shutdown", "--timeout=0", first)

    # The backend's volume quota: the next add is refused by the provider, and Ganeti undoes the add.
    code, out, err = gs(tb, "backend", "modify", POOL, "--quota-volumes", "1")
    assert code == 0, err
    second = f"bk{stamp}b.gcb.test"
    before = images(ceph_admin, POOL)
    code, text = add(tb, second, disk="0:size=64M,provider=rbd,tags=ssd")
    assert code != 0 and "volume quota 1 reached" in text, text
    assert second not in instances(tb) and images(ceph_admin, POOL) == before

    # A project's quota: 100 MiB; a 64 MiB instance fits, a second is vetoed by the instance-add hook.
    code, out, err = gs(tb, "backend", "project", "acme", "--quota-gib", "0.1")
    assert code == 0, err
    third, fourth = f"bk{stamp}c.gcb.test", f"bk{stamp}d.gcb.test"
    code, text = add(tb, third, "--tags", "project:acme")
    assert code == 0, text
    made.append(third)
    before = images(ceph_admin, "rbd")
    code, text = add(tb, fourth, "--tags", "project:acme")
    assert code != 0 and "project acme: quota 0.1 GiB would be exceeded" in text, text
    assert fourth not in instances(tb) and images(ceph_admin, "rbd") == before
    res = tb.run(0, ["gnt-instance", "grow-disk", third, "0", "64M"], check=False, timeout=300)
    assert res.returncode != 0 and "project acme" in res.stdout + res.stderr, res.stdout + res.stderr
    assert tb.gnt("gnt-instance", "list", "--no-headers", "-o", "disk.size/0", third).strip() == "64M"

    # Holding a volume, the backend stays; emptied, it goes.
    code, out, err = gs(tb, "backend", "remove", POOL)
    assert code != 0 and "holds 1 volume(s)" in err, err
    tb.gnt("gnt-instance", "remove", "-f", first)
    made.remove(first)
    assert vol not in images(ceph_admin, POOL)
    code, out, err = gs(tb, "backend", "remove", POOL)
    assert code == 0, err
