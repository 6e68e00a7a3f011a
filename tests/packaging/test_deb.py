"""The Debian package, as dpkg and an admin see it.

`make deb`'s own builder (packaging/build_deb.py) makes version N and N+1
(Debian revisions 1 and 2) once per content of the sources: they are cached
under build/deb/test-<hash>/, so a re-run only checks. The checks read the
.deb with dpkg-deb, run lintian (its tags are printed; only errors not
listed in LINTIAN_ACCEPTED fail), and install, upgrade and purge the package
with the real dpkg in a Debian bookworm chroot (tests/packaging/chroot.py),
never on this host's /. The chroot has no systemd running: the units are
checked with `systemd-analyze verify` against the installed chroot, and the
agent is started there by its unit's ExecStart line, not by systemd.

SLOW, the first run on a machine only: the `base_root` fixture builds the
chroot with every runtime dependency (debootstrap and apt over the network,
1.5 to 3.5 minutes here) and caches it under /var/cache/ganeti-ceph-test/.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extstorage import install
from ganeti_ceph import config, runner
from testbed import deb
from tests.conftest import REPO
from tests.packaging import chroot

TOOLS = ("dpkg-buildpackage", "dh", "dh_python3", "pandoc", "dpkg-deb", "debootstrap", "systemd-analyze")
MISSING = [t for t in TOOLS if not shutil.which(t, path=chroot.ENV["PATH"])]
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"this machine lacks {', '.join(MISSING)} (scripts/install-deps "
                                             "installs them)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="dpkg in a chroot needs root (chroot, mount)"),
    pytest.mark.timeout(2400),  # the first run on a machine builds the chroot (debootstrap + dependencies)
]

PYTHON = deb.PYTHON
DIST = "/usr/lib/python3/dist-packages"
PROVIDER = "/usr/share/ganeti/extstorage/rbd"
MODULES = ("ganeti_ceph", "extstorage", "hooks", "gnt_storage", "data_collector")
TEST_ONLY = ("pytest", "testinfra", "hypothesis")
TEST_EXTRAS = "systemd, logrotate"  # in the chroot only: unit files to verify against, a logrotate to run
CONFFILES = {"/etc/ganeti/ceph.yaml", "/etc/logrotate.d/ganeti-ceph", "/etc/ganeti/hooks/ganeti-ceph-hook",
             "/etc/ganeti/hooks/cluster-verify-post.d/60-ganeti-ceph-health"}
# Errors lintian reports that are not the package's fault, with why.
LINTIAN_ACCEPTED = {
    "bogus-mail-host": "the project has no mail address of its own yet (Maintainer in debian/control)",
    "bogus-mail-host-in-debian-changelog": "the same address, in the generated changelog",
}


_builder = deb.builder


@pytest.fixture(scope="module")
def debs() -> tuple[str, str]:
    """Version N and N+1, built by `make deb`'s code, cached by the hash of what it builds from (testbed.deb:
    the Ganeti test bed's nodes install the same files)."""
    return deb.built()


@pytest.fixture(scope="module")
def tree(debs: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """Version N unpacked (data and control), as files to read."""
    root = str(tmp_path_factory.mktemp("deb"))
    chroot.host("dpkg-deb", "-x", debs[0], root)
    chroot.host("dpkg-deb", "-e", debs[0], os.path.join(root, "DEBIAN"))
    return root


def read(path: str) -> str:
    return Path(path).read_text()


def field(deb: str, name: str) -> str:
    return chroot.host("dpkg-deb", "-f", deb, name).stdout.strip()


def test_version_is_setup_py_s(debs: tuple[str, str]) -> None:
    ver = _builder().version(REPO)
    assert [field(d, "Version") for d in debs] == [f"{ver}-1", f"{ver}-2"]
    assert field(debs[0], "Architecture") == "all"


def test_depends_are_debian_packages_and_no_test_tool(debs: tuple[str, str]) -> None:
    depends = field(debs[0], "Depends")
    names = {re.split(r"[\s:(]", d.strip())[0] for d in depends.split(",")}
    assert {"python3-rados", "python3-rbd", "python3-yaml", "python3-paramiko", "ceph-common"} <= names
    assert not [n for n in names if any(t in n for t in TEST_ONLY)], depends
    # every name resolves in Debian: proven by apt in the chroot (test_install_upgrade_purge)


def test_contents(tree: str) -> None:
    def has(path: str) -> bool:
        return os.path.lexists(tree + path)

    assert all(has(f"{DIST}/{m}/__init__.py") for m in MODULES)
    assert not has("/usr/lib/python3.11"), "modules must land in the version-independent dist-packages"
    for action in install.ACTIONS:
        assert os.readlink(f"{tree}{PROVIDER}/{action}") == install.SCRIPT
    assert has(f"{PROVIDER}/parameters.list")
    for hpath, phase in install.HOOKS:
        link = f"/etc/ganeti/hooks/{hpath}-{phase}.d/{install.HOOK_NAME}"
        target = os.path.join(os.path.dirname(link), os.readlink(tree + link))  # dh_link makes it relative
        assert os.path.normpath(target) == f"/etc/ganeti/hooks/{install.HOOK_SCRIPT}"
    assert os.path.isdir(tree + install.LOG_DIR)
    for unit in ("ganeti-ceph-agent", "ganeti-ceph-mond"):
        assert has(f"/lib/systemd/system/{unit}.service")
    assert has("/etc/logrotate.d/ganeti-ceph")
    assert set(read(f"{tree}/DEBIAN/conffiles").split()) == CONFFILES


def test_every_command_has_a_man_page(tree: str) -> None:
    entry_points = read(f"{tree}{DIST}/ganeti_ceph-{_builder().version(REPO)}.egg-info/entry_points.txt")
    commands = re.findall(r"^([\w-]+) = ", entry_points, re.M)
    assert "gnt-storage" in commands and "ganeti-ceph-agent" in commands
    for cmd in commands:
        where = "/usr/sbin" if cmd == "gnt-storage" else "/usr/bin"  # gnt-storage stands in for Ganeti's
        assert os.access(f"{tree}{where}/{cmd}", os.X_OK), cmd
        page = "gnt-storage-ceph" if cmd == "gnt-storage" else cmd  # Ganeti's package has gnt-storage(8)
        path = f"{tree}/usr/share/man/man8/{page}.8.gz"
        assert os.path.exists(path), f"no man page for {cmd}"
        if shutil.which("man"):  # it renders: pandoc made a real man page of the doc source
            text = re.sub(".\x08", "", chroot.host("man", "-l", "-Tutf8", path).stdout)
            assert "NAME" in text and "SYNOPSIS" in text and cmd in text, cmd


def test_no_build_or_checkout_path_in_any_file(tree: str) -> None:
    """Nothing the package installs may name where it was built: the checkout, a venv, pyenv, /work."""
    banned = [REPO, "/.venv", "/work/", "build/deb", ".pyenv", "/tmp/"]
    found = []
    for top, _, files in os.walk(tree):
        for name in files:
            path = os.path.join(top, name)
            data = os.readlink(path) if os.path.islink(path) else Path(path).read_bytes().decode("latin-1")
            found += [f"{os.path.relpath(path, tree)}: {b}" for b in banned if b in data]
    assert not found


def test_generated_scripts_run_the_system_python(tree: str) -> None:
    """Made by extstorage/install.py's generator, for /usr/bin/python3 and Debian's dist-packages only."""
    assert read(f"{tree}{PROVIDER}/{install.SCRIPT}") == install.script_text(PYTHON, [DIST])
    hook = read(f"{tree}/etc/ganeti/hooks/{install.HOOK_SCRIPT}")
    assert hook == install.script_text(PYTHON, [DIST], "hooks.main", "entry")


def test_example_config_is_readable_and_holds_no_key(tree: str) -> None:
    path = f"{tree}{config.DEFAULT_PATH}"
    cfg = config.load(path)
    assert (cfg.conf, cfg.client_id) == ("/etc/ceph/ceph.conf", "ganeti")
    text = read(path)
    assert all(k.name in text for k in config.KEYS)  # every key explained
    assert not re.search(r"^\s*key\s*[:=]|AQ[A-Za-z0-9+/]{30,}={0,2}", text, re.M), "a Ceph key in the example"


def test_units(tree: str) -> None:
    agent = read(f"{tree}/lib/systemd/system/ganeti-ceph-agent.service")
    assert "KillMode=process" in agent  # a restart must not kill the rbd-nbd/rbd-fuse daemons it started
    assert "ExecStart=/usr/bin/python3 -I -m extstorage.agent run --log " in agent
    mond = read(f"{tree}/lib/systemd/system/ganeti-ceph-mond.service")
    assert "ExecStart=/usr/bin/python3 -I -m data_collector.daemon run --log " in mond
    rotate = read(f"{tree}/etc/logrotate.d/ganeti-ceph")
    for log in (re.search(r"--log (\S+)", unit).group(1) for unit in (agent, mond)):
        assert log.startswith("/var/log/ganeti/ceph/") and "/var/log/ganeti/ceph/*.log" in rotate
    assert "--signal=HUP" in rotate and "ganeti-ceph-agent.service ganeti-ceph-mond.service" in rotate


def test_alert_rules_shipped(tree: str) -> None:
    shipped = f"{tree}/usr/share/ganeti-ceph/prometheus/ganeti-ceph.rules.yml"
    assert read(shipped) == read(os.path.join(REPO, "data_collector", "alerts", "ganeti-ceph.rules.yml"))
    if shutil.which("promtool", path=chroot.ENV["PATH"]):
        chroot.host("promtool", "check", "rules", shipped)


def test_lintian(debs: tuple[str, str]) -> None:
    if not shutil.which("lintian", path=chroot.ENV["PATH"]):
        pytest.skip("this machine lacks lintian (scripts/install-deps installs it)")
    res = chroot.host("lintian", "--pedantic", "--info", debs[0], timeout=600, check=False)
    tags = [line for line in res.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    print("lintian:\n" + "\n".join(tags))  # reported, not judged: warnings and pedantic tags
    errors = [t for t in tags if t.startswith("E: ") and t.split()[2] not in LINTIAN_ACCEPTED]
    assert not errors


# -- the real dpkg, in a chroot ----------------------------------------------------------------

@pytest.fixture(scope="module")
def base_root(debs: tuple[str, str]) -> str:
    """SLOW the first time on a machine: debootstrap, then the package's Depends from Debian."""
    missing = chroot.missing_tools()
    if missing:
        pytest.skip(f"this machine lacks {', '.join(missing)}")
    return chroot.with_depends(f"{field(debs[0], 'Depends')}, {TEST_EXTRAS}")


@pytest.fixture
def root(base_root: str, tmp_path: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh writable chroot over the cached one; the cache never changes."""
    with chroot.overlay(base_root, str(tmp_path)) as merged:
        yield merged


def copy_in(root: str, deb: str) -> str:
    shutil.copy(deb, os.path.join(root, "tmp"))
    return "/tmp/" + os.path.basename(deb)


def dpkg_status(root: str) -> str:
    res = chroot.run(root, "dpkg-query", "-W", "-f", "${Status} ${Version}", "ganeti-ceph", check=False)
    return res.stdout.strip() if res.returncode == 0 else "not known"


def test_install_upgrade_purge(root: str, debs: tuple[str, str]) -> None:
    n, n1 = (copy_in(root, d) for d in debs)
    ganeti_gnt_storage = os.readlink(f"{root}/usr/sbin/gnt-storage")
    os.makedirs(f"{root}/var/lib/ganeti-ceph")
    with open(f"{root}/var/lib/ganeti-ceph/storage.json", "w") as fh:
        fh.write("{}\n")  # the storage group's identity: never the package's to touch

    chroot.run(root, "dpkg", "-i", n)
    assert dpkg_status(root).startswith("install ok installed") and dpkg_status(root).endswith("-1")
    # our gnt-storage in /usr/sbin (first on root's PATH), Ganeti's diverted beside it
    assert "diversion of /usr/sbin/gnt-storage to /usr/sbin/gnt-storage.ganeti by ganeti-ceph" in chroot.run(
        root, "dpkg-divert", "--list", "/usr/sbin/gnt-storage").stdout
    assert os.readlink(f"{root}/usr/sbin/gnt-storage.ganeti") == ganeti_gnt_storage
    # the system Python alone runs every command and the provider's code (nothing else is on its path)
    for cmd in ("gnt-storage", "ganeti-ceph-agent", "ganeti-ceph-mond", "ganeti-ceph-setup", "ganeti-ceph-collector",
                "ganeti-ceph-verify-hook"):
        res = chroot.run(root, cmd, "--help")
        assert "usage:" in res.stdout, cmd
    ver = _builder().version(REPO)
    assert chroot.run(root, "gnt-storage", "--version").stdout.split()[-1] == ver  # the package's version
    res = chroot.run(root, PYTHON, "-IS", "-c", f"import sys; sys.path[:0] = [{DIST!r}]; "
                     "import extstorage.provider, hooks.main, data_collector.daemon; print(extstorage.__file__)")
    assert res.stdout.startswith(DIST)
    # the units, against the installed tree (binaries present, targets from the chroot's systemd)
    for unit in ("ganeti-ceph-agent.service", "ganeti-ceph-mond.service"):
        chroot.host("systemd-analyze", "verify", f"--root={root}", "--man=no", f"/lib/systemd/system/{unit}")
    assert os.path.islink(f"{root}/etc/systemd/system/multi-user.target.wants/ganeti-ceph-agent.service")
    # logrotate: our logs next to Ganeti's own rule, no duplicate entry, rotated
    os.makedirs(f"{root}/var/log/ganeti/ceph", exist_ok=True)
    with open(f"{root}/var/log/ganeti/ceph/agent.log", "w") as fh:
        fh.write("a line\n")
    chroot.run(root, "logrotate", "--force", "--state", "/tmp/logrotate.state", "/etc/logrotate.conf")
    assert os.path.exists(f"{root}/var/log/ganeti/ceph/agent.log.1")

    # upgrade to N+1: the admin's config (as init-distributed-storage writes it) stays
    with open(f"{root}/etc/ganeti/ceph.yaml", "a") as fh:
        fh.write("# edited by the admin\n")
    chroot.run(root, "dpkg", "-i", "--force-confdef", "--force-confold", n1)
    assert dpkg_status(root).endswith("-2")
    assert read(f"{root}/etc/ganeti/ceph.yaml").endswith("# edited by the admin\n")
    assert os.path.exists(f"{root}/usr/sbin/gnt-storage.ganeti")

    # purge: everything of ours gone, Ganeti's gnt-storage back, the storage state kept
    chroot.run(root, "dpkg", "--purge", "ganeti-ceph")
    assert dpkg_status(root) == "not known" or "not-installed" in dpkg_status(root)
    for gone in (PROVIDER, f"{DIST}/ganeti_ceph", "/etc/ganeti/ceph.yaml", "/etc/ganeti/hooks/ganeti-ceph-hook",
                 "/var/log/ganeti/ceph", "/lib/systemd/system/ganeti-ceph-agent.service",
                 "/usr/sbin/gnt-storage.ganeti"):
        assert not os.path.lexists(root + gone), gone
    assert os.readlink(f"{root}/usr/sbin/gnt-storage") == ganeti_gnt_storage
    assert not chroot.run(root, "dpkg-divert", "--list", "/usr/sbin/gnt-storage").stdout.strip()
    assert read(f"{root}/var/lib/ganeti-ceph/storage.json") == "{}\n"


def test_refuses_another_rbd_provider(root: str, debs: tuple[str, str]) -> None:
    """GRNET's provider (or any other) named rbd in the packaged search path is never replaced."""
    n = copy_in(root, debs[0])
    other = f"{root}{PROVIDER}"
    os.makedirs(other)
    with open(f"{other}/create", "w") as fh:
        fh.write("#!/bin/sh\n# another provider\n")
    res = chroot.run(root, "dpkg", "-i", n, check=False)
    assert res.returncode != 0
    assert "is another ExtStorage provider named rbd" in res.stderr and "refusing to replace it" in res.stderr
    assert os.listdir(other) == ["create"] and read(f"{other}/create").endswith("# another provider\n")
    assert "ok installed" not in dpkg_status(root)
    assert not chroot.run(root, "dpkg-divert", "--list", "/usr/sbin/gnt-storage").stdout.strip()


def test_over_a_checkout_install(root: str, debs: tuple[str, str]) -> None:
    """What `ganeti-ceph-setup install` left from a checkout: its provider, earlier in Ganeti's search
    path, is warned of; its hook scripts are replaced by the package's (not kept as an admin's conffiles)."""
    n = copy_in(root, debs[0])
    checkout = ("/srv/checkout/.venv/bin/python", ["/srv/checkout"])
    os.makedirs(f"{root}/usr/local/lib/ganeti/extstorage/rbd")
    os.makedirs(f"{root}/etc/ganeti/hooks/cluster-verify-post.d")
    hook, verify = (f"/etc/ganeti/hooks/{install.HOOK_SCRIPT}",
                    f"/etc/ganeti/hooks/cluster-verify-post.d/{install.VERIFY_HOOK}")
    Path(root + hook).write_text(install.script_text(*checkout, "hooks.main", "entry"))
    Path(root + verify).write_text(install.script_text(*checkout, "data_collector.verify_hook", "entry"))
    res = chroot.run(root, "dpkg", "-i", n)
    assert "warning: Ganeti will run /usr/local/lib/ganeti/extstorage/rbd" in res.stderr
    assert read(root + hook) == install.script_text(PYTHON, [DIST], "hooks.main", "entry")
    assert read(root + verify) == install.script_text(PYTHON, [DIST], "data_collector.verify_hook", "entry",
                                                      missing_ok=True)
    assert "/srv/checkout" in read(root + hook + ".dpkg-old")  # moved aside, not run by Ganeti (a dot)


def test_agent_runs_as_its_unit_starts_it(root: str, debs: tuple[str, str]) -> None:
    """The unit's ExecStart, run in the chroot: the agent serves from the system Python, `status` sees
    it, and SIGHUP (logrotate's postrotate) makes it reopen its log."""
    chroot.run(root, "dpkg", "-i", copy_in(root, debs[0]))
    unit = read(f"{root}/lib/systemd/system/ganeti-ceph-agent.service")
    argv = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))
    log = root + argv[argv.index("--log") + 1]
    agent = subprocess.Popen(["chroot", root, *argv], env=chroot.ENV, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert runner.until(time.monotonic() + 30, lambda: os.path.exists(f"{root}/run/ganeti-ceph/agent.sock")
                            or agent.poll() is not None) and agent.poll() is None, agent.stderr.read().decode()
        assert "running, pid" in chroot.run(root, "ganeti-ceph-agent", "status").stdout
        assert f"code from {DIST}" in read(log)
        os.rename(log, log + ".1")
        agent.send_signal(signal.SIGHUP)
        assert runner.until(time.monotonic() + 30, lambda: os.path.exists(log)), "the log was not reopened"
        assert agent.poll() is None
    finally:
        agent.terminate()
        agent.wait(timeout=60)
    assert "not running" in chroot.run(root, "ganeti-ceph-agent", "status", check=False).stdout
