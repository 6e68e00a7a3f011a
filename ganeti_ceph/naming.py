"""The one naming scheme: what pool, image, snapshot and client names may be.

Names are checked before anything is sent to Ceph, so bad input fails with a
clear message and no change. Pool names are restricted to what Ganeti 3.1's
userspace URI pattern accepts (`\\w+`).
"""

from __future__ import annotations

import re

from ganeti_ceph.errors import UsageError

POOL_RE = re.compile(r"^\w{1,64}$", re.ASCII)
CLIENT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Ganeti volume names look like "<uuid>.ext.disk0"; Ganeti 3.1 accepts [a-z0-9-.].
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,199}$")
SNAP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_pool_name(name: str) -> str:
    if not POOL_RE.fullmatch(name):  # fullmatch: "$" would let a trailing newline through
        raise UsageError(f"invalid pool name {name!r}: use letters, digits and '_' only (at most 64)")
    return name


def check_client_id(name: str) -> str:
    if name.startswith("client.") or not CLIENT_RE.fullmatch(name):
        raise UsageError(
            f"invalid Ceph client id {name!r}: use lower-case letters, digits, '.', '_' and '-' "
            "(without the 'client.' prefix)"
        )
    return name


def check_image_name(name: str) -> str:
    if not IMAGE_RE.fullmatch(name):
        raise UsageError(
            f"invalid image name {name!r}: use lower-case letters, digits, '.' and '-' (at most 200)"
        )
    return name


def check_snap_name(name: str) -> str:
    if not SNAP_RE.fullmatch(name):
        raise UsageError(f"invalid snapshot name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


ACCESS_MODES = ("kernelspace", "userspace")  # how a node reaches a volume
# The provider's parameter for adopting an image: not "adopt", as Ganeti drops disk parameters named
# like its own (access, adopt, mode, name, provider, size...) before they reach the provider.
ADOPT_PARAM = "adopt_image"
META_ADOPT = "ganeti.adopt"  # image metadata: where an adopted image came from (see rbd/volumes.py)
MAX_MIB = 1 << 40
_DIGITS = re.compile(r"-?[0-9]{1,40}")


def mib(raw: object, what: str) -> int:
    """A size in MiB as Ganeti passes it (a string) or as code gives it (an int)."""
    text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        raise UsageError(f"{what}={raw!r} is not a whole number of MiB")
    value = int(text)
    if value <= 0:
        raise UsageError(f"{what}={value} must be at least 1 MiB")
    if value > MAX_MIB:
        raise UsageError(f"{what}={value} is more than the {MAX_MIB} MiB (1 EiB) an RBD volume may have")
    return value
