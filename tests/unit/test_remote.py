"""SSH failures are SshError (exit 6), not "cluster unreachable": the node, not Ceph, is the problem."""

from __future__ import annotations

import socket

import pytest

from ganeti_ceph.errors import CephUnavailable, SshError
from gnt_storage.deploy.remote import HostKeyMismatch, Node, SshSettings, _quiet_paramiko


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_node_is_an_ssh_error() -> None:
    node = Node("node2.example", "127.0.0.1", SshSettings("cluster.example", port=_closed_port(), timeout=2))
    with pytest.raises(SshError) as err:
        node.connect(None, None)
    assert not isinstance(err.value, CephUnavailable) and err.value.exit_code == 6
    assert err.value.message.startswith("node node2.example (127.0.0.1) is unreachable over SSH (")
    assert "gnt-node modify --offline yes node2.example" in err.value.message


def test_a_node_that_is_no_ssh_server_is_an_ssh_error() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        node = Node("n1", "127.0.0.1", SshSettings("c", port=server.getsockname()[1], timeout=0.5))
        _quiet_paramiko()  # as load_host_keys does before any connect
        with pytest.raises(SshError, match=r"^node n1 \(127\.0\.0\.1\): SSH failed"):
            node.connect(pytest.importorskip("paramiko").HostKeys(), None)


def test_a_wrong_host_key_stays_bad_input() -> None:
    assert issubclass(HostKeyMismatch, SshError) and HostKeyMismatch.exit_code == 2
