"""`gnt-storage image import|list|remove` on the real cluster, and disks cloned from an image (origin=NAME)
through the real provider executables."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import rbd

from ganeti_ceph import procs
from ganeti_ceph.rbd import images
from ganeti_ceph.session import Session
from tests.ceph.provider_env import MIB, Provider, provider_fixture
from tests.conftest import GNT_STORAGE, LocalCluster

SIZE_MIB = 48


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("provider-images")))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A sparse raw disk with data at a few offsets (and an odd tail), its qcow2 copy, a vmdk, a text file."""
    d = tmp_path_factory.mktemp("image-files")
    raw = str(d / "disk.raw")
    with open(raw, "wb") as fh:
        fh.truncate(SIZE_MIB * MIB - 4096)
        for off in (0, 5 * MIB + 17, 31 * MIB):
            fh.seek(off)
            fh.write(os.urandom(MIB))
        fh.seek(SIZE_MIB * MIB - 8192)
        fh.write(os.urandom(4096))
    qcow2 = str(d / "disk.qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True, timeout=60)
    vmdk = str(d / "disk.vmdk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", vmdk, "16M"], check=True, timeout=60)
    return {"raw": raw, "qcow2": qcow2, "vmdk": vmdk, "dir": str(d)}


def gs(prov: Provider, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "GANETI_CEPH_CONFIG": prov.a}
    return subprocess.run([GNT_STORAGE, "image", *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def refused(res: subprocess.CompletedProcess) -> str:
    """A refusal: non-zero exit, one stderr line, no traceback; returns the line."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0, res.stdout
    assert len(lines) == 1, res.stderr
    return lines[0]


def digest_file(path: str, size: int) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    return hashlib.sha256(data + b"\0" * (size - len(data))).hexdigest()


def digest_image(prov: Provider, name: str, snap: str | None = None, size: int | None = None) -> str:
    h = hashlib.sha256()
    with prov.image(name, snap=snap) as img:
        total = img.size() if size is None else size
        for off in range(0, total, 4 * MIB):
            h.update(img.read(off, min(4 * MIB, total - off)))
    return h.hexdigest()


def listing(prov: Provider) -> dict[str, list[str]]:
    res = gs(prov, "list", "--no-headers", "--separator", "|", "-o", "name,pool,size,format,from,clones,clone_list")
    assert res.returncode == 0, res.stderr
    return {line.split("|")[0]: line.split("|")[1:] for line in res.stdout.splitlines()}


def registry(prov: Provider) -> dict[str, dict]:
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        return dict(images._entries(s, io))


def pool_images(prov: Provider) -> set[str]:
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        return set(rbd.RBD().list(io))


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_import_reads_back_the_file(prov: Provider, files: dict[str, str], fmt: str) -> None:
    """The image holds exactly the file's disk (size rounded up to MiB: zeros), in its template snapshot too;
    list shows it; the registry names it; no temporary image is left."""
    name = prov.track(f"img-{fmt}-{os.urandom(3).hex()}")
    res = gs(prov, "import", files[fmt], name)
    assert res.returncode == 0, res.stderr
    assert f"as rbd/{name}" in res.stdout and "copied 100%" in res.stderr
    want = digest_file(files["raw"], SIZE_MIB * MIB)
    assert prov.size_mib(name) == SIZE_MIB
    assert digest_image(prov, name) == want
    assert digest_image(prov, name, snap=images.SNAP) == want
    with prov.image(name) as img:
        assert img.is_protected_snap(images.SNAP)
    assert listing(prov)[name] == ["rbd", str(SIZE_MIB), fmt, files[fmt], "0", ""]
    assert registry(prov)[name]["state"] == "ready"
    assert not [i for i in pool_images(prov) if i.startswith(f"{name}.import-")]
    assert gs(prov, "remove", name).returncode == 0
    assert name not in pool_images(prov) and name not in registry(prov)


def test_origin_name_is_a_thin_clone_and_remove_is_refused_while_it_lives(prov: Provider,
                                                                          files: dict[str, str]) -> None:
    """create with origin=NAME clones the template snapshot (no copy, no new snapshot); the old forms still
    work; image remove names the clones and changes nothing; once they are gone it removes the image."""
    name = prov.track(f"tmpl-{os.urandom(3).hex()}")
    assert gs(prov, "import", "--format", "qcow2", files["qcow2"], name).returncode == 0
    vol, vol2 = prov.volume(), prov.volume(1)
    prov.run("create", vol, VOL_SIZE="96", EXTP_ORIGIN=name).ok()
    prov.run("create", vol2, VOL_SIZE="64", EXTP_ORIGIN=f"rbd/{name}").ok()
    for v in (vol, vol2):
        with prov.image(v) as img:
            spec = img.get_parent_image_spec()
            assert (spec["pool_name"], spec["image_name"], spec["snap_name"]) == ("rbd", name, images.SNAP)
            used: list[tuple] = []
            img.diff_iterate(0, img.size(), None, lambda *e, found=used: found.append(e), include_parent=False)
            assert not used, f"the clone {v} holds data of its own: {used}"
    with prov.image(name) as img:
        assert [s["name"] for s in img.list_snaps()] == [images.SNAP]
    assert prov.size_mib(vol) == 96
    assert digest_image(prov, vol, size=SIZE_MIB * MIB) == digest_file(files["raw"], SIZE_MIB * MIB)
    assert listing(prov)[name][4:] == ["2", ",".join(sorted(f"rbd/{v}" for v in (vol, vol2)))]

    line = refused(gs(prov, "remove", name))
    assert vol in line and vol2 in line and "clone" in line
    assert name in pool_images(prov) and registry(prov)[name]["state"] == "ready"

    prov.run("remove", vol).ok()
    with prov.image(name) as img:  # the last-but-one clone gone: the template snapshot stays, protected
        assert img.is_protected_snap(images.SNAP)
    prov.run("remove", vol2).ok()
    with prov.image(name) as img:  # and after the last one too (it is not a snapshot made for one clone)
        assert img.is_protected_snap(images.SNAP)
    res = gs(prov, "remove", name)
    assert res.returncode == 0, res.stderr
    assert name not in pool_images(prov) and name not in registry(prov)
    assert refused(gs(prov, "remove", name)).startswith("gnt-storage: no imported image")


def test_provider_remove_of_the_template_is_refused(prov: Provider, files: dict[str, str]) -> None:
    """The template is no Ganeti volume: a provider remove naming it is refused (its snapshot is not one the
    provider made), and the image stays usable."""
    name = prov.track(f"tmpl-{os.urandom(3).hex()}")
    assert gs(prov, "import", files["raw"], name).returncode == 0
    assert "template" in prov.run("remove", name).one_error()
    assert name in pool_images(prov)
    assert gs(prov, "remove", name).returncode == 0


def test_explicit_snapshot_origin_and_plain_images_keep_their_meaning(prov: Provider, files: dict[str, str]) -> None:
    """origin=NAME@snap clones that snapshot; origin=IMAGE of an image never imported still snapshots it for
    the purpose (the registry is asked, and says nothing)."""
    name = prov.track(f"tmpl-{os.urandom(3).hex()}")
    assert gs(prov, "import", files["raw"], name).returncode == 0
    plain, vol, vol2 = prov.volume(), prov.volume(1), prov.volume(2)
    prov.run("create", plain, VOL_SIZE="32").ok()
    prov.run("create", vol, VOL_SIZE="64", EXTP_ORIGIN=f"{name}@{images.SNAP}").ok()
    prov.run("create", vol2, VOL_SIZE="32", EXTP_ORIGIN=plain).ok()
    with prov.image(vol) as img:
        assert img.get_parent_image_spec()["snap_name"] == images.SNAP
    with prov.image(vol2) as img:
        assert img.get_parent_image_spec()["snap_name"].startswith("ganeti-clone-")
    for v in (vol2, vol, plain):
        prov.run("remove", v).ok()
    assert gs(prov, "remove", name).returncode == 0


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A raw file whose copy takes long enough to be caught in the middle."""
    path = str(tmp_path_factory.mktemp("big") / "big.raw")
    with open(path, "wb") as fh:
        for _ in range(384):
            fh.write(os.urandom(MIB))
    return path


def importing(prov: Provider, path: str, name: str) -> subprocess.Popen:
    """`image import path name` started, returned once its qemu-img copies."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "GANETI_CEPH_CONFIG": prov.a}
    proc = subprocess.Popen([GNT_STORAGE, "image", "import", path, name], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not [p for p in procs.find(binary="qemu-img") if name in " ".join(procs.cmdline(p))]:
        assert proc.poll() is None and time.monotonic() < deadline, "the import ended before its copy was seen"
        time.sleep(0.05)
    return proc


def test_an_import_overtaken_by_another_undoes_itself(prov: Provider, big: str) -> None:
    """Another import of NAME recorded while this one copies: this one removes its own image, leaves the
    other's entry alone and says so in one line."""
    name = prov.track(f"raced-{os.urandom(3).hex()}")
    proc = importing(prov, big, name)
    theirs = {"state": "importing", "tmp": f"{name}.import-0e0e0e0e", "token": "0e0e0e0e"}
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        images._put(s, io, name, theirs)
    try:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode != 0 and "another import of" in err.strip().splitlines()[-1], err
        assert not [i for i in pool_images(prov) if i.startswith(name)]
        assert registry(prov)[name] == theirs
    finally:
        with Session(prov.cluster.client) as s, s.ioctx() as io:
            images._put(s, io, name, None)


def test_interrupted_import_is_cleaned_by_a_rerun(prov: Provider, big: str) -> None:
    """An import killed during its copy leaves only its temporary image (not NAME, not listed); the rerun
    removes it, proven that import's, and imports afresh."""
    name = prov.track(f"killed-{os.urandom(3).hex()}")
    proc = importing(prov, big, name)
    os.killpg(proc.pid, signal.SIGKILL)  # the import and its qemu-img, as a crash of the host would
    proc.wait()
    proc.stderr.close()  # type: ignore[union-attr]
    left = [i for i in pool_images(prov) if i.startswith(f"{name}.import-")]
    assert len(left) == 1 and name not in pool_images(prov)
    prov.track(left[0])
    assert name not in listing(prov)
    assert registry(prov)[name]["state"] == "importing"

    # The killed qemu-img's watch stays until Ceph times it out (30 s): until then the rerun refuses, as
    # for an import still running, in one line (whether qemu-img had opened the image when killed is a race).
    deadline = time.monotonic() + 90
    while (res := gs(prov, "import", big, name)).returncode != 0 and time.monotonic() < deadline:
        assert "is in use by" in refused(res), res.stderr
        time.sleep(2)
    assert res.returncode == 0, res.stderr
    assert f"removing rbd/{left[0]}" in res.stderr
    assert left[0] not in pool_images(prov)
    assert digest_image(prov, name) == digest_file(big, 384 * MIB)
    assert gs(prov, "remove", name).returncode == 0


def test_a_partial_import_not_proven_ours_is_kept(prov: Provider, files: dict[str, str]) -> None:
    """A registry entry naming a temporary image whose own record is another import's: the rerun refuses
    and removes nothing."""
    name = prov.track(f"odd-{os.urandom(3).hex()}")
    tmp = prov.track(f"{name}.import-0badc0de")
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        rbd.RBD().create(io, tmp, 8 * MIB, old_format=False)
        with rbd.Image(io, tmp) as img:
            img.metadata_set(images.META_IMPORT, json.dumps({"name": name, "token": "someone"}))
        images._put(s, io, name, {"state": "importing", "tmp": tmp, "token": "0badc0de"})
    try:
        line = refused(gs(prov, "import", files["raw"], name))
        assert "not removing it" in line and tmp in line
        assert tmp in pool_images(prov) and name not in pool_images(prov)
    finally:
        with Session(prov.cluster.client) as s, s.ioctx() as io:
            rbd.RBD().remove(io, tmp)
            images._put(s, io, name, None)


def test_refusals_change_nothing(prov: Provider, files: dict[str, str]) -> None:
    """An existing NAME (imported, or any image), a missing or unreadable FILE, a FILE neither raw nor qcow2,
    a bad name or format: one line each, nothing made."""
    name = prov.track(f"tmpl-{os.urandom(3).hex()}")
    assert gs(prov, "import", files["raw"], name).returncode == 0
    plain = prov.volume()
    prov.run("create", plain, VOL_SIZE="8").ok()
    try:
        before_images, before_registry = pool_images(prov), registry(prov)
        new = f"new-{os.urandom(3).hex()}"
        cases = [
            (("import", files["raw"], name), f"image {name} exists in pool rbd"),
            (("import", files["raw"], plain), "exists already (not an imported image)"),
            (("import", os.path.join(files["dir"], "nope.raw"), new), "no such file"),
            (("import", files["dir"], new), "not a readable file"),
            (("import", files["vmdk"], new), "is a vmdk image, not raw or qcow2"),
            (("import", "--format", "qcow2", files["raw"], new), "is not a qcow2 image"),
            (("import", files["raw"], "Bad_Name"), "invalid image name"),
            (("remove", plain), f"no imported image {plain}"),
            (("list", "-o", "name,colour"), "unknown field(s) colour"),
        ]
        for args, needle in cases:
            line = refused(gs(prov, *args))
            assert needle in line, (args, line)
        assert pool_images(prov) == before_images and registry(prov) == before_registry
    finally:
        prov.run("remove", plain).ok()
        assert gs(prov, "remove", name).returncode == 0
