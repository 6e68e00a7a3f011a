import base64
import configparser
import struct

from gnt_storage.deploy import cephconf
from gnt_storage.deploy.cephconf import ClusterSpec, Mon


def spec() -> ClusterSpec:
    return ClusterSpec(fsid="f" * 8, root="/srv/c", mons=(Mon("a", "127.0.0.1", 13300, 13301),),
                       public_network="127.0.0.1/32", port_min=13302, port_max=13399)


def test_key_layout_matches_ceph_authtool() -> None:
    key = cephconf.new_key(secret=b"\x01" * 16, now=1000.5)
    raw = base64.b64decode(key)
    kind, sec, nsec, length = struct.unpack("<HIIH", raw[:12])
    assert (kind, sec, nsec, length) == (1, 1000, 500000000, 16)
    assert raw[12:] == b"\x01" * 16 and len(key) == 40


def test_keys_are_random() -> None:
    assert cephconf.new_key() != cephconf.new_key()


def test_keyring_format() -> None:
    text = cephconf.keyring({"client.x": ("KEY", {"mon": "profile rbd"})})
    assert text == '[client.x]\n\tkey = KEY\n\tcaps mon = "profile rbd"\n'


def test_client_caps_are_pool_restricted() -> None:
    caps = cephconf.rbd_client_caps("disks")
    assert caps["osd"] == "profile rbd pool=disks" and caps["mgr"] == "profile rbd pool=disks"


def test_conf_parses_and_stays_under_root() -> None:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(cephconf.render_conf(spec()))
    g = cp["global"]
    assert g["mon_host"] == "[v2:127.0.0.1:13300,v1:127.0.0.1:13301]"
    assert g["osd_crush_chooseleaf_type"] == "0"
    assert g["auth_allow_insecure_global_id_reclaim"] == "false"
    assert cp["mon"]["paxos_propose_interval"] == "0.05"
    for section in ("mon", "mgr", "osd"):
        for key in ("pid_file", "log_file", "admin_socket", "keyring"):
            assert cp[section][key].startswith("/srv/c/")
    assert "/etc/ceph" not in cephconf.render_conf(spec())
