"""What Ganeti asks of the provider: its environment, parsed and checked.

A pure function of (action, environ): unit-tested without Ceph. Ganeti does
not enforce parameters.list, so unknown or malformed EXTP_* parameters are
refused here, before anything touches Ceph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ganeti_ceph.errors import UsageError
from ganeti_ceph.naming import ACCESS_MODES, ADOPT_PARAM, check_image_name, check_pool_name, mib
from ganeti_ceph.rbd.catalogue import check_backend_name, parse_tags
from ganeti_ceph.rbd.service import VolumeRef, VolumeSpec
from ganeti_ceph.rbd.volumes import parse_features

ACTIONS = ("create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot", "open", "close")
# name -> description, as written to parameters.list.
PARAMETERS = {
    "pool": "RBD pool of the image, in the cluster of /etc/ganeti/ceph.yaml (default: its pool, or where "
            "placement puts the disk when a backend catalogue exists)",
    "backend": "the backend (gnt-storage backend list) the disk is created on; excludes pool and tags",
    "tags": "placement: the disk goes to the cheapest backend with all these tags (a+b) and room",
    "origin": "clone source: [pool/]image@snapshot; [pool/]NAME of an image imported by gnt-storage image import "
              "(its protected snapshot 'template'); or [pool/]image (snapshotted for the purpose)",
    "features": "RBD image features, comma- or plus-separated (default layering+exclusive-lock+object-map+"
                "fast-diff+deep-flatten)",
    "data_pool": "pool for the image's data objects (e.g. erasure-coded); metadata stays in pool",
    "access": "kernelspace (mapped block device, default) or userspace (QEMU's own librbd)",
    ADOPT_PARAM: "take over this existing image of the pool (renamed to the new volume) instead of creating one; "
             "used by gnt-storage rbd-access",
}
# Set by Ganeti itself for every ext disk; accepted but not ours to validate.
GANETI_PARAMETERS = ("provider",)


@dataclass(frozen=True)
class Request:
    """One provider call, validated."""

    action: str
    volume: str
    pool: str  # as messages show it: the pool parameter, else the default one ("" when placement decides)
    access: str
    params: dict[str, str]
    size_mib: int | None = None
    new_size_mib: int | None = None
    uuid: str | None = None
    cname: str | None = None
    metadata: str | None = None
    snapshot_name: str | None = None
    open_exclusive: bool | None = None

    @property
    def origin(self) -> str | None:
        return self.params.get("origin")

    @property
    def ref(self) -> VolumeRef:
        return VolumeRef(self.params.get("pool", ""), self.volume, self.uuid, self.params.get("backend", ""))

    def spec(self) -> VolumeSpec:
        """The volume create would make (verify checks it); the features parameter is checked here."""
        params = self.params
        return VolumeSpec(self.ref, self.size_mib or 0, self.access, parse_features(params.get("features")),
                          params.get("data_pool"), self.origin, params.get(ADOPT_PARAM), self.cname,
                          parse_tags(params.get("tags", "")))


# Sizes are MiB counts of ASCII digits (int() would also take "1_0", " 64",
# "+64" and other scripts' digits), at most 1 EiB: bytes then fit every
# 64-bit size librbd and the kernel take, and nothing overflows.
def _mib(env: Mapping[str, str], key: str) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        raise UsageError(f"{key} is not set; Ganeti passes it to this action")
    return mib(raw, key)


def disk_params(env: Mapping[str, str]) -> dict[str, str]:
    """EXTP_* variables as {lower-case name: value}; unknown names refused."""
    params = {k[5:].lower(): v for k, v in env.items() if k.startswith("EXTP_")}
    unknown = sorted(set(params) - set(PARAMETERS) - set(GANETI_PARAMETERS))
    if unknown:
        raise UsageError(
            f"unknown disk parameter(s) {', '.join(unknown)}; the rbd provider takes: {', '.join(PARAMETERS)}"
        )
    return params


def parse(action: str, env: Mapping[str, str], default_pool: str) -> Request:
    if action not in ACTIONS:
        raise UsageError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    volume = env.get("VOL_NAME", "")
    if not volume:
        raise UsageError("VOL_NAME is not set; the provider is meant to be run by Ganeti")
    check_image_name(volume)
    params = disk_params(env)
    if params.get("pool") == "":
        del params["pool"]
    if "pool" in params:
        check_pool_name(params["pool"])
    pool = params.get("pool") or default_pool
    if pool:  # "" only when the backend catalogue decides, after routing
        check_pool_name(pool)
    chosen = [k for k in ("backend", "pool", "tags") if params.get(k)]
    if len(chosen) > 1:
        raise UsageError(f"give one of backend, pool and tags, not {' and '.join(chosen)}")
    if params.get("backend"):
        check_backend_name(params["backend"])
    parse_tags(params.get("tags", ""))
    access = params.get("access") or "kernelspace"
    if access not in ACCESS_MODES:
        raise UsageError(f"access={access!r} is not valid; use kernelspace or userspace")
    if "data_pool" in params:
        check_pool_name(params["data_pool"])
    if ADOPT_PARAM in params:
        check_image_name(params["adopt_image"])
        if "origin" in params:
            raise UsageError("give either origin or adopt_image, not both")
    kwargs: dict = {}
    if action == "create":
        kwargs["size_mib"] = _mib(env, "VOL_SIZE")
    elif action == "grow":
        kwargs["size_mib"] = _mib(env, "VOL_SIZE")
        kwargs["new_size_mib"] = _mib(env, "VOL_NEW_SIZE")
    elif action == "snapshot":
        snap = env.get("VOL_SNAPSHOT_NAME", "")
        if not snap:
            raise UsageError("VOL_SNAPSHOT_NAME is not set for snapshot")
        kwargs["snapshot_name"] = check_image_name(snap)
    elif action == "open":
        flag = env.get("VOL_OPEN_EXCLUSIVE", "True")
        if flag not in ("True", "False"):
            raise UsageError(f"VOL_OPEN_EXCLUSIVE={flag!r}; expected True or False")
        kwargs["open_exclusive"] = flag == "True"
    elif action == "setinfo":
        kwargs["metadata"] = env.get("VOL_METADATA", "")
    return Request(action=action, volume=volume, pool=pool, access=access, params=params,
                   uuid=env.get("VOL_UUID") or None, cname=env.get("VOL_CNAME") or None, **kwargs)


def parameters_list() -> str:
    """The parameters.list file Ganeti shows in `gnt-os`-style listings."""
    return "".join(f"{name} {text}\n" for name, text in PARAMETERS.items())
