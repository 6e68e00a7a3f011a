import re

import pytest

from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd import volumes
from ganeti_ceph.rbd.access import URI_31, userspace_uri


def test_origin_forms() -> None:
    assert str(volumes.parse_origin("tmpl@base", "rbd")) == "rbd/tmpl@base"
    assert str(volumes.parse_origin("gold/tmpl", "rbd")) == "gold/tmpl"
    ref = volumes.parse_origin("gold/tmpl@s1", "rbd")
    assert (ref.pool, ref.image, ref.snap) == ("gold", "tmpl", "s1")


@pytest.mark.parametrize("text", ["", "a/b/c@s", "p/Img", "p/img@bad snap", "@s"])
def test_bad_origins(text: str) -> None:
    with pytest.raises(UsageError, match="invalid origin"):
        volumes.parse_origin(text, "rbd")


def test_features() -> None:
    assert volumes.parse_features(None) == volumes.DEFAULT_FEATURES
    assert volumes.parse_features("layering+exclusive-lock") == ("layering", "exclusive-lock")
    with pytest.raises(UsageError, match="unknown image feature"):
        volumes.parse_features("layering,turbo")
    with pytest.raises(UsageError, match="object-map needs exclusive-lock"):
        volumes.parse_features("layering,object-map")


def test_sizes() -> None:
    assert volumes.size_bytes("10") == 10 * volumes.MIB
    assert volumes.size_bytes(2**40) == 2**60
    for bad in ("x", "0", "-1", "1.5", 0, -1, True, 2**40 + 1, 2**70, str(2**70), "1e3"):
        with pytest.raises(UsageError):
            volumes.size_bytes(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("client", ["admin", "ganeti", "ganeti.node-1"])
def test_userspace_uri_fits_ganeti_31(client: str) -> None:
    uri = userspace_uri("rbd", "3c6b1f0e-8a8e-4b55-9d1c-0a2b3c4d5e6f.ext.disk0", client)
    assert URI_31.match(uri) and "," not in uri
    assert re.fullmatch(r"rbd:rbd/[a-z0-9.-]+(:id=[a-z0-9._-]+)?", uri)
    assert (":id=" in uri) == (client != "admin")


FSID = "5b7f3c1e-0000-4000-8000-000000000001"


def test_qemu_conf_must_name_the_providers_cluster(tmp_path) -> None:
    """The userspace URI makes QEMU read /etc/ceph/ceph.conf: it must name the fsid of the provider's conf,
    else QEMU would open a same-named image in another cluster."""
    from ganeti_ceph.errors import ConfigError
    from ganeti_ceph.rbd.access import check_qemu_conf

    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\n\tfsid = {FSID}\n\tmon_host = v1:10.0.0.1:6789\n")
    check_qemu_conf(FSID, "ceph.yaml", str(conf))
    check_qemu_conf(FSID, "ceph.yaml", str(tmp_path / "missing.conf"))  # the start hook vetoes that
    other = "5b7f3c1e-0000-4000-8000-000000000002"
    for text, needle in ((f"[global]\nfsid = {other}\n", f"names fsid {other}"),
                         ("[global]\nmon_host = v1:10.0.0.1:6789\n", "names no fsid")):
        conf.write_text(text)
        with pytest.raises(ConfigError) as exc:
            check_qemu_conf(FSID, "ceph.yaml", str(conf))
        assert needle in exc.value.message and FSID in exc.value.message and "\n" not in exc.value.message


class RecordingImage:
    """Stands in for an open rbd.Image: its size, and every resize asked of it."""

    def __init__(self, size: int) -> None:
        self._size = size
        self.resizes: list[tuple[int, dict]] = []

    def size(self) -> int:
        return self._size

    def resize(self, size: int, **kwargs: object) -> None:
        self.resizes.append((size, kwargs))
        self._size = size


def test_grow_never_shrinks_and_tells_librbd_so() -> None:
    """librbd's resize shrinks by default (allow_shrink=True): a smaller size is refused before librbd is
    called, the same size is a no-op, and a real grow passes allow_shrink=False."""
    img = RecordingImage(128 * volumes.MIB)
    with pytest.raises(UsageError, match="refusing to shrink rbd/v from 128 MiB to 64 MiB"):
        volumes.grow_image(img, 64 * volumes.MIB, "rbd/v")  # type: ignore[arg-type]
    volumes.grow_image(img, 128 * volumes.MIB, "rbd/v")  # type: ignore[arg-type]
    assert img.resizes == []
    volumes.grow_image(img, 256 * volumes.MIB, "rbd/v")  # type: ignore[arg-type]
    assert img.resizes == [(256 * volumes.MIB, {"allow_shrink": False})]


def test_every_resize_in_the_provider_passes_allow_shrink_false() -> None:
    """No resize call anywhere in the provider relies on librbd's shrinking default."""
    import pathlib
    import re as _re

    root = pathlib.Path(volumes.__file__).parent
    calls = [(p.name, m.group(0)) for p in root.glob("*.py")
             for m in _re.finditer(r"\.resize\([^)]*\)", p.read_text())]
    assert calls and all("allow_shrink=False" in c for _, c in calls), calls
