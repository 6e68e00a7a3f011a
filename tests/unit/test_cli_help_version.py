"""gnt-storage --version and --help: one version everywhere, Ganeti's subcommands listed beside ours."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

import ganeti_ceph
from tests.conftest import REPO, gnt_storage

OURS = ("local-cluster", "init-distributed-storage", "options", "rbd-access")
GANETI = "/usr/sbin/gnt-storage"


def test_version_is_the_packages() -> None:
    """The one version: ganeti_ceph.__version__, which setup.py (and so the .deb) reads."""
    res = gnt_storage("--version")
    assert res.returncode == 0 and res.stdout == f"gnt-storage (ganeti-ceph) {ganeti_ceph.__version__}\n"
    built = subprocess.run(["/usr/bin/python3", "setup.py", "--version"], cwd=REPO, capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()[-1]
    assert built == ganeti_ceph.__version__


def test_help_lists_what_the_installed_ganeti_has(tmp_path) -> None:
    """Read from Ganeti's own --help: a command only this Ganeti has shows up too."""
    ganeti = tmp_path / "gnt-storage"
    listing = "Usage: x\\n\\nCommands:\\n diagnose - Diagnose\\n frob     - Frobnicate\\n"
    ganeti.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    ganeti.chmod(ganeti.stat().st_mode | stat.S_IEXEC)
    res = gnt_storage("--help", env={**os.environ, "GANETI_CEPH_GANETI_GNT_STORAGE": str(ganeti)})
    assert res.returncode == 0 and res.stderr == ""
    assert all(name in res.stdout for name in OURS)
    assert f"handed to {ganeti}" in res.stdout
    assert " diagnose - Diagnose\n frob     - Frobnicate\n" in res.stdout


@pytest.mark.skipif(not os.path.exists(GANETI), reason=f"Ganeti is not installed ({GANETI} missing)")
def test_help_lists_debians_ganeti_subcommands() -> None:
    res = gnt_storage("--help", env={k: v for k, v in os.environ.items() if k != "GANETI_CEPH_GANETI_GNT_STORAGE"})
    assert res.returncode == 0
    assert " diagnose - Diagnose all ExtStorage providers" in res.stdout
    assert " info     - Show info about ExtStorage providers" in res.stdout


def test_help_without_ganeti_says_so(tmp_path) -> None:
    res = gnt_storage("-h", env={**os.environ, "GANETI_CEPH_GANETI_GNT_STORAGE": str(tmp_path / "absent")})
    assert res.returncode == 0 and "Ganeti's gnt-storage is not installed" in res.stdout
