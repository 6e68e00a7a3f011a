"""The ganeti-ceph hooks in a real cluster: vetoes before anything changes, fencing of a dead primary.

Each veto test breaks what the hook checks inside ONE node's mount namespace
(never the host), runs the gnt-* command, reads the hook's one line in the
failed command's output, proves nothing changed (instance still stopped or
on its old node, no QEMU, no mapping, no watcher, image metadata as before),
and repairs. Ganeti shows a failed pre hook as "hooks execution failed: ...
script: <hpath>-pre.d/50-ganeti-ceph, output: <the hook's line>". The output
of hooks that succeed (e.g. "fenced node1...") is not kept anywhere by
Ganeti 3.0, so the fencing test reads the result in Ceph's OSD blocklist.
Lifting a fence needs the admin key on the master: the `admin_on_master`
fixture puts the cluster's admin keyring next to node0's /etc/ceph/ceph.conf,
as a real master keeps it.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator

import pytest

from ganeti_ceph import config as gconfig
from ganeti_ceph.config import Config
from ganeti_ceph.errors import CephError
from ganeti_ceph.rbd import fencing
from ganeti_ceph.rbd.fencing import fence_entry, ip_of
from ganeti_ceph.session import Session
from testbed.ganeti import Testbed
from tests.ganeti import checks
from tests.ganeti.checks import Inst, expect_state, known_bug
from tests.ganeti.conftest import CEPH_DIR

KEYRING = "/etc/ceph/ceph.client.ganeti.keyring"
QEMU_MODULES = "/usr/lib/x86_64-linux-gnu/qemu"
ADMIN_KEYRING = "/etc/ceph/ceph.client.admin.keyring"


@pytest.fixture(scope="module")
def admin_on_master(testbed: Testbed, ceph_admin: Config) -> Iterator[None]:
    """The admin keyring on node0 (the master), mode 0600, passed on stdin (never in argv)."""
    with open(ceph_admin.keyring) as fh:
        testbed.run(0, ["sh", "-ec", f"umask 077; cat > {ADMIN_KEYRING}"], input=fh.read())
    yield
    testbed.run(0, ["rm", "-f", ADMIN_KEYRING], check=False)


def client_config() -> Config:
    """What every node's provider and hooks use: the restricted client key."""
    return gconfig.load(os.path.join(CEPH_DIR, "ganeti-ceph.yaml"))


@pytest.fixture(scope="module")
def userspace(testbed: Testbed, ceph_admin: Config) -> Iterator[Inst]:
    """A stopped KVM instance with a userspace disk on node0."""
    inst = Inst("hk-us.gcb.test", "userspace", "kvm")
    checks.add(testbed, ceph_admin, inst, start=False)
    yield inst
    testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", inst.name],
                check=False)


@pytest.fixture(scope="module")
def kernelspace(testbed: Testbed, ceph_admin: Config) -> Iterator[Inst]:
    """A running fake-hypervisor instance with a kernelspace disk, on node0 at first."""
    inst = Inst("hk-ks.gcb.test", "kernelspace", "fake")
    checks.add(testbed, ceph_admin, inst)
    yield inst
    testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", inst.name],
                check=False)


def hook_line(out: str, hpath: str) -> str:
    """The one line our hook printed, as Ganeti shows a failed pre hook."""
    match = re.search(rf"script: {hpath}-pre\.d/50-ganeti-ceph, output: (.*)", out)
    assert match, f"no veto by our {hpath} pre hook in:\n{out}"
    line = match.group(1).strip()
    assert line.startswith(f"ganeti-ceph hook {hpath}-pre.d: "), line
    return line


def vetoed(tb: Testbed, admin: Config, inst: Inst, hpath: str, *argv: str) -> str:
    """Run a command our pre hook must veto; prove nothing changed; return the hook's line."""
    before = {v: s["meta"] for v, s in checks.pool_state(admin).items() if v in inst.sizes}
    line = hook_line(checks.failed(tb, *argv), hpath)
    state = expect_state(tb, admin, inst)
    assert {v: state[v]["meta"] for v in inst.sizes} == before, "the image's open records changed"
    return line


def start_vetoed(tb: Testbed, admin: Config, inst: Inst) -> str:
    return vetoed(tb, admin, inst, "instance-start", "gnt-instance", "start", inst.name)


def test_start_vetoed_without_the_qemu_keyring(testbed: Testbed, ceph_admin: Config, userspace: Inst) -> None:
    """Provider keyring elsewhere, QEMU's /etc/ceph keyring gone: start is vetoed naming disk 0 and the keyring."""
    script = (f"cp -p {KEYRING} /etc/ganeti/provider.keyring && cp -p /etc/ganeti/ceph.yaml /etc/ganeti/ceph.yaml.t && "
              "sed -i 's#^keyring: .*#keyring: /etc/ganeti/provider.keyring#' /etc/ganeti/ceph.yaml && "
              f"mv {KEYRING} {KEYRING}.away")
    testbed.run(0, ["sh", "-ec", script])
    try:
        line = start_vetoed(testbed, ceph_admin, userspace)
    finally:
        testbed.run(0, ["sh", "-ec", f"mv {KEYRING}.away {KEYRING}; mv /etc/ganeti/ceph.yaml.t /etc/ganeti/ceph.yaml; "
                                     "rm /etc/ganeti/provider.keyring"])
    assert "disk 0 (" in line and f"{KEYRING} is missing or unreadable" in line, line


def test_start_vetoed_without_the_shared_keyring(testbed: Testbed, ceph_admin: Config, userspace: Inst) -> None:
    """The usual layout (provider and QEMU share /etc/ceph's keyring), keyring gone: the veto names it and disk 0."""
    testbed.run(0, ["mv", KEYRING, f"{KEYRING}.away"])
    try:
        line = start_vetoed(testbed, ceph_admin, userspace)
    finally:
        testbed.run(0, ["mv", f"{KEYRING}.away", KEYRING])
    known_bug("disk 0" in line and KEYRING in line, line)


def test_start_vetoed_without_qemu_rbd_driver(testbed: Testbed, ceph_admin: Config, userspace: Inst) -> None:
    """QEMU's modules hidden on node0 (no block-rbd.so): start is vetoed naming the driver and its package."""
    testbed.run(0, ["sh", "-ec", f"mkdir -p /run/empty-qemu && mount --bind /run/empty-qemu {QEMU_MODULES}"])
    try:
        line = start_vetoed(testbed, ceph_admin, userspace)
    finally:
        testbed.run(0, ["umount", QEMU_MODULES])
    assert "disk 0 (" in line and "block-rbd.so" in line and "qemu-block-extra" in line, line


def test_start_after_repairs(testbed: Testbed, ceph_admin: Config, userspace: Inst) -> None:
    """With everything put back the same start passes the hook: the vetoes came from what was broken."""
    testbed.gnt("gnt-instance", "start", userspace.name)
    userspace.running = True
    expect_state(testbed, ceph_admin, userspace)


def test_migrate_vetoed_without_rbd_fuse_on_target(testbed: Testbed, ceph_admin: Config, kernelspace: Inst) -> None:
    """No usable rbd-fuse on node1: migrating there is vetoed naming it, before node1 maps anything."""
    # /dev/null over the binary: still there, but not executable (shutil.which skips it, as exec would fail).
    testbed.run(1, ["mount", "--bind", "/dev/null", "/usr/bin/rbd-fuse"])
    try:
        line = vetoed(testbed, ceph_admin, kernelspace, "instance-migrate", "gnt-instance", "migrate", "-f",
                      kernelspace.name)
    finally:
        testbed.run(1, ["umount", "/usr/bin/rbd-fuse"])
    assert "disk 0 (" in line and "rbd-fuse is missing" in line, line
    testbed.gnt("gnt-instance", "migrate", "-f", kernelspace.name)
    kernelspace.primary = 1
    expect_state(testbed, ceph_admin, kernelspace)


def test_failover_fences_a_dead_primary(testbed: Testbed, ceph_admin: Config, kernelspace: Inst,
                                       admin_on_master: None) -> None:
    """node1 dies with the instance's disk mapped; after `--offline yes` the failover to node0 fences node1
    (the IP of its own open record, exactly: nothing else), which cuts its still-running rbd-fuse off the
    image; `gnt-node modify --offline no` lifts it with the master's admin key."""
    if kernelspace.primary != 1:
        testbed.gnt("gnt-instance", "migrate", "-f", kernelspace.name)
        kernelspace.primary = 1
    vol, node1, ip1 = next(iter(kernelspace.sizes)), testbed.node_names[1], testbed.addresses[1]
    record = checks.pool_state(ceph_admin)[vol]["meta"][f"ganeti.open.{node1}"]
    assert f'"ip": "{ip1}"' in record, record
    fence = fence_entry(ip1)
    before = checks.blocklist(ceph_admin)
    # node1 "dies": its node daemon is killed (Ganeti cannot reach it) while rbd-fuse keeps its Ceph session,
    # so there is a live client for the fence to cut off. (Taking its link down works too, but every RPC to it
    # then times out and `--offline yes` alone takes ~30 s.)
    noded = testbed.run(1, ["cat", "/var/run/ganeti/ganeti-noded.pid"]).stdout.strip()
    testbed.run(1, ["kill", noded])
    try:
        testbed.gnt("gnt-node", "modify", "-f", "--offline", "yes", node1)
        # --ignore-consistency asks "is the node offline?" even with -f, and only on a tty.
        res = testbed.run(0, ["script", "-qec", f"gnt-instance failover -f --ignore-consistency {kernelspace.name}",
                              "/dev/null"], input="y\n", check=False, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        kernelspace.primary = 0
        # No tb.mappings(1)/leaked_loops() yet: the fenced rbd-fuse on node1 never answers, and asking its loop
        # device for its status (LOOP_GET_STATUS) would wait on it for good.
        added = checks.blocklist(ceph_admin) - before
        # Besides the fence, node0's rbd-fuse breaking the dead owner's exclusive lock blocklists that one client.
        assert fence in added and {ip_of(e) for e in added} == {ip1}, f"not node1's IP alone was fenced: {added}"
        assert checks.fields(testbed, kernelspace.name, "status", "pnode") == ["running", testbed.node_names[0]]
        assert re.fullmatch(r"/dev/loop[1-9]\d*", checks.disk_link(testbed, 0, kernelspace.name))
        assert checks.rbd_fuse_pids(testbed, 0, vol), "the disk is not mapped on node0"
        checks.expect_ceph(testbed, ceph_admin, kernelspace)  # node0 the only watcher: node1's was cut off
    finally:  # node1 back in the cluster whatever happened: later tests need it
        bury_node1(testbed, kernelspace, vol)
        testbed.run(1, ["/usr/lib/ganeti/daemon-util", "start", "ganeti-noded"])  # the node is back up
        res = testbed.run(0, ["gnt-node", "modify", "-f", "--offline", "no", node1], check=False)
        if res.returncode != 0:  # the way back that always works, so later tests still have node1
            testbed.gnt("gnt-node", "add", "--readd", "--no-ssh-key-check", node1)
    assert res.returncode == 0, res.stdout + res.stderr
    assert fence not in checks.blocklist(ceph_admin), "--offline no did not lift node1's fence"
    flags = testbed.gnt("gnt-node", "list", "--no-headers", "-o", "offline,master_candidate", node1).split()
    assert flags == ["N", "Y"], flags
    expect_state(testbed, ceph_admin, kernelspace)
    # node1 serves again: the instance goes back there.
    testbed.gnt("gnt-instance", "migrate", "-f", kernelspace.name)
    kernelspace.primary = 1
    expect_state(testbed, ceph_admin, kernelspace)


def bury_node1(tb: Testbed, inst: Inst, vol: str) -> None:
    """What a dead node leaves behind, cleaned up before it rejoins (a rebooted node would have none of it)."""
    for pid in checks.rbd_fuse_pids(tb, 1, vol):  # a crashed node runs nothing; SIGTERM does not end it
        os.kill(pid, signal.SIGKILL)
    # The failover post hook could not unmap on an offline node: the provider's detach does it now...
    tb.run(1, ["env", f"VOL_NAME={vol}", f"{tb.provider}/detach"], check=False)
    # ...except the dead FUSE mount (see TestCrashedMapper in test_lifecycle.py): unmounted by hand.
    for mount in tb.mappings(1)["mounts"]:
        tb.run(1, ["umount", "-l", mount], check=False)
    tb.run(1, ["rm", "-f", f"/var/run/ganeti/fake-hypervisor/{inst.name}",
               f"{checks.INSTANCE_DISKS}/{inst.name}:0"], check=False)
    assert tb.mappings(1) == checks.NO_MAPPINGS


def test_the_client_key_fences_but_cannot_lift(testbed: Testbed, ceph_admin: Config) -> None:
    """Every node's key may add a fence (the failover hook does so with it), IPv4 and IPv6 in the form Ceph
    lists, but may not remove one: a fenced node cannot lift its own fence. The admin key can."""
    ips = [f"{testbed.host_addr.rsplit('.', 1)[0]}.250", "2001:db8::250"]
    entries = {fence_entry(ip) for ip in ips}
    with Session(client_config()) as s:
        assert {fencing.add(s, ip, 600.0) for ip in ips} == entries
        try:
            assert entries <= checks.blocklist(ceph_admin)
            for entry in entries:
                with pytest.raises(CephError, match="check the client's caps"):
                    fencing.lift(s, entry)
        finally:
            with Session(ceph_admin) as admin:
                for entry in entries:
                    fencing.lift(admin, entry)
    assert not entries & checks.blocklist(ceph_admin)


@pytest.fixture()
def second_pool(testbed: Testbed, ceph_admin: Config) -> Iterator[str]:
    """Pools `hkpriv` (RBD, not for Ganeti's key) then `hk2` (RBD, added to the key's caps); caps restored after."""
    with Session(ceph_admin) as s:
        caps = s.mon_command("auth get", entity="client.ganeti")[0]["caps"]
        for pool in ("hkpriv", "hk2"):
            s.mon_command("osd pool create", pool=pool, pg_num=8, pgp_num=8)
            s.mon_command("osd pool application enable", pool=pool, app="rbd")
        grant(s, caps, "osd", f"{caps['osd']}, profile rbd pool=hk2")
        try:
            yield "hk2"
        finally:
            grant(s, caps, "osd", caps["osd"])


def grant(s: Session, caps: dict[str, str], kind: str, cap: str) -> None:
    new = {**caps, kind: cap}
    s.mon_command("auth caps", entity="client.ganeti", caps=[x for k, v in new.items() for x in (k, v)])


def test_start_with_a_disk_beyond_pools_the_key_may_not_read(testbed: Testbed, ceph_admin: Config,
                                                              second_pool: str) -> None:
    """The disk lives in hk2; the key may not read hkpriv (nor the mgr's pool): the start hook skips what it
    may not read and passes. Once the key loses hk2 too, the start is vetoed in one line naming the pools and
    the cap to add, not with a traceback."""
    name = "hk-pool.gcb.test"
    testbed.gnt("gnt-instance", "add", "-t", "ext", "--disk", f"0:size=64M,provider=rbd,pool={second_pool}",
                "-o", "noop+default", "--hypervisor", "fake", "-B", "memory=128M", "-n", testbed.node_names[0],
                "--no-ip-check", "--no-name-check", "--no-start", name)
    try:
        testbed.gnt("gnt-instance", "start", name)
        testbed.gnt("gnt-instance", "shutdown", "--timeout=0", name)
        with Session(ceph_admin) as s:
            caps = s.mon_command("auth get", entity="client.ganeti")[0]["caps"]
            grant(s, caps, "osd", "profile rbd pool=rbd")
            try:
                line = hook_line(checks.failed(testbed, "gnt-instance", "start", name), "instance-start")
            finally:
                grant(s, caps, "osd", caps["osd"])
        assert "Traceback" not in line and "disk 0 (" in line and "hkpriv" in line and second_pool in line, line
        assert "profile rbd pool=<that pool>" in line, line
        assert checks.fields(testbed, name, "status", "pnode") == ["ADMIN_down", testbed.node_names[0]]
    finally:
        testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", name],
                    check=False)


def test_readd_lifts_a_fence_with_the_admin_key(testbed: Testbed, ceph_admin: Config, kernelspace: Inst,
                                               admin_on_master: None) -> None:
    """A fence on node1's IP (as a failover leaves it) is lifted by `gnt-node add --readd`: the master's
    node-add post hook removes it with the admin key, since the client key may not."""
    if kernelspace.primary == 1:  # nothing of node1 may be serving while it is fenced
        testbed.gnt("gnt-instance", "migrate", "-f", kernelspace.name)
        kernelspace.primary = 0
    assert testbed.mappings(1) == checks.NO_MAPPINGS
    node1 = testbed.node_names[1]
    with Session(ceph_admin) as s:
        fence = fencing.add(s, testbed.addresses[1], 600.0)
    try:
        testbed.gnt("gnt-node", "add", "--readd", "--no-ssh-key-check", node1)
        assert fence not in checks.blocklist(ceph_admin), "readding node1 did not lift its fence"
    finally:
        if fence in checks.blocklist(ceph_admin):
            with Session(ceph_admin) as s:
                fencing.lift(s, fence)
