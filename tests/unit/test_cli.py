"""gnt-storage hands Ganeti's own subcommands to Ganeti, unchanged."""

from __future__ import annotations

import os
import stat

from tests.conftest import gnt_storage


def test_ganeti_subcommands_pass_through(tmp_path) -> None:
    ganeti = tmp_path / "gnt-storage"
    ganeti.write_text('#!/bin/sh\necho "ganeti got: $*"\nexit 7\n')
    ganeti.chmod(ganeti.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "GANETI_CEPH_GANETI_GNT_STORAGE": str(ganeti)}
    res = gnt_storage("diagnose", "--storage-type", "ext", env=env)
    assert res.stdout == "ganeti got: diagnose --storage-type ext\n"
    assert res.returncode == 7


def test_without_ganeti_says_so(tmp_path) -> None:
    env = {**os.environ, "GANETI_CEPH_GANETI_GNT_STORAGE": str(tmp_path / "absent")}
    res = gnt_storage("info", env=env)
    assert res.returncode == 1
    assert "Ganeti is not installed" in res.stderr and len(res.stderr.splitlines()) == 1


def test_usage_error_for_our_subcommand() -> None:
    res = gnt_storage("local-cluster", "bogus")
    assert res.returncode == 2 and "invalid choice" in res.stderr
