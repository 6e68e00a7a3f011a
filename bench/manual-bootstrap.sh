#!/bin/bash
# Baseline for `gnt-storage local-cluster up`: the same cluster (1 mon, 1 mgr,
# 3 bluestore OSDs, pools rbd + device_health_metrics, client.ganeti) brought
# up the way an admin does it by hand with the stock tools, one step after
# another, following Ceph's "manual deployment" guide.
#
# The conf comes from our renderer so both sides run identical settings; only
# the way of getting there differs. Returns once the cluster is settled
# HEALTH_OK (same condition as ours). Daemons write pid files to DIR/run;
# stopping them and removing DIR is the caller's job (bench/run.py does it).
#
# Usage: bench/manual-bootstrap.sh DIR PORT      (PORT..PORT+99 on 127.0.0.1)
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 DIR PORT" >&2; exit 2; }
DIR=$(realpath -m "$1")
PORT=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CONF=$DIR/ceph.conf
ADMIN=$DIR/ceph.client.admin.keyring
OSDS=3
WAIT=120

# Every CLI call names our conf and admin key explicitly: never /etc/ceph.
ceph() { command ceph -c "$CONF" -k "$ADMIN" "$@"; }
step() { echo "manual-bootstrap: $*" >&2; }

step "conf for a new fsid in $DIR"
mkdir -p "$DIR"/{run,log,crash,mon,mgr/x,osd}
FSID=$(uuidgen)
"$PYTHON" - "$DIR" "$PORT" "$FSID" >"$CONF" <<'EOF'
import sys

from gnt_storage.deploy.cephconf import render_conf
from gnt_storage.deploy.local import Options, spec_for

root, port, fsid = sys.argv[1:]
sys.stdout.write(render_conf(spec_for(Options(dir=root, port=int(port)), fsid)))
EOF

step "mon. and client.admin keys, monmap"
ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$ADMIN" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$DIR/mon.keyring" --import-keyring "$ADMIN" >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$PORT,v1:127.0.0.1:$((PORT + 1))]" \
    "$DIR/monmap" >/dev/null

step "mkfs and start mon.a"
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring"
ceph-mon -c "$CONF" -i a

step "key for mgr.x, start it"
ceph auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$DIR/mgr/x/keyring"
ceph-mgr -c "$CONF" -i x

for _ in $(seq "$OSDS"); do
    UUID=$(uuidgen)
    KEY=$(ceph-authtool --gen-print-key)
    ID=$(echo "{\"cephx_secret\": \"$KEY\"}" | ceph osd new "$UUID" -i -)
    step "register, mkfs and start osd.$ID"
    mkdir -p "$DIR/osd/$ID"
    ceph-authtool --create-keyring "$DIR/osd/$ID/keyring" --name "osd.$ID" --add-key "$KEY" >/dev/null
    ceph-osd -c "$CONF" -i "$ID" --mkfs --osd-uuid "$UUID"
    ceph-osd -c "$CONF" -i "$ID"
done

step "pools rbd (32 PGs, rbd pool init) and device_health_metrics (1 PG)"
ceph osd pool create rbd 32
rbd -c "$CONF" -k "$ADMIN" pool init rbd
ceph osd pool create device_health_metrics 1
ceph osd pool application enable device_health_metrics mgr_devicehealth

step "client.ganeti key"
ceph auth get-or-create client.ganeti mon 'profile rbd' osd 'profile rbd pool=rbd' mgr 'profile rbd pool=rbd' \
    -o "$DIR/ceph.client.ganeti.keyring"

step "waiting for HEALTH_OK (mgr active, all OSDs up+in, all PGs active+clean)"
SETTLED='.health.status == "HEALTH_OK" and .mgrmap.available
    and .osdmap.num_osds > 0 and .osdmap.num_up_osds == .osdmap.num_osds and .osdmap.num_in_osds == .osdmap.num_osds
    and .pgmap.num_pgs > 0
    and ([.pgmap.pgs_by_state[] | select(.state_name == "active+clean") | .count] | add) == .pgmap.num_pgs'
until ceph status -f json 2>/dev/null | jq -e "$SETTLED" >/dev/null; do
    if [ "$SECONDS" -gt "$WAIT" ]; then
        echo "manual-bootstrap: no HEALTH_OK after ${WAIT} s" >&2
        ceph status >&2 || true
        exit 1
    fi
    sleep 0.1
done
step "HEALTH_OK after ${SECONDS} s"
