"""Agent workers as real processes, without Ceph: calls that fail on their config need no cluster."""

import signal
import socket
import subprocess
import time

from extstorage.agent_worker import MODULE, Worker
from extstorage.client import decode_answer, encode_request, frame
from ganeti_ceph.procs import boot_argv


def test_a_worker_serves_call_after_call(tmp_path) -> None:
    """Back-to-back calls on one worker each get their answer (one line, the config's error), and
    the worker's guard, which watches each call's bound, never trips on the idle moments between."""
    env = {"GANETI_CEPH_CONFIG": str(tmp_path / "missing.yaml"), "VOL_NAME": "v"}
    worker = Worker()
    try:
        for _ in range(200):
            code, out, err = decode_answer(worker.call(encode_request("verify", env), time.monotonic() + 30))
            assert code != 0 and out == "" and err.startswith("rbd verify: config file ") and err.count("\n") == 1
        assert worker.proc.poll() is None
    finally:
        worker.kill()


def test_a_worker_whose_agent_is_already_gone_runs_nothing(tmp_path) -> None:
    """A worker told of an agent that is not its parent (the agent died while it started) kills
    itself before it reads the call waiting on its socket."""
    mine, theirs = socket.socketpair()
    with mine:
        proc = subprocess.Popen(boot_argv(MODULE, str(theirs.fileno()), "1"), pass_fds=(theirs.fileno(),),
                                start_new_session=True)
        theirs.close()
        mine.sendall(frame(encode_request("verify", {"GANETI_CEPH_CONFIG": str(tmp_path / "missing.yaml")})))
        try:
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            proc.kill()
            proc.wait()
        mine.settimeout(5)
        try:
            answer = mine.recv(1)
        except ConnectionResetError:  # killed with the call unread
            answer = b""
        assert answer == b"", "the worker answered a call after its agent was gone"
