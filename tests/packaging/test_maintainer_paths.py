"""The package's less travelled paths, with the real dpkg in the bookworm chroot (tests/packaging/chroot.py):
`apt remove` without purge, an install that fails after the preinst ran, and logrotate with a daemon
started by hand. The debs, the cached chroot and its per-test overlay are test_deb.py's fixtures.
Like test_deb.py: no systemd runs in the chroot, so nothing here starts a unit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from extstorage import install
from ganeti_ceph import runner
from tests.packaging import chroot
from tests.packaging.test_deb import base_root, copy_in, debs, dpkg_status, pytestmark, read, root  # noqa: F401 (fixtures)

HOOKS_DIR = "/etc/ganeti/hooks"
HOOK = f"{HOOKS_DIR}/{install.HOOK_SCRIPT}"
VERIFY = f"{HOOKS_DIR}/cluster-verify-post.d/{install.VERIFY_HOOK}"
# Ganeti 3.0's own hooks runner (backend.HooksRunner, what noded runs), in the chroot: every hook path's
# result per script, as Ganeti records it (a dangling or missing script is skipped, a failing one fails).
RUN_HOOKS = """
import json, sys
sys.path.insert(0, "/usr/share/ganeti/default")
from ganeti import backend, constants
runner = backend.HooksRunner()
name = {constants.HKR_SKIP: "SKIP", constants.HKR_FAIL: "FAIL", constants.HKR_SUCCESS: "SUCCESS"}
print(json.dumps({f"{p}-{ph}": [(s, name[r], out) for s, r, out in runner.RunHooks(p, ph, {})]
                  for p, ph in json.loads(sys.argv[1])}))
"""


def ganeti_hook_results(tree: str) -> dict[str, list]:
    paths = [*install.HOOKS, ("cluster-verify", "post")]
    return json.loads(chroot.run(tree, "/usr/bin/python3", "-c", RUN_HOOKS, json.dumps(paths)).stdout)


def test_remove_without_purge_leaves_no_failing_hook(root: str, debs: tuple[str, str]) -> None:  # noqa: F811 (test_deb\'s fixtures)
    """`dpkg -r` keeps the hooks' conffiles: Ganeti's runner then meets no script of ours that fails,
    so gnt-cluster verify does not report the removed package until a purge (review #7)."""
    chroot.run(root, "dpkg", "-i", copy_in(root, debs[0]))
    before = ganeti_hook_results(root)
    assert [r for r in before["cluster-verify-post"] if r[0].endswith(install.VERIFY_HOOK)]  # it ran
    chroot.run(root, "dpkg", "-r", "ganeti-ceph")
    assert "config-files" in dpkg_status(root)
    assert os.path.exists(root + VERIFY) and os.path.exists(root + HOOK)  # kept: conffiles
    for hpath, phase in install.HOOKS:
        assert not os.path.lexists(f"{root}{HOOKS_DIR}/{hpath}-{phase}.d/{install.HOOK_NAME}")
    after = ganeti_hook_results(root)
    ours = [r for rs in after.values() for r in rs if "ganeti-ceph" in r[0]]
    assert ours == [["cluster-verify-post.d/" + install.VERIFY_HOOK, "SUCCESS", ""]], after
    chroot.run(root, "dpkg", "--purge", "ganeti-ceph")
    assert not os.path.lexists(root + VERIFY) and not os.path.lexists(root + HOOK)


def test_a_failed_install_puts_a_checkouts_hooks_back(root: str, debs: tuple[str, str]) -> None:  # noqa: F811 (test_deb\'s fixtures)
    """The preinst moved a checkout's hook scripts to *.dpkg-old, then the unpack failed (here a file
    another package owns): postrm abort-install moves them back, so they keep running (review #9)."""
    n = copy_in(root, debs[0])
    other = f"{root}/tmp/other"
    os.makedirs(f"{other}/DEBIAN")
    os.makedirs(f"{other}/usr/bin")
    Path(f"{other}/DEBIAN/control").write_text(
        "Package: other-agent\nVersion: 1\nArchitecture: all\nMaintainer: test <test@example.org>\n"
        "Description: owns a file ganeti-ceph ships\n")
    Path(f"{other}/usr/bin/ganeti-ceph-agent").write_text("#!/bin/sh\n")
    chroot.run(root, "dpkg-deb", "--build", "--root-owner-group", "/tmp/other", "/tmp/other.deb")
    chroot.run(root, "dpkg", "-i", "/tmp/other.deb")
    checkout = ("/srv/checkout/.venv/bin/python", ["/srv/checkout"])
    os.makedirs(f"{root}{HOOKS_DIR}/cluster-verify-post.d", exist_ok=True)
    texts = {HOOK: install.script_text(*checkout, "hooks.main", "entry"),
             VERIFY: install.script_text(*checkout, "data_collector.verify_hook", "entry")}
    for path, text in texts.items():
        Path(root + path).write_text(text)
    res = chroot.run(root, "dpkg", "-i", n, check=False)
    assert res.returncode != 0 and "trying to overwrite '/usr/bin/ganeti-ceph-agent'" in res.stderr, res.stderr
    assert "ok installed" not in dpkg_status(root)
    for path, text in texts.items():
        assert read(root + path) == text and not os.path.lexists(root + path + ".dpkg-old"), path
    assert not chroot.run(root, "dpkg-divert", "--list", "/usr/sbin/gnt-storage").stdout.strip()


def test_logrotate_signals_an_agent_started_by_hand(root: str, debs: tuple[str, str]) -> None:  # noqa: F811 (test_deb\'s fixtures)
    """`ganeti-ceph-agent start` logs to /var/log/ganeti/ceph/agent.log like the unit; after logrotate
    it writes to the new file, not to agent.log.1, which the next rotation compresses away (review #11)."""
    chroot.run(root, "dpkg", "-i", copy_in(root, debs[0]))
    log = f"{root}/var/log/ganeti/ceph/agent.log"
    chroot.run(root, "ganeti-ceph-agent", "start")
    try:
        assert runner.until(time.monotonic() + 30, lambda: "serving" in read(log)), read(log)
        chroot.run(root, "logrotate", "--force", "--state", "/tmp/logrotate.state", "/etc/logrotate.d/ganeti-ceph")
        assert os.path.exists(log + ".1")
        assert runner.until(time.monotonic() + 30, lambda: os.path.exists(log) and "log reopened on SIGHUP"
                            in read(log)), "the agent started by hand did not reopen its log"
        assert "running, pid" in chroot.run(root, "ganeti-ceph-agent", "status").stdout
    finally:
        chroot.run(root, "ganeti-ceph-agent", "stop")
    assert chroot.run(root, "ganeti-ceph-agent", "reload", check=False).returncode == 1  # none runs: one line

