from extstorage.client import decode_answer, decode_request, encode_answer, encode_request


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
