"""`gnt-storage init-distributed-storage` on a 3-node Ganeti group vs the same cluster brought up by hand.

One 3-node Ganeti test bed without Ceph (testbed/, bed id $GANETI_TESTBED_ID on
$GANETI_TESTBED_NET.0/24, else 3 on 198.18.3.0/24, so it never meets the other
beds on this machine), shared by the runs. Each
node gets a sparse 10 GiB file /srv/osd0.img as its OSD device. Every sample
starts from scratch: daemons killed, Ceph's files, our state and the group
tags removed, the OSD file re-created (untimed).

Ours: `gnt-storage init-distributed-storage -s ceph -S ceph:disk=/srv/osd0.img default`
on the master, until it returns at HEALTH_OK (3 mons, a mgr beside each, one
OSD per node, pool rbd size 3, client.ganeti). Baseline: the script an admin
would run on the master with plain `ssh` over the same links (Ganeti's root
key, the cluster host key): the same daemons, layout and ceph.conf (rendered
by our renderer, new fsid), keys by ceph-authtool, monmaptool, `ceph-mon
--mkfs`, `ceph osd new`, `ceph-osd --mkfs`, pools, `rbd pool init`, then
`ceph status` polled until settled HEALTH_OK (the same condition as ours).

After each of our samples the same command runs again on the finished
cluster: the re-run row (its ratio is against our first runs).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import time
import uuid

from harness import GNT_STORAGE, REPO, SCRATCH, BenchError, Ctx, Result, Shared, bench, clean_env, compare, log

from gnt_storage.deploy import distributed
from gnt_storage.deploy.cephconf import render_conf
from gnt_storage.deploy.options import StorageOptions

TB_DIR = os.path.join(SCRATCH, "distributed-testbed")
# The bed's id and network: those given (GANETI_TESTBED_ID, GANETI_TESTBED_NET), else 3 on 198.18.3.0/24.
BED_ENV = {"GANETI_TESTBED_ID": os.environ.get("GANETI_TESTBED_ID", "3"),
           "GANETI_TESTBED_NET": os.environ.get("GANETI_TESTBED_NET", "198.18.3")}
NODES = [f"node{i}.gcb.test" for i in range(3)]
ADDRS = {n: f"{BED_ENV['GANETI_TESTBED_NET']}.{10 + i}" for i, n in enumerate(NODES)}
DISK = "/srv/osd0.img"
GROUP = "default"
INIT = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", GNT_STORAGE,
        "init-distributed-storage", "-s", "ceph", "-S", f"ceph:disk={DISK}", GROUP]

# On every node, untimed: back to a node that never had Ceph.
RESET = f"""set -u
alive() {{ pgrep -x ceph-mon || pgrep -x ceph-mgr || pgrep -x ceph-osd; }}
pkill -9 -x ceph-mon; pkill -9 -x ceph-mgr; pkill -9 -x ceph-osd
for _ in $(seq 100); do alive >/dev/null || break; sleep 0.1; done
if alive >/dev/null; then echo "ceph daemons would not die" >&2; exit 1; fi
rm -rf /var/lib/ceph/* /var/log/ceph/* /run/ceph /etc/ceph/ceph.conf /etc/ceph/ceph.client.* \\
    /var/lib/ganeti-ceph/* /etc/ganeti/ceph.yaml
rm -f {DISK} && truncate -s 10G {DISK}
"""
UNTAG = f"""set -e
tags=$(gnt-group list-tags {GROUP} | grep '^ganeti-ceph:' || true)
[ -z "$tags" ] || gnt-group remove-tags {GROUP} $tags
"""

# The baseline, run on the master: `bash -c MANUAL manual CONF NODE...`; a mon, a mgr and osd.<index> on each node.
MANUAL = r"""set -euo pipefail
CONF=$1; shift
NODES=("$@")
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
on() {  # on NODE COMMAND: run as root on NODE, with Ganeti's key and the cluster's host key
    local node=$1; shift
    ssh -oBatchMode=yes -oHostKeyAlias=cluster.gcb.test -oGlobalKnownHostsFile=/var/lib/ganeti/known_hosts \
        -oUserKnownHostsFile=/dev/null -oStrictHostKeyChecking=yes "root@$node" "$@"
}
short() { echo "${1%%.*}"; }
step() { echo "manual: $*" >&2; }

step "keys (mon., client.admin, client.ganeti) and monmap"
printf '%s' "$CONF" >"$T/ceph.conf"
FSID=$(sed -n 's/^\s*fsid = //p' "$T/ceph.conf")
ceph-authtool --create-keyring "$T/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$T/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool --create-keyring "$T/ceph.client.ganeti.keyring" --gen-key -n client.ganeti \
    --cap mon 'profile rbd' --cap osd 'profile rbd pool=rbd' \
    --cap mgr 'profile rbd pool=rbd' >/dev/null
ceph-authtool "$T/mon.keyring" --import-keyring "$T/ceph.client.admin.keyring" >/dev/null
ceph-authtool "$T/mon.keyring" --import-keyring "$T/ceph.client.ganeti.keyring" >/dev/null
ADDV=()
for n in "${NODES[@]}"; do
    ip=$(getent hosts "$n" | cut -d' ' -f1)
    ADDV+=(--addv "$(short "$n")" "[v2:$ip:3300,v1:$ip:6789]")
done
monmaptool --create --fsid "$FSID" "${ADDV[@]}" "$T/monmap" >/dev/null

step "on each node: conf and keys to /etc/ceph, mkfs and start its mon"
for n in "${NODES[@]}"; do
    tar -C "$T" -c . | on "$n" "set -e
        install -d -o ceph -g ceph -m 770 /run/ceph
        install -d -o ceph -g ceph -m 2770 /var/log/ceph
        install -d -o ceph -g ceph -m 750 /var/lib/ceph/mon/ceph-$(short "$n") /var/lib/ceph/mgr /var/lib/ceph/osd
        D=\$(mktemp -d); tar -C \$D -x
        install -m 644 \$D/ceph.conf /etc/ceph/
        install -m 600 \$D/ceph.client.admin.keyring \$D/ceph.client.ganeti.keyring /etc/ceph/
        chown -R ceph:ceph \$D
        ceph-mon --mkfs -i $(short "$n") --monmap \$D/monmap --keyring \$D/mon.keyring --setuser ceph --setgroup ceph
        rm -rf \$D
        ceph-mon -i $(short "$n") --setuser ceph --setgroup ceph" &
done
wait

step "on each node: mgr key, start the mgr; register, mkfs and start its OSD"
install -m 600 "$T/ceph.client.admin.keyring" /etc/ceph/  # already there when the master is a node
i=0
for n in "${NODES[@]}"; do
    (
        id=$(short "$n")
        ceph auth get-or-create "mgr.$id" mon 'allow profile mgr' osd 'allow *' mds 'allow *' >"$T/mgr.$id"
        uuid=$(uuidgen)
        key=$(ceph-authtool --gen-print-key)
        echo "{\"cephx_secret\": \"$key\"}" | ceph osd new "$uuid" "$i" -i - >/dev/null
        on "$n" "set -e
            install -d -o ceph -g ceph -m 750 /var/lib/ceph/mgr/ceph-$id /var/lib/ceph/osd/ceph-$i
            install -o ceph -g ceph -m 600 /dev/stdin /var/lib/ceph/mgr/ceph-$id/keyring
            ceph-mgr -i $id --setuser ceph --setgroup ceph
            ln -s /srv/osd0.img /var/lib/ceph/osd/ceph-$i/block
            chown ceph:ceph /srv/osd0.img
            ceph-authtool --create-keyring /var/lib/ceph/osd/ceph-$i/keyring --name osd.$i --add-key $key >/dev/null
            chown ceph:ceph /var/lib/ceph/osd/ceph-$i/keyring
            ceph-osd -i $i --mkfs --osd-uuid $uuid --setuser ceph --setgroup ceph
            ceph-osd -i $i --setuser ceph --setgroup ceph" <"$T/mgr.$id"
    ) &
    i=$((i + 1))
done
wait

step "pools rbd and device_health_metrics, rbd pool init"
ceph osd set-require-min-compat-client mimic --yes-i-really-mean-it
ceph osd pool create rbd 64 64 replicated
ceph osd pool create device_health_metrics 1 1 replicated
ceph osd pool application enable device_health_metrics mgr_devicehealth
rbd pool init rbd

step "waiting for HEALTH_OK (mgr active, all OSDs up+in, all PGs active+clean)"
SETTLED='.health.status == "HEALTH_OK" and .mgrmap.available
    and .osdmap.num_osds > 0 and .osdmap.num_up_osds == .osdmap.num_osds and .osdmap.num_in_osds == .osdmap.num_osds
    and .pgmap.num_pgs > 0
    and ([.pgmap.pgs_by_state[] | select(.state_name == "active+clean") | .count] | add) == .pgmap.num_pgs'
until ceph status -f json 2>/dev/null | jq -e "$SETTLED" >/dev/null; do
    [ "$SECONDS" -lt 300 ] || { ceph status >&2; exit 1; }
    sleep 0.1
done
step "HEALTH_OK after $SECONDS s"
"""


def manual_conf() -> str:
    """The ceph.conf our tool writes for this group (same renderer, same spec), with a new fsid."""
    state = {"fsid": str(uuid.uuid4()), "options": dataclasses.asdict(StorageOptions(disk=(DISK,))),
             "mons": NODES, "osds": [{"id": str(i), "node": n} for i, n in enumerate(NODES)], "size": 3,
             "min_size": 2}
    return render_conf(distributed.spec_of(state, ADDRS))


class Bed:
    """The test bed, driven through its CLI (its constants come from the environment at import)."""

    def __init__(self) -> None:
        self.enter: list[list[str]] = []
        self.firsts: list[float] = []  # our samples from scratch
        self.reruns: list[float] = []  # the same command again right after each

    def cli(self, action: str, *extra: str, timeout: float = 300) -> str:
        argv = [os.path.join(REPO, ".venv", "bin", "python"), "-m", "testbed.ganeti", action, *extra,
                "--dir", TB_DIR, "--nodes", str(len(NODES)), "--no-ceph"]
        try:
            res = subprocess.run(argv, env=clean_env() | BED_ENV, cwd=REPO, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BenchError(f"testbed {action} did not finish within {timeout:.0f} s") from None
        if res.returncode != 0:
            raise BenchError(f"testbed {action} failed: {(res.stderr or res.stdout).strip()[-500:]}")
        return res.stdout

    def up(self) -> None:
        self.cli("up", timeout=600)
        for i in range(len(NODES)):
            argv = self.cli("shell", str(i)).split()
            if argv[-2:] != ["bash", "-l"]:
                raise BenchError(f"unexpected testbed shell output: {' '.join(argv)}")
            self.enter.append(argv[:-2])

    def down(self) -> None:
        self.cli("down")

    def run(self, i: int, argv: list[str], timeout: float = 600) -> str:
        """Run argv as root in node i; its output; BenchError unless it exits 0."""
        what = f"node{i}: {' '.join(argv)[:60]}"
        try:
            res = subprocess.run([*self.enter[i], *argv], env=clean_env() | {"HOME": "/root"}, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} did not finish within {timeout:.0f} s") from None
        if res.returncode != 0:
            tail = "\n    ".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            raise BenchError(f"{what} exited {res.returncode}:\n    {tail}")
        return res.stdout

    def timed(self, i: int, argv: list[str]) -> float:
        start = time.monotonic()
        self.run(i, argv)
        return time.monotonic() - start

    def reset(self) -> None:
        for i in range(len(NODES)):
            self.run(i, ["sh", "-c", RESET])
        self.run(0, ["sh", "-c", UNTAG])

    def ours(self) -> float:
        """From scratch, then the re-run (kept aside); the first run's seconds."""
        self.reset()
        took = self.timed(0, INIT)
        again = self.timed(0, INIT)
        self.firsts.append(took)
        self.reruns.append(again)
        log(f"init-distributed-storage re-run: {again:8.3f} s")
        return took

    def manual(self) -> float:
        self.reset()
        return self.timed(0, ["bash", "-c", MANUAL, "manual", manual_conf(), *NODES])


def start_bed(shared: Shared) -> Bed:
    bed = Bed()
    shared.on_close(bed.down)  # also after a failed or half-done up
    log(f"distributed bench: bringing up a {len(NODES)}-node test bed without Ceph in {TB_DIR}")
    bed.up()
    return bed


@bench("init-distributed-storage", runs=3)
def init_distributed(ctx: Ctx) -> Result:
    bed = ctx.shared.get("distributed-testbed", start_bed)
    return compare("init-distributed-storage", "manual over ssh", ctx.runs, bed.ours, bed.manual)


@bench("init-distributed-storage-rerun", runs=3)
def init_distributed_rerun(ctx: Ctx) -> Result:
    """Re-runs timed by the bench above; run alone (--only), it makes its own first runs."""
    bed = ctx.shared.get("distributed-testbed", start_bed)
    while len(bed.reruns) < ctx.runs:
        bed.ours()
    again, first = statistics.median(bed.reruns), statistics.median(bed.firsts)
    return {"name": "init-distributed-storage-rerun", "ours_s": round(again, 3), "baseline": "first run (ours)",
            "baseline_s": round(first, 3), "ratio": round(again / first, 3)}
