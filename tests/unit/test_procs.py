"""procs.kill_group: the one SIGKILL of a supervised child's group."""

from __future__ import annotations

import os
import subprocess
import sys

from ganeti_ceph import procs


def test_kill_group_ends_the_child_and_what_it_started() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, time; "
                              "subprocess.Popen(['sleep', '60']); time.sleep(60)"], start_new_session=True)
    procs.kill_group(child)
    assert child.returncode == -9


def test_kill_group_leaves_a_reaped_child_alone(monkeypatch) -> None:
    """Once reaped, the child's pid (its group's id) may be another process's: no signal at all
    (was: killpg on it whatever)."""
    child = subprocess.Popen(["true"], start_new_session=True)
    child.wait(30)
    sent: list[int] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append(pgid))
    procs.kill_group(child)
    assert sent == []
