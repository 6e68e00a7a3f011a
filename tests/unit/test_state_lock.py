"""One bounded lock around the master's storage state: a second holder waits, then names the first."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ganeti_ceph.errors import UsageError
from gnt_storage import deploy
from gnt_storage.deploy import lifecycle, state_lock

HOLD = """
import sys, time
from gnt_storage.deploy import state_lock
with state_lock.held("init-distributed-storage", path=sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Another process (a real one: flock is per open file) holding the lock until its stdin closes."""
    path = str(tmp_path / ".lock")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        yield path, proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_holder_is_refused_in_one_line_naming_the_first(holder) -> None:
    path, proc = holder
    with pytest.raises(UsageError) as exc, state_lock.held("remove-distributed-storage", wait=0.5, path=path):
        pytest.fail("got the lock while another process held it")
    assert exc.value.message.startswith(f"the storage cluster is busy: init-distributed-storage (pid {proc.pid}) "
                                        f"holds {path}")
    assert "run remove-distributed-storage again once it has finished" in exc.value.message


def test_the_lock_is_free_again_once_its_holder_ends(holder) -> None:
    path, proc = holder
    proc.stdin.close()
    proc.wait(timeout=30)
    with state_lock.held("remove-distributed-storage", wait=30, path=path):
        pass


def test_every_hook_step_that_changes_the_cluster_waits_for_the_lock(holder, monkeypatch) -> None:
    """A hook running while an init holds the lock changes nothing and says who holds it."""
    path, _ = holder
    monkeypatch.setattr(state_lock, "PATH", path)
    monkeypatch.setattr(state_lock, "WAIT_S", 0.2)
    monkeypatch.setattr(state_lock, "POST_WAIT_S", 0.2)
    done: list[str] = []
    for step in ("offline", "stop_offline", "online", "maintenance", "forget"):
        monkeypatch.setattr(lifecycle, step, lambda *a, **k: done.append("ran"))
    monkeypatch.setattr(lifecycle, "find", lambda ganeti, name: name)
    monkeypatch.setattr("ganeti_ceph.ganeti.Ganeti", lambda: None)
    for call in (lambda: deploy.node_offline("n1", 5.0), lambda: deploy.node_stopped("n1"),
                 lambda: deploy.node_online("n1"),
                 lambda: deploy.node_maintenance("n1", True), lambda: deploy.forget_node("n1"),
                 lambda: deploy.remove_storage("g")):
        with pytest.raises(UsageError, match="init-distributed-storage"):
            call()
    assert done == []


def test_the_post_offline_hook_names_what_to_do_instead_of_a_rerun(holder, monkeypatch) -> None:
    """A post hook cannot be run again on its own: its refusal says what is left undone and how to do it."""
    path, _ = holder
    monkeypatch.setattr(state_lock, "PATH", path)
    monkeypatch.setattr(state_lock, "POST_WAIT_S", 0.2)
    monkeypatch.setattr(lifecycle, "find", lambda ganeti, name: name)
    monkeypatch.setattr("ganeti_ceph.ganeti.Ganeti", lambda: None)
    with pytest.raises(UsageError) as exc:
        deploy.node_stopped("n1")
    assert "n1 is offline but its Ceph daemons were not stopped" in exc.value.message
    assert "again" not in exc.value.message
