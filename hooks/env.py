"""What a Ganeti hook is told: the GANETI_* environment, parsed (pure).

Hooks run with a reset environment (only GANETI_* and a fixed PATH) on the
master and the nodes involved. They get each disk's provider and volume
name, but no disk parameters: the access mode comes from the image's
metadata instead (see hooks/main.py and doc/hooks.md).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Disk:
    index: int
    provider: str
    volume: str
    size_mib: int


@dataclass(frozen=True)
class HookEnv:
    hpath: str
    phase: str
    master: str
    instance: str = ""
    primary: str = ""
    old_primary: str = ""
    new_primary: str = ""
    node_name: str = ""
    node_ip: str = ""
    target: str = ""  # OP_TARGET: the node of node-modify
    offline: str = ""  # node-modify's --offline: "True", "False" or "None" (unchanged)
    drained: str = ""  # node-modify's --drained, alike
    ignore_consistency: bool = False
    hypervisor: str = ""
    grown_disk: int = -1
    disks: tuple[Disk, ...] = ()
    hv: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    template: str = ""  # INSTANCE_DISK_TEMPLATE
    new_sizes: tuple[int, ...] = ()  # instance-add: every disk's MiB (its pre phase names no disk type)
    amount: int = 0  # disk-grow: MiB to add, or the new size when `absolute`
    absolute: bool = False

    @property
    def rbd_disks(self) -> tuple[Disk, ...]:
        return tuple(d for d in self.disks if d.provider == "rbd")


def _disks(env: Mapping[str, str], prefix: str) -> list[Disk]:
    out = []
    count = int(env.get(f"{prefix}DISK_COUNT", "0") or 0)
    for i in range(count):
        p = f"{prefix}DISK{i}_"
        if env.get(p + "DEV_TYPE") != "ext":
            continue
        out.append(Disk(i, env.get(p + "PROVIDER", ""), env.get(p + "ID", ""), _mib(env.get(p + "SIZE"))))
    return out


def parse(env: Mapping[str, str]) -> HookEnv:
    g = {k[len("GANETI_"):]: v for k, v in env.items() if k.startswith("GANETI_")}
    disks = _disks(g, "INSTANCE_")
    # A disk added by instance-modify only shows in the post phase, as POST_INSTANCE_*.
    post = {k[len("POST_"):]: v for k, v in g.items() if k.startswith("POST_INSTANCE_")}
    known = {d.volume for d in disks}
    disks += [d for d in _disks(post, "INSTANCE_") if d.volume not in known]
    return HookEnv(
        hpath=g.get("HOOKS_PATH", ""), phase=g.get("HOOKS_PHASE", ""), master=g.get("MASTER", ""),
        instance=g.get("INSTANCE_NAME", ""), primary=g.get("INSTANCE_PRIMARY", ""),
        old_primary=g.get("OLD_PRIMARY", ""), new_primary=g.get("NEW_PRIMARY", ""),
        node_name=g.get("NODE_NAME", ""), node_ip=g.get("NODE_PIP", ""),
        target=g.get("OP_TARGET", ""), offline=g.get("OFFLINE", ""), drained=g.get("DRAINED", ""),
        ignore_consistency=g.get("IGNORE_CONSISTENCY") == "True",
        hypervisor=g.get("INSTANCE_HYPERVISOR", ""),
        grown_disk=int(g["DISK"]) if g.get("DISK", "").isdigit() else -1,
        disks=tuple(disks),
        hv={k[len("INSTANCE_HV_"):]: v for k, v in g.items() if k.startswith("INSTANCE_HV_")},
        tags=tuple(g.get("INSTANCE_TAGS", "").split()), template=g.get("INSTANCE_DISK_TEMPLATE", ""),
        new_sizes=tuple(_mib(g.get(f"INSTANCE_DISK{i}_SIZE")) for i in range(_mib(g.get("INSTANCE_DISK_COUNT")))),
        amount=_mib(g.get("AMOUNT")), absolute=g.get("ABSOLUTE") == "True",
    )


def _mib(text: str | None) -> int:
    try:
        return max(0, int(float(text or 0)))
    except ValueError:
        return 0


def normalized(name: str) -> str:
    """A node name as Ganeti keeps it (netutils.Hostname.GetNormalizedName): lower case, no final dot."""
    return name.lower().rstrip(".")


def same_node(a: str, b: str) -> bool:
    """The exact same node. Never by short name: store1.rack-a is not store1.rack-b,
    and mistaking one for the other would fence (blocklist) the wrong node."""
    return bool(a and b) and normalized(a) == normalized(b)


def this_node() -> str:
    """This host's node name the way Ganeti itself learns it (Hostname.GetSysName:
    the normalized FQDN), so it equals GANETI_MASTER, *_PRIMARY, ... exactly."""
    return normalized(socket.getfqdn())
