import json

from extstorage.locks import PREFIX, Holder, blocklisted, first_addr, parse_holders


def test_parse_holders() -> None:
    meta = {
        "ganeti.uuid": "u",
        PREFIX + "a": json.dumps({"mode": "exclusive", "addr": "10.0.0.1:0/5"}),
        PREFIX + "b": json.dumps({"mode": "shared", "addr": "10.0.0.2:0/6"}),
        PREFIX + "c": "garbage",
    }
    assert parse_holders(meta) == [
        Holder("a", True, "10.0.0.1:0/5"), Holder("b", False, "10.0.0.2:0/6"), Holder("c", True, "")]


def test_blocklisted_by_address_or_whole_ip() -> None:
    assert blocklisted({"10.0.0.1:0/5"}, "10.0.0.1:0/5")
    assert blocklisted({"10.0.0.1:0/0"}, "v2:10.0.0.1:0/99")
    assert not blocklisted({"10.0.0.1:0/5"}, "10.0.0.1:0/6")
    assert not blocklisted({"10.0.0.1:0/0"}, "10.0.0.11:0/6")
    assert not blocklisted({":0/0"}, "")


def test_first_addr() -> None:
    assert first_addr("[v2:127.0.0.1:0/123,v1:127.0.0.1:0/123]") == "127.0.0.1:0/123"
    assert first_addr("127.0.0.1:0/5") == "127.0.0.1:0/5"
