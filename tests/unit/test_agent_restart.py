"""An install restarts a running agent, so it never keeps running the old code (review I, R9)."""

from __future__ import annotations

import os

from extstorage import agent


def test_a_running_agent_is_restarted_and_none_is_not_started(tmp_path) -> None:
    sock, pidfile, log = str(tmp_path / "agent.sock"), str(tmp_path / "agent.pid"), str(tmp_path / "agent.log")
    assert agent.restart_if_running(sock, pidfile, log) is False
    assert not os.path.exists(pidfile)
    assert agent.start(sock, pidfile, log) == 0
    try:
        old = agent.running_pid(pidfile)
        assert old
        assert agent.restart_if_running(sock, pidfile, log) is True
        new = agent.running_pid(pidfile)
        assert new and new != old
    finally:
        agent.stop_agent(pidfile)
    assert agent.running_pid(pidfile) is None
