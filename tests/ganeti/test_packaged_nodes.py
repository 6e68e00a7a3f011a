"""The bed's nodes run the package, not the checkout (testbed.shared installs `make deb`'s .deb by dpkg).

Each node's /usr, /etc, /var/lib/dpkg, /var/lib/systemd, /var/log and
/var/cache are overlays whose upper dirs hold everything the node wrote
(testbed.nodefs): there the tests look for checkout paths, and against the
host's own files they check that a purge leaves a node as it was. No systemd
runs in a node: the maintainer scripts enable the units and start none
(whether the units start is tests/packaging's systemd-analyze check).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator

from ganeti_ceph.config import Config
from testbed import netns, nodefs, shared
from testbed.ganeti import DOMAIN, DPKG, PROVIDER, Testbed
from tests.conftest import REPO
from tests.ganeti import checks

PACKAGE = "ganeti-ceph"
CHECKOUT_MARKS = (REPO, "/.venv/")
# Where Ganeti 3.0 looks for an ExtStorage provider, in order: only the package's rbd may be found.
SEARCH_PATH = ("/srv/ganeti/extstorage", "/usr/local/lib/ganeti/extstorage", "/usr/lib/ganeti/extstorage",
               "/usr/share/ganeti/extstorage")
# What dpkg itself keeps about its runs, not what the package leaves: logs, backups, locks, trigger state,
# man-db's index (rebuilt by its trigger); /var/lib/dpkg/status is compared as dpkg-query reads it.
BOOKKEEPING = ("/var/log/dpkg.log", "/var/lib/dpkg/status", "/var/lib/dpkg/status-old", "/var/lib/dpkg/diversions-old",
               "/var/lib/dpkg/lock", "/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/triggers/", "/var/cache/man/",
               "/var/lib/dpkg/available")


def upstream_version(deb: str) -> str:
    return netns.sh(["dpkg-deb", "-f", deb, "Version"]).stdout.strip().rsplit("-", 1)[0]


def test_nodes_got_the_package(testbed: Testbed) -> None:
    n = shared.debs()[0]
    want = netns.sh(["dpkg-deb", "-f", n, "Version"]).stdout.strip()
    assert testbed.provider == PROVIDER["deb:"]
    for i in range(len(testbed.nodes)):
        assert testbed.run(i, ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", PACKAGE]).stdout == \
            f"{want} ii "
        # gnt-storage on a node's PATH is ours, at the package's version; Ganeti's is diverted, still there.
        assert testbed.run(i, ["sh", "-c", "command -v gnt-storage"]).stdout.strip() == testbed.gnt_storage
        assert testbed.run(i, ["gnt-storage", "--version"]).stdout.split()[-1] == upstream_version(n)
        assert testbed.run(i, ["test", "-x", "/usr/sbin/gnt-storage.ganeti"], check=False).returncode == 0
        found = [d for d in SEARCH_PATH if testbed.run(i, ["test", "-e", f"{d}/rbd"], check=False).returncode == 0]
        assert found == ["/usr/share/ganeti/extstorage"], "Ganeti must find the packaged provider first"
        owner = testbed.run(i, ["dpkg-query", "-S", f"{testbed.provider}/create"]).stdout
        assert owner.startswith(f"{PACKAGE}: "), owner
        # The bed's config survived the install (a conffile: dpkg kept the node's own, --force-confold).
        assert f"node: {testbed.nodes[i].name}" in testbed.run(i, ["cat", "/etc/ganeti/ceph.yaml"]).stdout


def test_no_checkout_path_on_a_node(testbed: Testbed) -> None:
    """Nothing the nodes wrote (provider, hooks, config, units, dpkg's database) names the checkout or a venv."""
    for node in testbed.nodes:
        uppers = [node.path(f"{sub}.upper") for sub in node.overlays]
        res = subprocess.run(["grep", "-rlIF", *(a for m in CHECKOUT_MARKS for a in ("-e", m)), *uppers],
                             capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 1, f"{node.short}: checkout paths in {res.stdout}{res.stderr}"


def test_ganeti_runs_the_packaged_provider(testbed: Testbed, ceph_admin: Config) -> None:
    inst = checks.Inst(f"pkgd{time.monotonic_ns() % 10**6}.{DOMAIN}", "kernelspace", "fake")
    checks.add(testbed, ceph_admin, inst)  # create, attach and start through /usr/share/ganeti/extstorage/rbd
    try:
        logs = testbed.run(0, ["ls", "/var/log/ganeti/extstorage"]).stdout.split()
        assert any("create" in name and "rbd" in name for name in logs), logs
    finally:
        checks.remove(testbed, ceph_admin, inst)


# -- install, upgrade and purge on a fresh node ---------------------------------------------------

@contextlib.contextmanager
def spare_node(tb: Testbed) -> Iterator[tuple[nodefs.Node, list[str]]]:
    """A packaged node that joins no cluster: its overlays and namespaces only; the nsenter prefix."""
    node = nodefs.Node(len(tb.nodes), f"spare.{DOMAIN}", "", os.path.join(tb.workdir, "spare"), packaged=True)
    nodefs.prepare(node)
    holder = netns.spawn(node.dir, node.path("holder.log"))
    try:
        netns.drop_foreign_mounts(holder)
        netns.sh([*holder.enter(), "sh", "-ec", nodefs.mount_script(node)])
        yield node, holder.enter()
    finally:
        netns.kill(holder)


def _digest(path: str) -> str:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "-> " + os.readlink(path)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return "whiteout"
    with open(path, "rb") as fh:
        return f"{stat.S_IMODE(st.st_mode):o} " + hashlib.sha256(fh.read()).hexdigest()


def changes(node: nodefs.Node) -> dict[str, str]:
    """What the node has that differs from the host: each non-directory in its upper dirs whose content is not
    the host's file, with its digest (dpkg's bookkeeping left out)."""
    found = {}
    for sub, target in node.overlays.items():
        upper = node.path(f"{sub}.upper")
        for top, _dirs, files in os.walk(upper):
            for name in files:
                path = os.path.join(top, name)
                where = os.path.join(target, os.path.relpath(path, upper))
                got = _digest(path)
                if where.startswith(BOOKKEEPING) or (os.path.lexists(where) and _digest(where) == got):
                    continue
                found[where] = got
    return found


def test_install_upgrade_purge_on_a_fresh_node(testbed: Testbed) -> None:
    n, n1 = shared.debs()
    with spare_node(testbed) as (node, enter):
        def run(*argv: str) -> str:
            return netns.sh([*enter, *argv], timeout=300).stdout

        before, packages = changes(node), run("dpkg-query", "-W")
        run(*DPKG, "-i", n)
        assert run("gnt-storage", "--version").split()[-1] == upstream_version(n)
        assert f"{PROVIDER['deb:']}/ganeti-ceph-rbd" in changes(node)  # what `changes` sees: the package's files
        run(*DPKG, "-i", n1)  # the upgrade to N+1
        assert run("dpkg-query", "-W", "-f", "${Version}", PACKAGE) == netns.sh(["dpkg-deb", "-f", n1,
                                                                               "Version"]).stdout.strip()
        assert run("gnt-storage", "--version").split()[-1] == upstream_version(n1)
        assert "ganeti-ceph" in run("dpkg-divert", "--list", "/usr/sbin/gnt-storage")
        run(*DPKG, "--purge", PACKAGE)
        assert run("dpkg-query", "-W") == packages
        assert run("dpkg-divert", "--list", "/usr/sbin/gnt-storage") == ""
        assert changes(node) == before, "the purge left the node changed"
    # The host's own / never saw any of it.
    assert subprocess.run(["dpkg-query", "-W", PACKAGE], capture_output=True, timeout=60,
                          check=False).returncode != 0
    assert not os.path.exists("/usr/share/ganeti/extstorage/rbd")

