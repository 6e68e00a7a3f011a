"""init-distributed-storage and the storage node lifecycle, on 3 real Ganeti nodes over real SSH.

One story, in order (each test builds on the previous one): bad input
changes nothing; an empty group is only marked; a first run killed midway
is re-run to HEALTH_OK; every node is checked with testinfra; a re-run is a
no-op; a node goes offline while I/O goes on, comes back with readd; a
node with Ceph daemons cannot be removed while online.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import testinfra
import yaml

from testbed.ganeti import Testbed
from tests.storage.conftest import DISK, NET

DISK2 = "/srv/osd1.img"  # a second disk, added by the last test
# This bed's nodes have no Ganeti secondary IPs (one network): the cluster network is given, and holds the primaries.
CLUSTER_NET = f"ceph:cluster_network={NET}.0/24"
GNT_STORAGE = os.path.join(os.path.dirname(sys.executable), "gnt-storage")
GROUP = "default"
NODE_FILES = ("/etc/ceph/ceph.conf", "/var/lib/ganeti-ceph/storage.json", "/etc/ganeti/ceph.yaml")
STATE = NODE_FILES[1]


CATALOGUE = "/etc/ganeti/ceph-backends.yaml"


def gs(bed: Testbed, *args: str, check: bool = False, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return bed.run(0, [GNT_STORAGE, *args], check=check, timeout=timeout)


def init(bed: Testbed, *specs: str, group: str = GROUP) -> subprocess.CompletedProcess[str]:
    return gs(bed, "init-distributed-storage", "-s", "ceph", *[a for s in specs for a in ("-S", s)], group)


def one_line_error(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode != 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("gnt-storage:")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def untouched(bed: Testbed) -> None:
    """Nothing of a storage cluster on any node, and no group tag."""
    for i in range(3):
        res = bed.run(i, ["sh", "-c", f"ls {' '.join(NODE_FILES)} /var/lib/ceph/mon 2>/dev/null; pgrep -x ceph-mon"],
                      check=False)
        assert res.stdout.strip() == "", f"node{i}: {res.stdout}"
    assert "ganeti-ceph:storage" not in bed.gnt("gnt-group", "list-tags", GROUP)


def host(bed: Testbed, i: int) -> testinfra.host.Host:
    key = bed.nodes[0].path("root-ssh", "id_rsa")
    return testinfra.get_host(f"ssh://root@{bed.nodes[i].addr}", ssh_identity_file=key,
                              ssh_extra_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null")


def ceph(bed: Testbed, *args: str, i: int = 0) -> str:
    return bed.run(i, ["timeout", "30", "ceph", *args], timeout=60).stdout


def wait_health(bed: Testbed, want: str = "HEALTH_OK", timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(ceph(bed, "status", "-f", "json"))
        line = status["health"]["status"]
        osd = status["osdmap"]
        if line == want and osd["num_up_osds"] == osd["num_osds"] == osd["num_in_osds"]:
            return line
        if time.monotonic() > deadline:
            return f"{line}: {status['health'].get('checks')}"
        time.sleep(1)


class TestRefusals:
    def test_unknown_group(self, bed: Testbed) -> None:
        one_line_error(init(bed, f"ceph:disk={DISK}", group="nosuch"), "node group nosuch does not exist")
        untouched(bed)

    def test_even_mon_count(self, bed: Testbed) -> None:
        one_line_error(init(bed, f"ceph:disk={DISK},mons=2"), "odd count")
        untouched(bed)

    def test_odd_devices(self, bed: Testbed) -> None:
        one_line_error(init(bed, "ceph:disk=/dev/null"), "/dev/null", "neither a block device nor a file")
        for i in range(3):
            bed.run(i, ["sh", "-ec", "truncate -s 100M /srv/small.img && truncate -s 10G /srv/used.img && "
                        "printf 'ext4 data' | dd of=/srv/used.img conv=notrunc status=none"])
        one_line_error(init(bed, "ceph:disk=/srv/small.img"), "at least")
        one_line_error(init(bed, "ceph:disk=/srv/used.img"), "holds data")
        one_line_error(init(bed, "ceph:disk=relative.img"), "absolute")
        untouched(bed)

    def test_unreachable_node(self, bed: Testbed) -> None:
        bed.run(2, ["/etc/init.d/ssh", "stop"])
        try:
            one_line_error(init(bed, f"ceph:disk={DISK}"), "node2.gcb.test", "unreachable")
        finally:
            bed.run(2, ["/etc/init.d/ssh", "start"])
        untouched(bed)

    def test_wrong_host_key(self, bed: Testbed) -> None:
        """A node answering with a key that is not the cluster's is refused, never learnt."""
        bed.run(1, ["sh", "-ec", "rm -f /run/impostor* && ssh-keygen -q -t rsa -N '' -f /run/impostor && "
                    "/etc/init.d/ssh stop && /usr/sbin/sshd -h /run/impostor -o PidFile=/run/impostor.pid"])
        try:
            one_line_error(init(bed, f"ceph:disk={DISK}"), "node1.gcb.test", "not the cluster's")
        finally:
            bed.run(1, ["sh", "-c", "kill $(cat /run/impostor.pid); sleep 0.2; /etc/init.d/ssh start"])
        untouched(bed)

    def test_empty_group_is_only_marked(self, bed: Testbed) -> None:
        bed.gnt("gnt-group", "add", "spare")
        one_line_error(gs(bed, "init-distributed-storage", "-s", "ceph", "--backend", "b1", "spare"),
                       "is not a node of group spare")  # --backend needs the master in the group
        assert "ganeti-ceph:storage" not in bed.gnt("gnt-group", "list-tags", "spare")
        res = init(bed, group="spare")
        assert res.returncode == 0, res.stderr
        assert "has no nodes: marked" in res.stderr
        assert "ganeti-ceph:storage" in bed.gnt("gnt-group", "list-tags", "spare")
        one_line_error(init(bed, f"ceph:disk={DISK}"), "spare is already the storage cluster")
        bed.gnt("gnt-group", "remove-tags", "spare", "ganeti-ceph:storage")
        bed.gnt("gnt-group", "remove", "spare")
        untouched(bed)

    def test_cluster_network_without_the_nodes(self, bed: Testbed) -> None:
        one_line_error(init(bed, f"ceph:disk={DISK},cluster_network=10.99.0.0/16"),
                       "has no Ganeti address in ceph:cluster_network=10.99.0.0/16")
        one_line_error(init(bed, f"ceph:disk={DISK},cluster_network={NET}.7/24"), "CIDR")
        untouched(bed)

    def test_cluster_options(self, bed: Testbed) -> None:
        """`gnt-storage -S` sets defaults (as cluster tags) while no storage cluster exists."""
        assert gs(bed, "-S", "ceph:pg_num=32").returncode == 0
        assert "ceph:pg_num=32" in gs(bed, "options").stdout
        one_line_error(gs(bed, "-S", "ceph:pg_num=33"), "power of two")
        assert gs(bed, "-S", "ceph:pg_num=64").returncode == 0
        assert "ganeti-ceph:opt" not in bed.gnt("gnt-cluster", "list-tags")


class TestInit:
    def test_killed_midway_then_rerun_is_healthy(self, bed: Testbed) -> None:
        proc = subprocess.Popen([*bed.enter_argv(0), GNT_STORAGE, "init-distributed-storage", "-s", "ceph", "-S",
                                 f"ceph:disk={DISK}", "-S", CLUSTER_NET, GROUP], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "wrote" in line:  # a node has its files and stores; the others may be half-way
                os.killpg(proc.pid, signal.SIGKILL)  # nsenter forks: the command is its child
                break
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "".join(seen)
        res = init(bed, f"ceph:disk={DISK}", CLUSTER_NET)
        assert res.returncode == 0, res.stderr
        assert "health: HEALTH_OK" in res.stdout
        assert "ganeti-ceph:storage" in bed.gnt("gnt-group", "list-tags", GROUP)
        conf = bed.run(0, ["cat", "/etc/ceph/ceph.conf"]).stdout
        assert f"cluster_network = {NET}.0/24" in conf and "public_network = " in conf, conf
        osd0 = json.loads(ceph(bed, "osd", "metadata", "0", "-f", "json"))
        assert f"v2:{bed.nodes[0].addr}:" in osd0["back_addr"], osd0["back_addr"]  # replication: cluster_addr

    @pytest.mark.parametrize("i", [0, 1, 2])
    def test_node_with_testinfra(self, bed: Testbed, i: int) -> None:
        h = host(bed, i)
        short = f"node{i}"
        for comm, user in (("ceph-mon", "ceph"), ("ceph-mgr", "ceph"), ("ceph-osd", "ceph")):
            procs = h.process.filter(comm=comm)
            assert len(procs) == 1 and procs[0].user == user, (comm, procs)
        for path, mode, owner in (("/etc/ceph/ceph.conf", 0o644, "root"),
                                  ("/etc/ceph/ceph.client.admin.keyring", 0o600, "root"),
                                  ("/etc/ceph/ceph.client.ganeti.keyring", 0o600, "root"),
                                  ("/etc/ganeti/ceph.yaml", 0o640, "root"),
                                  ("/var/lib/ganeti-ceph/storage.json", 0o600, "root"),
                                  (f"/var/lib/ceph/mgr/ceph-{short}/keyring", 0o600, "ceph"),
                                  (f"/var/lib/ceph/osd/ceph-{i}/keyring", 0o600, "ceph"),
                                  (f"/var/lib/ceph/mon/ceph-{short}/keyring", 0o600, "ceph")):
            f = h.file(path)
            assert f.exists and f.mode == mode and f.user == owner, (path, oct(f.mode), f.user)
        assert h.file(f"/var/lib/ceph/osd/ceph-{i}/block").linked_to == DISK
        listening = h.check_output("ss -Hltnp | grep ceph- || true").splitlines()
        assert listening, "no Ceph daemon listens"
        for row in listening:
            local = row.split()[3]
            assert local.rsplit(":", 1)[0] == bed.nodes[i].addr, row  # never 0.0.0.0 or another address
        assert any(row.split()[3].endswith(":3300") for row in listening)

    def test_rerun_is_a_noop(self, bed: Testbed) -> None:
        before = bed.run(0, ["sh", "-c", "stat -c '%n %Y' /etc/ceph/* /var/lib/ceph/osd/*/keyring"]).stdout
        res = init(bed)
        assert res.returncode == 0, res.stderr
        assert "wrote" not in res.stderr and "started" not in res.stderr, res.stderr
        assert res.stderr.count("files and stores in place") == 3
        assert bed.run(0, ["sh", "-c", "stat -c '%n %Y' /etc/ceph/* /var/lib/ceph/osd/*/keyring"]).stdout == before

    def test_rerun_registers_its_backend(self, bed: Testbed) -> None:
        """--backend NAME puts the storage cluster in the backend catalogue on every node (through
        ceph.yaml, which names it on each of the group's nodes); backend remove takes it out again."""
        try:
            res = gs(bed, "init-distributed-storage", "-s", "ceph", "--backend", "group1", "--tags", "ssd+rack1",
                     GROUP)
            assert res.returncode == 0, res.stderr
            assert "copied to every node" in res.stdout, res.stdout
            for i in range(len(bed.nodes)):
                cat = yaml.safe_load(bed.run(i, ["cat", CATALOGUE]).stdout)
                assert [(b["name"], b["pool"], b["tags"]) for b in cat["backends"]] == [("group1", "rbd",
                                                                                          ["rack1", "ssd"])]
            listed = gs(bed, "backend", "list", "--no-headers", "-o", "name,tags,volumes", check=True).stdout
            assert ["group1", "rack1+ssd", "0"] in [row.split() for row in listed.splitlines()], listed
            one_line_error(gs(bed, "init-distributed-storage", "-s", "ceph", "--tags", "ssd", GROUP),
                           "--tags goes with")
            gs(bed, "backend", "remove", "group1", check=True)
        finally:  # the rest of the module runs without a catalogue, as before
            for i in range(len(bed.nodes)):
                bed.run(i, ["rm", "-f", CATALOGUE], check=False)

    def test_options_fixed_after_init(self, bed: Testbed) -> None:
        one_line_error(gs(bed, "-S", "ceph:pool=other"), "options are fixed")
        one_line_error(init(bed, "ceph:pool=other"), "only ceph:disk", "can change on a re-run")

    def test_client_io_from_a_node(self, bed: Testbed) -> None:
        out = bed.run(1, ["sh", "-ec", "rbd --id ganeti create --size 64 rbd/probe && "
                          "rbd --id ganeti bench --io-type write --io-total 4M probe >/dev/null && "
                          "rbd --id ganeti info rbd/probe --format json"]).stdout
        assert json.loads(out)["size"] == 64 * 1024**2


class TestLifecycle:
    def test_remove_refused_while_online(self, bed: Testbed) -> None:
        res = bed.run(0, ["gnt-node", "remove", "node2.gcb.test"], check=False)
        assert res.returncode != 0
        assert "take it offline first" in res.stdout + res.stderr

    def test_offline_keeps_io(self, bed: Testbed) -> None:
        res = bed.run(0, ["gnt-node", "modify", "-f", "--offline", "yes", "node2.gcb.test"], check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert bed.run(2, ["pgrep", "-x", "ceph-osd"], check=False).returncode == 1
        assert bed.run(2, ["pgrep", "-x", "ceph-mon"], check=False).returncode == 1
        deadline = time.monotonic() + 60  # the mons notice the stopped one within an election timeout
        while sorted(json.loads(ceph(bed, "quorum_status", "-f", "json"))["quorum_names"]) != ["node0", "node1"]:
            assert time.monotonic() < deadline, "quorum did not settle on node0, node1"
            time.sleep(0.5)
        out = bed.run(0, ["sh", "-ec", "rbd --id ganeti create --size 64 rbd/during && "
                          "head -c 1048576 /dev/urandom > /run/blob && "
                          "rbd --id ganeti import --no-progress /run/blob rbd/blob && "
                          "rbd --id ganeti export --no-progress rbd/blob - | cmp - /run/blob && echo same"]).stdout
        assert out.strip() == "same"

    def test_second_offline_refused(self, bed: Testbed) -> None:
        """With node2 away, node1 leaving would lose mon quorum and PGs below min_size: Ganeti's job is vetoed."""
        res = bed.run(0, ["gnt-node", "modify", "-f", "--offline", "yes", "node1.gcb.test"], check=False)
        assert res.returncode != 0
        assert "cannot go offline now" in res.stdout + res.stderr
        assert bed.run(1, ["pgrep", "-x", "ceph-osd"], check=False).returncode == 0
        assert "offline" not in bed.gnt("gnt-node", "list", "-o", "name,offline", "node1.gcb.test").split()[-1]

    def test_readd_brings_it_back(self, bed: Testbed) -> None:
        bed.run(0, ["gnt-node", "add", "--readd", "--no-ssh-key-check", "node2.gcb.test"], timeout=300)
        assert bed.run(2, ["pgrep", "-x", "ceph-osd"], check=False).returncode == 0
        assert wait_health(bed) == "HEALTH_OK"
        out = bed.run(2, ["sh", "-ec", "rbd --id ganeti export --no-progress rbd/blob /run/copy && sha1sum /run/copy"]
                      ).stdout
        ref = bed.run(0, ["sha1sum", "/run/blob"]).stdout
        assert out.split()[0] == ref.split()[0]

    def test_reinstalled_node_keeps_its_osd(self, bed: Testbed) -> None:
        """node2 is reinstalled with its data disk kept, then readded: its OSD is adopted, never made anew.

        The OSD booted before, so its store may hold the only copy of data: the
        device's bluestore label (its birth time) must survive, and the OSD must
        come back up from that store.
        """
        state = json.loads(bed.run(0, ["cat", "/var/lib/ganeti-ceph/storage.json"]).stdout)
        osd = next(o for o in state["osds"] if o["node"] == "node2.gcb.test")
        label = json.loads(bed.run(2, ["ceph-bluestore-tool", "show-label", "--dev", DISK]).stdout)[DISK]

        def up_from() -> int:
            dump = json.loads(ceph(bed, "osd", "dump", "-f", "json"))
            return next(o["up_from"] for o in dump["osds"] if str(o["osd"]) == osd["id"])

        booted = up_from()
        assert booted > 0
        res = bed.run(0, ["gnt-node", "modify", "-f", "--offline", "yes", "node2.gcb.test"], check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        # The reinstall: every Ceph and ganeti-ceph file of the node is gone, the data disk stays.
        bed.run(2, ["sh", "-ec", "rm -rf /var/lib/ceph/* /etc/ceph/* /var/lib/ganeti-ceph/* /var/log/ceph/* "
                    "/run/ceph /etc/ganeti/ceph.yaml"])
        bed.run(0, ["gnt-node", "add", "--readd", "--no-ssh-key-check", "node2.gcb.test"], timeout=300)
        assert wait_health(bed) == "HEALTH_OK"
        after = json.loads(bed.run(2, ["ceph-bluestore-tool", "show-label", "--dev", DISK]).stdout)[DISK]
        assert after["btime"] == label["btime"] and after["osd_uuid"] == label["osd_uuid"] == osd["uuid"]
        assert up_from() > booted  # it booted again, from its kept store
        assert bed.run(2, ["test", "-e", f"/var/lib/ceph/osd/ceph-{osd['id']}/ganeti-ceph.done"],
                       check=False).returncode == 0
        res = init(bed)  # converged: nothing to write, nothing pending
        assert res.returncode == 0 and res.stderr.count("files and stores in place") == 3, res.stderr

    def test_new_osd_that_never_booted_is_made_anew(self, bed: Testbed) -> None:
        """A run adding a disk is killed before any new OSD started, and one store is left unfinished (no
        done-marker, no mkfs_done in its label): the re-run waits for the osdmap, which says that OSD never
        booted (up_from 0), so only then is its store made anew. Last: it leaves 2 OSDs per node."""
        disks = f"ceph:disk={DISK},{DISK2}"
        for i in range(3):
            bed.run(i, ["truncate", "-s", "10G", DISK2])
        proc = subprocess.Popen([*bed.enter_argv(0), GNT_STORAGE, "init-distributed-storage", "-s", "ceph", "-S",
                                 disks, GROUP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if "node1: wrote osd." in line:  # its store made; the OSDs start only once every node's are
                os.killpg(proc.pid, signal.SIGKILL)  # nsenter forks: the command is its child
                break
        proc.wait(timeout=60)
        deadline = time.monotonic() + 120
        while any(bed.run(i, ["pgrep", "-f", "gnt_storage.deploy.node"],
                          check=False).returncode == 0 for i in range(3)):
            assert time.monotonic() < deadline, "the killed run's node side did not finish"
            time.sleep(1)
        state = json.loads(bed.run(0, ["cat", "/var/lib/ganeti-ceph/storage.json"]).stdout)
        new = next(o for o in state["osds"] if o["node"] == "node1.gcb.test" and o["dev"] == DISK2)
        label = json.loads(bed.run(1, ["ceph-bluestore-tool", "show-label", "--dev", DISK2]).stdout)[DISK2]
        assert label["osd_uuid"] == new["uuid"]
        bed.run(1, ["rm", f"/var/lib/ceph/osd/ceph-{new['id']}/ganeti-ceph.done"])
        # ... and between the label's first write and mkfs' end: a store without mkfs_done (a finished one is
        # adopted, never made anew, whatever the osdmap says)
        bed.run(1, ["ceph-bluestore-tool", "rm-label-key", "--dev", DISK2, "-k", "mkfs_done"])
        res = init(bed, disks)
        assert res.returncode == 0, res.stderr
        assert f"osd.{new['id']} wait for the osdmap" in res.stderr, res.stderr
        assert f"osd.{new['id']} store on {DISK2} (made anew: it never booted)" in res.stderr, res.stderr
        assert "health: HEALTH_OK" in res.stdout
        dump = json.loads(ceph(bed, "osd", "dump", "-f", "json"))
        assert next(o["up_from"] for o in dump["osds"] if str(o["osd"]) == new["id"]) > 0


def osd_states(bed: Testbed, node: str) -> dict[str, dict]:
    """The osdmap's view of `node`'s OSDs: {id: {up, in, state}}."""
    state = json.loads(bed.run(0, ["cat", "/var/lib/ganeti-ceph/storage.json"]).stdout)
    ids = {o["id"] for o in state["osds"] if o["node"] == node}
    dump = json.loads(ceph(bed, "osd", "dump", "-f", "json"))
    return {str(o["osd"]): o for o in dump["osds"] if str(o["osd"]) in ids}


class TestMaintenance:
    """Planned maintenance (noout) and a dead node, on the cluster the lifecycle story left (2 OSDs per node)."""

    def test_drained_is_noout_maintenance(self, bed: Testbed) -> None:
        """--drained yes: noout on node1's OSDs; they stop (a reboot) and stay in; --drained no restarts them."""
        assert wait_health(bed) == "HEALTH_OK"
        res = bed.run(0, ["gnt-node", "modify", "--drained", "yes", "node1.gcb.test"], check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        osds = osd_states(bed, "node1.gcb.test")
        assert osds and all("noout" in o["state"] for o in osds.values()), osds
        assert "OSD_FLAGS" in ceph(bed, "health", "detail")
        bed.run(1, ["pkill", "-x", "ceph-osd"])  # the maintenance: node1's OSDs stop
        deadline = time.monotonic() + 120
        while any(o["up"] for o in osd_states(bed, "node1.gcb.test").values()):
            assert time.monotonic() < deadline, "node1's OSDs were not marked down"
            time.sleep(1)
        assert all(o["in"] for o in osd_states(bed, "node1.gcb.test").values())
        res = bed.run(0, ["gnt-node", "modify", "--drained", "no", "node1.gcb.test"], check=False, timeout=400)
        assert res.returncode == 0, res.stdout + res.stderr
        osds = osd_states(bed, "node1.gcb.test")
        assert not any("noout" in o["state"] for o in osds.values()), osds
        assert wait_health(bed) == "HEALTH_OK"

    def test_offline_of_a_dead_node(self, bed: Testbed) -> None:
        """node2 dies (Ceph daemons, sshd and Ganeti's node daemon gone): --offline yes succeeds without
        reaching it, its OSDs down and out; data stays readable; readd brings it back."""
        node = "node2.gcb.test"
        bed.run(0, ["sh", "-ec", "head -c 1048576 /dev/urandom > /run/blob2 && "
                    "rbd --id ganeti import --no-progress /run/blob2 rbd/blob2"])
        noded = bed.run(2, ["cat", "/var/run/ganeti/ganeti-noded.pid"]).stdout.strip()
        bed.run(2, ["sh", "-c", f"kill {noded}; /etc/init.d/ssh stop; pkill -9 -x ceph-osd; pkill -9 -x ceph-mon; "
                    "pkill -9 -x ceph-mgr; true"])
        try:
            deadline = time.monotonic() + 120  # the admin sees it dead in Ceph first (peers report it)
            while any(o["up"] for o in osd_states(bed, node).values()):
                assert time.monotonic() < deadline, "node2's OSDs were not marked down"
                time.sleep(1)
            res = bed.run(0, ["gnt-node", "modify", "-f", "--offline", "yes", node], check=False, timeout=400)
            assert res.returncode == 0, res.stdout + res.stderr
            osds = osd_states(bed, node)  # out: Ceph alone would wait mon_osd_down_out_interval (600 s)
            assert osds and not any(o["up"] or o["in"] for o in osds.values()), osds
            out = bed.run(0, ["sh", "-ec", "rbd --id ganeti export --no-progress rbd/blob2 - | cmp - /run/blob2 "
                              "&& echo same"]).stdout
            assert out.strip() == "same"
        finally:
            bed.run(2, ["sh", "-c", "/etc/init.d/ssh start; /usr/lib/ganeti/daemon-util start ganeti-noded"])
        bed.run(0, ["gnt-node", "add", "--readd", "--no-ssh-key-check", node], timeout=400)
        assert wait_health(bed, timeout=180) == "HEALTH_OK"
        assert all(o["up"] and o["in"] for o in osd_states(bed, node).values())


class TestRemoval:
    """remove-distributed-storage, last: refused while images live there, then everything of ours goes."""

    def test_refused_while_images_live_there(self, bed: Testbed) -> None:
        bed.run(0, ["rbd", "--id", "ganeti", "create", "--size", "8", "rbd/held"])  # an instance's disk, say
        one_line_error(gs(bed, "remove-distributed-storage", GROUP), "RBD image(s)", "nothing was changed")
        assert bed.run(1, ["pgrep", "-x", "ceph-mon"], check=False).returncode == 0
        assert "ganeti-ceph:storage" in bed.gnt("gnt-group", "list-tags", GROUP)

    def test_a_removing_mark_never_skips_the_image_check(self, bed: Testbed) -> None:
        """A run stopped after its proof left the state marked "removing": while Ceph answers, a later run
        proves again (images made since are found) and changes nothing."""
        bed.run(0, [sys.executable, "-c", f"import json; p = {STATE!r}; s = json.load(open(p)); "
                    "s['removing'] = True; json.dump(s, open(p, 'w'))"])
        try:
            one_line_error(gs(bed, "remove-distributed-storage", GROUP), "RBD image(s)", "nothing was changed")
            assert bed.run(1, ["pgrep", "-x", "ceph-mon"], check=False).returncode == 0
        finally:
            bed.run(0, [sys.executable, "-c", f"import json; p = {STATE!r}; s = json.load(open(p)); "
                        "s.pop('removing'); json.dump(s, open(p, 'w'))"])

    def test_a_master_without_the_state_refuses(self, bed: Testbed) -> None:
        """After a failover to a master outside the group: the cluster runs on, its tags stay."""
        bed.run(0, ["mv", STATE, STATE + ".away"])
        try:
            one_line_error(gs(bed, "remove-distributed-storage", GROUP), "lacks", "copy it from a node of group")
        finally:
            bed.run(0, ["mv", STATE + ".away", STATE])
        assert "ganeti-ceph:storage" in bed.gnt("gnt-group", "list-tags", GROUP)

    def test_writes_are_fenced_until_lifted(self, bed: Testbed) -> None:
        """The fence remove puts up between its proof and the purge: no image can be made, until lifted.
        A rerun after a kill with the fence up takes it as it is and gives back the quota the pool had
        (was: its marker write waited on the full pool, then the rerun refused, fenced forever)."""
        ceph(bed, "osd", "pool", "set-quota", "rbd", "max_objects", "100000")
        script = ("import subprocess, sys\n"
                  "from ganeti_ceph.session import Session\n"
                  "from gnt_storage.deploy import distributed, write_fence\n"
                  f"with Session(distributed.group_admin({GROUP!r})) as s:\n"
                  "    before = write_fence.fence(s, ['rbd'])\n"
                  "    made = subprocess.run(['timeout', '5', 'rbd', '--id', 'ganeti', 'create', '--size', '8', "
                  "'rbd/fenced']).returncode\n"
                  "    again = write_fence.fence(s, ['rbd'])  # the rerun of a run killed here\n"
                  "    write_fence.lift(s, again)\n"
                  "print(made, before == again, again['rbd'])\n")
        try:
            made, same, before = bed.run(0, [sys.executable, "-c", script], timeout=300).stdout.split()
            # 124: the create waited on the fence until `timeout` ended it (unfenced, it takes under 1 s)
            assert made == "124" and same == "True" and before == "100000"
            quota = json.loads(ceph(bed, "osd", "pool", "get-quota", "rbd", "-f", "json"))
            assert quota["quota_max_objects"] == 100000
        finally:
            ceph(bed, "osd", "pool", "set-quota", "rbd", "max_objects", "0")
        bed.run(0, ["timeout", "60", "rbd", "--id", "ganeti", "create", "--size", "8", "rbd/after-fence"])
        assert "after-fence" in bed.run(0, ["rbd", "--id", "ganeti", "ls", "rbd"]).stdout

    def test_removed_then_made_anew(self, bed: Testbed) -> None:
        """With no image left it goes: daemons, stores, files, tags; the same devices take a new cluster."""
        fsid = json.loads(bed.run(0, ["cat", "/var/lib/ganeti-ceph/storage.json"]).stdout)["fsid"]
        bed.run(0, ["sh", "-ec", "for i in $(rbd --id ganeti ls rbd); do rbd --id ganeti rm --no-progress rbd/$i; "
                    "done"])
        res = gs(bed, "remove-distributed-storage", GROUP)
        assert res.returncode == 0, res.stderr
        assert f"storage cluster {fsid} of group {GROUP} removed" in res.stdout
        assert "ganeti-ceph:storage" not in bed.gnt("gnt-group", "list-tags", GROUP)
        for i in range(3):  # /var/lib/ceph/{mon,mgr,osd} stay: Debian's ceph packages own them
            left = bed.run(i, ["sh", "-c", f"ls {' '.join(NODE_FILES)} 2>/dev/null; pgrep -x 'ceph-(mon|mgr|osd)'; "
                               "find /var/lib/ceph -mindepth 2 -maxdepth 2"], check=False).stdout
            assert left.strip() == "", f"node{i}: {left}"
        assert not bed.run(0, ["ls", "/var/lib/ganeti-ceph"]).stdout.strip()
        res = init(bed, f"ceph:disk={DISK}")  # the zeroed devices are empty again: a new cluster takes them
        assert res.returncode == 0, res.stderr
        assert "health: HEALTH_OK" in res.stdout and fsid not in res.stdout
