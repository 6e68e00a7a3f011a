"""A SIGHUP while a daemon starts (logrotate's postrotate, `systemctl reload`) must not end it: by its
default action it would, and systemd's Restart=on-failure counts that as a clean exit (review #10).
Real processes, real signals: each daemon's main runs until it refuses its arguments, then the
process signals itself; without the deferral at the top of main it dies of SIGHUP."""

from __future__ import annotations

import configparser
import subprocess
import sys

import pytest

from tests.conftest import REPO

CALLS = {
    "agent": "from extstorage import agent\ntry:\n    agent.main(['no-such-action'])\nexcept Exception:\n    pass\n",
    "mond": "from data_collector import daemon\ntry:\n    daemon.main(['run', '--interval', '-1'])\n"
            "except Exception:\n    pass\n",
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_sighup_before_serving_does_not_end_the_daemon(name: str) -> None:
    code = CALLS[name] + "import os, signal\nos.kill(os.getpid(), signal.SIGHUP)\nprint('alive')\n"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == "alive\n", (res.returncode, res.stderr[-2000:])


@pytest.mark.parametrize("unit", ["ganeti-ceph-agent", "ganeti-ceph-mond"])
def test_units_restart_a_daemon_ended_by_sighup(unit: str) -> None:
    """Before Python runs main (interpreter start, imports) only systemd can help."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(f"{REPO}/packaging/systemd/{unit}.service")
    assert parser["Service"]["Restart"] == "on-failure"
    assert "SIGHUP" in parser["Service"]["RestartForceExitStatus"].split()
