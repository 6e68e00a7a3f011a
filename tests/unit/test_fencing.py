"""Fencing, pure parts: a client address's IP, the blocklist entry's form, what counts as fenced."""

from __future__ import annotations

import pytest

from ganeti_ceph.errors import GanetiCephError
from ganeti_ceph.rbd.fencing import client_nonce, fence_entry, fenced, ip_of, release_client


def test_only_a_whole_ip_counts_as_fenced() -> None:
    assert fenced({"10.0.0.1:0/0"}, "10.0.0.1")
    assert not fenced({"10.0.0.1:0/5"}, "10.0.0.1")  # one client of the node is not the node
    assert not fenced({"10.0.0.1:0/0"}, "10.0.0.11")
    assert not fenced({":0/0"}, "")


def test_fence_entry_ipv4_and_ipv6() -> None:
    """Ceph writes a v6 entry as [addr]:0/0 (seen in `osd blocklist ls`); `addr:0/0` would not match."""
    assert fence_entry("198.18.2.11") == "198.18.2.11:0/0"
    assert fence_entry("2001:db8::1") == fence_entry("[2001:db8::1]") == "[2001:db8::1]:0/0"
    assert fenced({"[2001:db8::1]:0/0"}, "2001:db8::1") and not fenced({"2001:db8::1:0/0"}, "2001:db8::1")


def test_ip_of() -> None:
    assert ip_of("[v2:127.0.0.1:0/123,v1:127.0.0.1:0/123]") == "127.0.0.1"
    assert ip_of("v2:10.1.2.3:0/5") == "10.1.2.3"
    assert ip_of("127.0.0.2:0/5") == "127.0.0.2"


def test_ip_of_client_addresses() -> None:
    assert ip_of("[v2:198.18.2.11:0/123,v1:198.18.2.11:0/123]") == "198.18.2.11"
    assert ip_of("198.18.2.11:0/42") == "198.18.2.11" and ip_of("v2:198.18.2.11:0/1") == "198.18.2.11"
    assert ip_of("[v2:[2001:db8::1]:0/123,v1:[2001:db8::1]:0/123]") == "2001:db8::1"
    assert ip_of("[2001:db8::1]:0/42") == "2001:db8::1" and ip_of("v2:[2001:db8::1]:0/1") == "2001:db8::1"


def test_plain_addr_is_the_form_watchers_and_lock_owners_print() -> None:
    from ganeti_ceph.rbd.fencing import plain_addr

    assert plain_addr("[v2:127.0.0.1:0/123,v1:127.0.0.1:0/123]") == "127.0.0.1:0/123"
    assert plain_addr("v1:10.1.2.3:0/5") == plain_addr("10.1.2.3:0/5") == "10.1.2.3:0/5"
    assert plain_addr("[v2:[2001:db8::1]:0/7]") == "[2001:db8::1]:0/7"


def test_releasing_a_whole_node_address_is_refused() -> None:
    """release_client blocklists one client; an address with nonce 0 (or none) would fence the node.
    Refused before any Ceph call: no session is needed to see it (None would fail if one were made)."""
    assert client_nonce("[v2:198.18.2.11:0/123,v1:198.18.2.11:0/123]") == 123
    assert client_nonce("[2001:db8::1]:0/7") == 7
    for whole in ("198.18.2.11:0/0", "[v2:198.18.2.11:0/0,v1:198.18.2.11:0/0]", "198.18.2.11", "198.18.2.11:0",
                  "[2001:db8::1]:0/0", "198.18.2.11:0/x"):
        assert client_nonce(whole) == 0, whole
        with pytest.raises(GanetiCephError, match="would fence its whole node"):
            release_client(None, whole)  # type: ignore[arg-type]
