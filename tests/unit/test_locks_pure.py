import json

from ganeti_ceph.rbd.locks import PREFIX, Holder, fenced, ip_of, parse_holders


def test_parse_holders() -> None:
    meta = {
        "ganeti.uuid": "u",
        PREFIX + "a": json.dumps({"mode": "exclusive", "ip": "10.0.0.1"}),
        PREFIX + "b": json.dumps({"mode": "shared", "ip": "10.0.0.2"}),
        PREFIX + "c": "garbage",
    }
    assert parse_holders(meta) == [Holder("a", True, "10.0.0.1"), Holder("b", False, "10.0.0.2"), Holder("c", True, "")]


def test_only_a_whole_ip_counts_as_fenced() -> None:
    assert fenced({"10.0.0.1:0/0"}, "10.0.0.1")
    assert not fenced({"10.0.0.1:0/5"}, "10.0.0.1")  # one client of the node is not the node
    assert not fenced({"10.0.0.1:0/0"}, "10.0.0.11")
    assert not fenced({":0/0"}, "")


def test_ip_of() -> None:
    assert ip_of("[v2:127.0.0.1:0/123,v1:127.0.0.1:0/123]") == "127.0.0.1"
    assert ip_of("v2:10.1.2.3:0/5") == "10.1.2.3"
    assert ip_of("127.0.0.2:0/5") == "127.0.0.2"
