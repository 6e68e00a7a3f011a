"""Ganeti's own gnt-storage, handed a subcommand by ours, names itself `gnt-storage` (review #18): the
package diverts it to /usr/sbin/gnt-storage.ganeti, and Ganeti takes its name from argv[0] (usage lines,
commands log, GNT_STORAGE_<CMD> option variables). Runs the Ganeti 3.0 installed here, under that name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gnt_storage import cli
from tests.conftest import REPO

GANETI = "/usr/share/ganeti/default/gnt-storage"


@pytest.mark.skipif(not os.path.exists(GANETI), reason=f"Ganeti's gnt-storage ({GANETI}) is not installed")
def test_ganetis_gnt_storage_runs_as_gnt_storage(tmp_path) -> None:
    diverted = tmp_path / "gnt-storage.ganeti"
    diverted.symlink_to(GANETI)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", cli.ENV_GANETI: str(diverted)}

    def ours(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from gnt_storage.cli import entry; entry()", *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=60)

    res = ours("diagnose", "--help")
    assert res.returncode == 0 and "gnt-storage diagnose" in res.stdout, res
    unknown = ours("no-such-command")
    assert unknown.returncode == 1 and "Usage: gnt-storage {command}" in unknown.stdout + unknown.stderr, unknown
    assert "gnt-storage.ganeti" not in res.stdout + res.stderr + unknown.stdout + unknown.stderr
