"""An OSD on a real block device through ceph-volume, made by our node side, in a real cluster.

The device is a loop device over a sparse file (this machine has no spare
disk; a loop device is a real block device to ceph-volume, the kernel and
Ceph). The node side (`python -m gnt_storage.deploy.node`, as the master
runs it over SSH) runs in a private mount namespace whose /etc/ceph,
/var/lib/ceph, /var/log/ceph and /run/ceph are directories of this test, so
the host's stay untouched; its OSD joins the local test cluster. No systemd
runs here, so the boot path tested is the node's `start` (activate, then
ceph-osd); the systemd drop-in is unit tested only. udev does not run here
either (no /dev/disk/by-id), so the stable name of a loop device is its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError
from ganeti_ceph.session import Session
from gnt_storage.deploy import cephconf, volume
from tests.conftest import REPO, TEST_DIR, LocalCluster

OSD_ID = "3"  # the local cluster has osd.0-2
MOUNTS = ("/etc/ceph", "/var/lib/ceph", "/var/log/ceph", "/run/ceph")
POOL = "volume-test"
# ceph-volume asks LVM (lvs) about every device it is given, and LVM scans all block devices: here other
# tests' loop devices may sit on hung rbd-fuse mounts, and a scan of one never returns (seen: lvs stuck in D
# state). So LVM in the namespace sees this test's devices only.
LVM_CONF = "/etc/lvm/lvm.conf"
DROP_CONF = ("run_dir", "crash_dir", "osd_data", "keyring", "bluestore_block", "pid_file", "admin_socket", "log_file")


@pytest.fixture(scope="module")
def root() -> str:
    path = os.path.join(os.path.dirname(TEST_DIR), "h4b-volume") if TEST_DIR.startswith("/tmp/") else \
        os.path.join(TEST_DIR, "volume")
    subprocess.run(["rm", "-rf", path], check=True)
    os.makedirs(path)
    for m in MOUNTS:
        os.makedirs(path + m)
    os.chown(path + "/var/lib/ceph", *_ceph_ids())
    os.chown(path + "/run/ceph", *_ceph_ids())
    return path


def _ceph_ids() -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam("ceph")
    return pw.pw_uid, pw.pw_gid


@contextlib.contextmanager
def loop_device(path: str, gib: int, keep: list[str]) -> Iterator[str]:
    """A loop device over a sparse file, always detached (and given back to root) at the end."""
    subprocess.run(["truncate", "-s", f"{gib}G", path], check=True)
    dev = subprocess.run(["losetup", "--find", "--show", path], check=True, capture_output=True, text=True,
                         timeout=30).stdout.strip()
    keep.append(dev)
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, timeout=30)
        os.chown(dev, 0, 6)  # root:disk, as before ceph-volume gave it to ceph
        os.unlink(path)


def node(root: str, req: dict, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Our node side, as over SSH, in a mount namespace with this test's Ceph directories and LVM filter."""
    binds = " && ".join([f"mount --bind {root}{m} {m}" for m in MOUNTS] +
                        [f"mount --bind {root}/lvm.conf {LVM_CONF}"])
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", f'{binds} && exec "$@"',
                          "sh", sys.executable, "-m", "gnt_storage.deploy.node"], input=json.dumps(req),
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def node_conf(cluster_conf: str) -> str:
    """The local cluster's conf with Ceph's standard paths (what a node of a real cluster has)."""
    with open(cluster_conf) as fh:
        lines = [ln for ln in fh if not ln.strip().split(" ", 1)[0].startswith(DROP_CONF)]
    keep, out = True, []
    for ln in lines:
        if ln.startswith("["):
            keep = ln.strip() in ("[global]", "[osd]")
        if keep:
            out.append(ln)
        if ln.strip() == "[osd]":  # as on a node of a distributed cluster (cephconf, standard paths)
            out.append("\tpid_file = /run/ceph/$cluster-$name.pid\n\tbluestore_block_create = false\n")
    return "".join(out)


def osd_req(dev: str, fsid: str, up_from: int | None, osd_id: str = OSD_ID, db: str = "") -> dict:
    """One OSD of a node request, as the master sends it (see distributed.node_request)."""
    return {"id": osd_id, "node": "localhost", "dev": dev, "uuid": "00000000-0000-0000-0000-000000000000",
            "fsid": fsid, "keyring": "", **({} if up_from is None else {"up_from": up_from}),
            **({"db": db} if db else {})}


def refused(root: str, files: list[dict], osd: dict, words: str) -> None:
    """apply refuses `osd` in one stderr line, without a traceback."""
    res = node(root, {"action": "apply", "files": files, "osds": [osd]}, check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr


def wait_up(session: Session, osd_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        osd = next((o for o in session.mon_command("osd dump")["osds"] if str(o["osd"]) == osd_id), {})
        if osd.get("up") == 1:
            return osd
        assert time.monotonic() < deadline, f"osd.{osd_id} did not come up: {osd}"
        time.sleep(1)


def test_osd_on_a_block_device(local_cluster: LocalCluster, root: str) -> None:
    fsid = _fsid(local_cluster.conf)
    bootstrap_key = cephconf.new_key()
    entry = {volume.BOOTSTRAP: (bootstrap_key, volume.BOOTSTRAP_CAPS)}
    loops: list[str] = []
    with Session(local_cluster.admin) as session, \
            loop_device(f"{root}/osd.img", 3, loops) as dev, loop_device(f"{root}/db.img", 3, loops) as db:
        session.mon_command("auth import", inbuf=cephconf.keyring(entry).encode())
        with open(f"{root}/lvm.conf", "w") as fh:
            fh.write(f'devices {{\n\tglobal_filter = [ "a|^{dev}$|", "a|^{db}$|", "r|.*|" ]\n}}\n')
        files = [{"path": "/etc/ceph/ceph.conf", "content": node_conf(local_cluster.conf), "mode": 0o644,
                  "owner": "root"},
                 {"path": volume.BOOTSTRAP_KEYRING, "content": cephconf.keyring(entry), "mode": 0o600,
                  "owner": "root"}]
        subprocess.run(["mkfs.ext4", "-q", db], check=True, timeout=120)
        try:
            # A device with a file system: refused as data or as DB, in one line, and left as it was.
            probe = json.loads(node(root, {"action": "probe", "osds": [osd_req(dev, fsid, None),
                                                                        osd_req(db, fsid, None, "4"),
                                                                        osd_req(dev, fsid, None, db=db)]}).stdout)
            assert probe["devices"][db].startswith("not usable: holds data (ext4"), probe
            assert probe["devices"][dev].startswith(f"not usable: its db device {db} is not usable: holds data")
            assert probe["osds"] == {OSD_ID: {"volume": True}, "4": {"volume": True}}
            refused(root, files, osd_req(db, fsid, 0, "4"), "holds data (ext4")
            refused(root, files, osd_req(dev, fsid, 0, db=db), "holds data (ext4")
            with open(db, "rb") as fh:
                fh.seek(1024)
                assert fh.read(2048) != b"\0" * 2048  # the ext4 superblock is still there
            # What the admin does if it is spare (the hint in the refusal).
            subprocess.run(["wipefs", "-q", "-a", db], check=True, timeout=60)
            subprocess.run(["dd", "if=/dev/zero", f"of={db}", "bs=1M", "count=10", "status=none"], check=True,
                           timeout=60)
            assert json.loads(node(root, {"action": "probe", "osds": [osd_req(dev, fsid, None, db=db)]}).stdout)[
                "devices"][dev] == "empty"

            # First pass (mons not yet asked): pending; second pass with the osdmap: ceph-volume prepares.
            report = json.loads(node(root, {"action": "apply", "files": files,
                                            "osds": [osd_req(dev, fsid, None, db=db)]}).stdout)
            assert report["pending"] == [OSD_ID]
            report = json.loads(node(root, {"action": "apply", "files": files,
                                            "osds": [osd_req(dev, fsid, 0, db=db)]}).stdout)
            record = report["osds"][OSD_ID]
            assert record["stable"] == {"dev": dev, "db": db} and record["volume"] is True
            uuid = record["uuid"]
            assert any(OSD_ID in c and "ceph-volume" in c for c in report["changed"]), report
            osd = next(o for o in session.mon_command("osd dump")["osds"] if str(o["osd"]) == OSD_ID)
            assert osd["uuid"] == uuid  # ceph-volume registered it under our id

            # Interrupted before mkfs finished (its label lacks mkfs_done, no marker) and never booted: made anew.
            subprocess.run(["ceph-bluestore-tool", "rm-label-key", "--dev", dev, "-k", "mkfs_done"], check=True,
                           timeout=60, capture_output=True)
            os.unlink(f"{root}/var/lib/ceph/osd/ceph-{OSD_ID}/ganeti-ceph.done")
            report = json.loads(node(root, {"action": "apply", "files": files,
                                            "osds": [osd_req(dev, fsid, 0, db=db)]}).stdout)
            assert any("made anew: it never booted" in c for c in report["changed"]), report
            assert report["osds"][OSD_ID]["uuid"] != uuid
            uuid = report["osds"][OSD_ID]["uuid"]
            osd = next(o for o in session.mon_command("osd dump")["osds"] if str(o["osd"]) == OSD_ID)
            assert osd["uuid"] == uuid

            start = {"action": "start", "daemons": [["osd", OSD_ID]], "osds": [osd_req(dev, fsid, None, db=db)]}
            node(root, start)
            first = wait_up(session, OSD_ID)
            assert first["up_from"] > 0
            meta = session.mon_command("osd metadata", id=int(OSD_ID))
            assert meta["bluefs_dedicated_db"] == "1" and meta["bluestore_bdev_type"] == "hdd", meta

            # Data on this OSD only: a pool whose rule picks its device class (one copy, min_size 1).
            session.mon_command("osd crush rm-device-class", ids=[OSD_ID])
            session.mon_command("osd crush set-device-class", **{"class": "h4b"}, ids=[OSD_ID])
            session.mon_command("osd crush rule create-replicated", name=POOL, root="default", type="osd",
                                **{"class": "h4b"})
            session.mon_command("osd pool create", pool=POOL, pg_num=8, pgp_num=8, pool_type="replicated",
                                rule=POOL)
            session.mon_command("osd pool set", pool=POOL, var="min_size", val="1")  # one copy: undersized, writable
            payload = os.urandom(1 << 20)
            with session.ioctx(POOL) as io:
                io.write_full("kept", payload)

            # "Reboot": the OSD stops, its directory loses the primed files and the devices their owner.
            node(root, {"action": "stop", "daemons": [["osd", OSD_ID]]})
            osd_dir = f"{root}/var/lib/ceph/osd/ceph-{OSD_ID}"
            for name in ("block", "block.db", "keyring", "whoami"):
                os.unlink(os.path.join(osd_dir, name))
            for d in (dev, db):
                os.chown(d, 0, 6)
            node(root, start)
            again = wait_up(session, OSD_ID)
            assert again["up_from"] > first["up_from"] and again["uuid"] == uuid
            assert os.stat(dev).st_uid == os.stat(db).st_uid == _ceph_ids()[0]
            assert os.readlink(os.path.join(osd_dir, "block")) == dev
            assert os.readlink(os.path.join(osd_dir, "block.db")) == db
            with session.ioctx(POOL) as io:
                assert io.read("kept", len(payload) + 1) == payload

            # A re-added node (its directory gone, the devices kept): activated, never re-created.
            node(root, {"action": "stop", "daemons": [["osd", OSD_ID]]})
            subprocess.run(["rm", "-rf", osd_dir], check=True)
            report = json.loads(node(root, {"action": "apply", "files": files,
                                            "osds": [osd_req(dev, fsid, first["up_from"], db=db)]}).stdout)
            assert any("adopted" in c for c in report["changed"]), report
            assert report["osds"][OSD_ID]["uuid"] == uuid
            node(root, start)
            wait_up(session, OSD_ID)
            with session.ioctx(POOL) as io:
                assert io.read("kept", len(payload) + 1) == payload

            # Its data and DB devices offered for another OSD: one line, nothing changed.
            refused(root, files, osd_req(dev, fsid, 0, "4"), f"holds osd.{OSD_ID} of cluster {fsid}")
            refused(root, files, osd_req(db, fsid, 0, "4"), f"holds the bluefs db of OSD {uuid}")
            assert "4" not in {str(o["osd"]) for o in session.mon_command("osd dump")["osds"]}
        finally:
            node(root, {"action": "stop", "daemons": [["osd", OSD_ID]]}, check=False)
            with contextlib.suppress(Exception):
                session.mon_command("osd pool rm", pool=POOL, pool2=POOL, yes_i_really_really_mean_it=True)
            purge(session, OSD_ID)
    assert len(loops) == 2


def purge(session: Session, osd_id: str) -> None:
    """The OSD leaves the session's cluster for good: later modules wait for every OSD up and in
    (its purge, sent to the mon, was refused with EINVAL and suppressed: osd.3 stayed and every later
    settle of the suite failed)."""
    def gone() -> bool:
        with contextlib.suppress(GanetiCephError):
            session.mon_command("osd down", ids=[osd_id])
        with contextlib.suppress(GanetiCephError):  # a mgr command (the ceph CLI sends it there)
            session.mgr_command("osd purge", id=int(osd_id), yes_i_really_mean_it=True)
        return osd_id not in {str(o["osd"]) for o in session.mon_command("osd dump")["osds"]}

    assert runner.until(time.monotonic() + 60, gone, interval=1.0), f"osd.{osd_id} could not be purged"


def _fsid(conf: str) -> str:
    with open(conf) as fh:
        return next(ln.split("=", 1)[1].strip() for ln in fh if ln.strip().startswith("fsid"))
