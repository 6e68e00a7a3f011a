"""The one subprocess runner: bounded, clean environment, one error line."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError, ToolFailed


def test_returns_stdout_of_a_success() -> None:
    assert runner.run(["sh", "-c", "echo hi"], "say hi", 10) == "hi\n"


def test_environment_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEPH_ARGS", "--id intruder")
    out = runner.run(["env"], "list the environment", 10)
    assert sorted(out.split()) == sorted(f"{k}={v}" for k, v in runner.clean_env().items())
    assert runner.clean_env(HOME="/root") == {"PATH": runner.PATH, "LC_ALL": "C", "HOME": "/root"}


def test_failure_is_one_line_with_the_tools_last_words() -> None:
    with pytest.raises(ToolFailed) as err:
        runner.run(["sh", "-c", "echo first >&2; echo last words >&2; exit 3"], "do a thing", 10)
    assert err.value.message == "do a thing: sh failed (exit 3): last words"
    assert err.value.kind == "failed" and isinstance(err.value, GanetiCephError)


def test_ok_codes_pass() -> None:
    assert runner.run(["sh", "-c", "echo x; exit 2"], "probe", 10, ok=(0, 2)) == "x\n"


def test_timeout_bounds_the_child() -> None:
    start = time.monotonic()
    with pytest.raises(ToolFailed) as err:
        runner.run(["sleep", "30"], "wait", 0.3)
    assert time.monotonic() - start < 5
    assert err.value.message == "wait: sleep did not finish within 0 s" and err.value.kind == "late"


def test_missing_tool() -> None:
    with pytest.raises(ToolFailed) as err:
        runner.run(["/nonexistent/tool"], "use it", 10)
    assert err.value.message == "use it: /nonexistent/tool is not installed" and err.value.kind == "missing"


def test_stdin_is_closed() -> None:
    assert runner.run(["cat"], "read stdin", 10) == ""


def test_leaves_daemon_runs_in_its_own_session() -> None:
    own = runner.run(["sh", "-c", "ps -o sid= -p $$"], "session", 10).strip()
    apart = runner.run(["sh", "-c", "ps -o sid= -p $$"], "session", 10, leaves_daemon=True).strip()
    assert own == str(os.getsid(0)) and apart != own


def test_succeeds_is_a_probe() -> None:
    assert runner.succeeds(["true"], 5) and not runner.succeeds(["false"], 5)
    assert not runner.succeeds(["/nonexistent/tool"], 5) and not runner.succeeds(["sleep", "5"], 0.2)


def test_until_returns_the_first_truthy_answer_or_the_last() -> None:
    answers = iter([0, 0, 7])
    assert runner.until(time.monotonic() + 5, lambda: next(answers), interval=0) == 7
    start = time.monotonic()
    assert runner.until(time.monotonic() + 0.1, lambda: None, interval=0.01) is None
    assert runner.until(time.monotonic() + 5, lambda: "HEALTH_OK", lambda line: line == "HEALTH_OK") == "HEALTH_OK"
    assert time.monotonic() - start < 2


def test_a_tool_that_cannot_start(tmp_path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o644)  # not executable
    with pytest.raises(ToolFailed) as err:
        runner.run([str(tool)], "use it", 10)
    assert err.value.message == f"use it: cannot run {tool} (Permission denied)" and err.value.kind == "failed"


def test_ganeti_commands_fail_in_one_ganeti_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from ganeti_ceph.errors import GanetiFailed
    from ganeti_ceph.ganeti import run_command

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GanetiFailed, match=r"^gnt-nothing not found: run this on the Ganeti master$"):
        run_command(["gnt-nothing", "list"], 5)
    with pytest.raises(GanetiFailed, match=r"^sleep 5 did not finish within 0 s; its Ganeti job may still run"):
        run_command(["sleep", "5"], 0.2)
    assert run_command(["sh", "-c", "echo $PATH; exit 3"], 5).stdout == f"/nonexistent:{runner.SYSTEM_PATH}\n"


def test_a_failed_tools_last_words_never_carry_a_key() -> None:
    """ceph-volume echoes the `ceph-authtool --add-key KEY` it runs: a failure's one line is redacted."""
    key = "AQBjv0tnAAAAABAAk2TWh4ZVkGxBvCXwhRXCXw=="
    res = subprocess.CompletedProcess([], 1, "", f"Running command: ceph-authtool k --add-key {key}\n")
    assert key not in runner.last_words(res) and "--add-key <key redacted by ganeti-ceph>" in runner.last_words(res)
