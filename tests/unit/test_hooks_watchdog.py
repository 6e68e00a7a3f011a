"""Every hook is bounded by timeouts.action: Ganeti runs hooks without a timeout.

The hook runs as Ganeti runs it (its own process, GANETI_* environment, the
hook directory in argv[0]) against a "monitor" that accepts connections and
never answers, with a connect timeout far above timeouts.action: only the
watchdog can end it in time. No Ceph cluster is involved.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from gnt_storage.deploy import cephconf
from hooks.env import this_node

ACTION = 2.0
SLACK = 10.0  # interpreter start-up and imports on a busy 2-core machine


def test_a_hook_past_timeouts_action_prints_one_line_and_fails(tmp_path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        conf = tmp_path / "ceph.conf"
        conf.write_text(f"[global]\n\tmon_host = v2:127.0.0.1:{port}\n")
        keyring = tmp_path / "ceph.client.ganeti.keyring"
        keyring.write_text(cephconf.keyring({"client.ganeti": (cephconf.new_key(), {})}))
        keyring.chmod(0o600)
        cfg = tmp_path / "ceph.yaml"
        cfg.write_text(f"conf: {conf}\nkeyring: {keyring}\nclient: ganeti\nmapper: fuse-loop\n"
                       f"timeouts: {{connect: 600, mon_op: 600, osd_op: 600, action: {ACTION}}}\n")
        me = this_node()
        env = {"GANETI_CEPH_CONFIG": str(cfg), "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
               "GANETI_HOOKS_PATH": "instance-start", "GANETI_HOOKS_PHASE": "pre", "GANETI_MASTER": me,
               "GANETI_INSTANCE_NAME": "i1", "GANETI_INSTANCE_PRIMARY": me, "GANETI_INSTANCE_DISK_COUNT": "1",
               "GANETI_INSTANCE_DISK0_DEV_TYPE": "ext", "GANETI_INSTANCE_DISK0_PROVIDER": "rbd",
               "GANETI_INSTANCE_DISK0_ID": "u1.ext.disk0", "GANETI_INSTANCE_DISK0_SIZE": "64"}
        hook = tmp_path / "instance-start-pre.d" / "50-ganeti-ceph"
        code = f"import sys; sys.argv[0] = {str(hook)!r}; from hooks.main import entry; entry()"
        started = time.monotonic()
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=ACTION + SLACK + 20)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert took < ACTION + SLACK, f"the hook ran {took:.1f} s, past its bound of {ACTION} s"
    assert res.returncode != 0  # a pre hook: Ganeti vetoes the start
    assert res.stderr.strip() == (f"ganeti-ceph hook instance-start-pre.d: did not finish within {ACTION:.0f} s "
                                  "(timeouts.action); giving up"), res.stderr
