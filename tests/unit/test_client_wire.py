import os
import socket
import threading
import time

import pytest

from extstorage.client import (
    HEADER,
    MAX_FRAME,
    WireError,
    ask_agent,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
    frame,
    recv_frame,
)


def test_request_carries_only_the_call() -> None:
    env = {"VOL_NAME": "v.ext.disk0", "EXTP_ACCESS": "userspace", "GANETI_CEPH_CONFIG": "/c.yaml",
           "PATH": "/evil", "PYTHONPATH": "/evil", "VOL_METADATA": "a=b=c"}
    action, got = decode_request(encode_request("attach", env))
    assert action == "attach"
    assert got == {"VOL_NAME": "v.ext.disk0", "EXTP_ACCESS": "userspace", "GANETI_CEPH_CONFIG": "/c.yaml",
                   "VOL_METADATA": "a=b=c"}


def test_answer_round_trip() -> None:
    assert decode_answer(encode_answer(0, "\nkvm:rbd:rbd/v\n", "rbd attach: ok\n")) == (
        0, "\nkvm:rbd:rbd/v\n", "rbd attach: ok\n")
    assert decode_answer(encode_answer(5, "", "a\0b")) == (5, "", "ab")


def test_frames_round_trip_over_a_real_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frame(b"attach\0VOL_NAME=v") + frame(b""))
        assert recv_frame(b, time.monotonic() + 5) == b"attach\0VOL_NAME=v"
        assert recv_frame(b, time.monotonic() + 5) == b""


def test_oversized_frames_are_refused_both_ways() -> None:
    with pytest.raises(WireError, match="limit"):
        frame(b"x" * (MAX_FRAME + 1))
    a, b = socket.socketpair()
    with a, b:
        a.sendall((MAX_FRAME + 1).to_bytes(HEADER, "big"))  # only the header: nothing is read beyond it
        with pytest.raises(WireError, match="limit"):
            recv_frame(b, time.monotonic() + 5)


def test_a_cut_short_or_late_frame_is_an_error() -> None:
    a, b = socket.socketpair()
    with b:
        a.sendall(frame(b"0\0out\0err")[:-3])
        a.close()
        with pytest.raises(WireError, match="closed"):
            recv_frame(b, time.monotonic() + 5)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frame(b"0\0out\0err")[:-3])  # and then silence
        bound = 0.3
        started = time.monotonic()
        with pytest.raises(WireError, match="in time"):
            recv_frame(b, started + bound)
        assert time.monotonic() - started < bound + 2  # ended within its configured bound


def test_no_listener_means_run_here_but_a_lost_agent_is_an_error(tmp_path) -> None:
    """Only a connect that fails proves the agent never saw the call (None: run in-process);
    an agent that took the request and closed without answering is an error, never a re-run."""
    path = str(tmp_path / "agent.sock")
    assert ask_agent(path, "remove", {"VOL_NAME": "v"}) is None  # no socket at all
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.close()
    assert ask_agent(path, "remove", {"VOL_NAME": "v"}) is None  # a socket nobody listens on: refused
    os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)

        def take_and_drop() -> None:
            conn, _ = server.accept()
            with conn:
                recv_frame(conn, time.monotonic() + 5)  # the call reached the agent, which then died

        th = threading.Thread(target=take_and_drop)
        th.start()
        with pytest.raises(WireError):
            ask_agent(path, "remove", {"VOL_NAME": "v"})
        th.join(5)
