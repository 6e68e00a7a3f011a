"""The `rbd` provider and hook run inside the kernel VM, the way ganeti-noded runs them on a node.

The provider and the hooks are installed on the host under the test dir,
which the guest sees live at the same path; each action then runs in the
guest over SSH with the venv's Python, from the same hostile environment as
tests/ceph/provider_env.py (CEPH_ARGS, PYTHONPATH, fake tools first on
PATH). The fake tools log to a file the leak check reads. The real `rbd` and
`rbd-nbd` are wrapped in the guest's /usr/local/bin (first on the PATH the
product gives its children): the wrappers log every call and refuse
`showmapped` / `list-mapped`, so a test sees what the mappers called.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import rbd
import yaml

from extstorage.install import HOOK_NAME, install, install_hooks
from ganeti_ceph import config as gconfig
from ganeti_ceph.session import Session
from testbed.kernel_vm import KernelVM
from tests.ceph.provider_env import FAKE_TOOLS, HOSTILE, WITH_UUID, Result
from tests.conftest import REPO, LocalCluster

MIB = 1024 * 1024
GUEST = "/run/gkt"  # the guest's own writable dir (a tmpfs)
TOOL_CALLS = f"{GUEST}/tool-calls"
FAKE_CALLS = f"{GUEST}/fake-tool-calls"
FAKE_BIN = f"{GUEST}/fake-bin"
# What the mappers must never run: the O(1) lookup reads sysfs and our link instead.
LISTERS = {"rbd": ("showmapped", "device list"), "rbd-nbd": ("list-mapped",)}
WRAPPER = """#!/bin/sh
echo "{tool} $*" >> {calls}
case " $* " in {refused}) echo "{tool}: refused by the test: listing mappings is not O(1)" >&2; exit 98;; esac
exec /usr/bin/{tool} "$@"
"""


class Guest:
    """The provider, hooks and configs for one session's kernel VM and cluster."""

    def __init__(self, vm: KernelVM, cluster: LocalCluster, base: str) -> None:
        self.vm = vm
        self.cluster = cluster
        self.base = base
        self.provider = install(os.path.join(base, "extstorage"), sys.executable, log_dir=os.path.join(base, "log"))
        hooks = os.path.join(base, "hooks")
        install_hooks(hooks, sys.executable)
        self.start_hook_path = os.path.join(hooks, "instance-start-pre.d", HOOK_NAME)
        self.configs = {m: self._config(m) for m in ("krbd", "rbd-nbd")}
        self.fsid = gconfig.conf_fsid(cluster.conf) or ""
        self.volumes: list[str] = []
        self.uuids: dict[str, str] = {}
        self._prepare_guest()
        self.node = vm.check([sys.executable, "-IS", "-c", f"import sys; sys.path[:0] = [{REPO!r}]\n"
                              "from hooks.env import this_node; print(this_node())"]).strip()

    def _config(self, mapper: str) -> str:
        """The cluster's ganeti-ceph.yaml with `mapper` and a run_dir in the guest's tmpfs."""
        with open(os.path.join(self.cluster.dir, "ganeti-ceph.yaml")) as fh:
            data = yaml.safe_load(fh)
        path = os.path.join(self.base, f"{mapper}.yaml")
        cfg = gconfig.parse({**data, "mapper": mapper, "run_dir": self.run_dir(mapper)}, path)
        with open(path, "w") as fh:
            fh.write(gconfig.dump(cfg))
        return path

    @staticmethod
    def run_dir(mapper: str) -> str:
        return f"{GUEST}/run-{mapper}"

    def _prepare_guest(self) -> None:
        """Fake tools for the hostile PATH, logging wrappers of the real mappers' tools."""
        lines = [f"mkdir -p {FAKE_BIN}"]
        for tool in FAKE_TOOLS:
            lines.append(f"printf '#!/bin/sh\\necho \"$0 $*\" >> {FAKE_CALLS}\\nexit 99\\n' > {FAKE_BIN}/{tool}")
        for tool, refused in LISTERS.items():
            text = WRAPPER.format(tool=tool, calls=TOOL_CALLS, refused="|".join(f"*' {r} '*" for r in refused))
            lines.append(f"cat > /usr/local/bin/{tool} <<'EOF'\n{text}EOF")
        lines.append(f"chmod 755 {FAKE_BIN}/* /usr/local/bin/rbd /usr/local/bin/rbd-nbd")
        self.vm.check("\n".join(lines), 30)

    # -- names -----------------------------------------------------------------------
    def volume(self) -> str:
        name = f"{uuid.uuid4()}.ext.disk0"
        self.volumes.append(name)
        self.uuids[name] = str(uuid.uuid4())
        return name

    def link(self, mapper: str, vol: str) -> str:
        return f"{self.run_dir(mapper)}/dev/{self.fsid}/rbd/{vol}"

    # -- the provider -------------------------------------------------------------------
    def env(self, action: str, vol: str, mapper: str, extra: dict[str, str]) -> dict[str, str]:
        env = {**HOSTILE, "PATH": f"{FAKE_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LC_ALL": "C", "GANETI_CEPH_CONFIG": self.configs[mapper], "VOL_NAME": vol,
               "GANETI_CEPH_AGENT_SOCKET": f"{GUEST}/no-agent.sock",  # nobody listens: the action runs itself
               "EXTP_PROVIDER": "rbd", "EXTP_ACCESS": "kernelspace"}
        if action in WITH_UUID and vol in self.uuids:
            env["VOL_UUID"] = self.uuids[vol]
        return {**env, **extra}

    def run(self, action: str, vol: str, mapper: str = "krbd", timeout: float = 120, **extra: str) -> Result:
        """`<provider>/<action>` in the guest, as noded runs it: no args, cwd the provider dir."""
        env = self.env(action, vol, mapper, extra)
        line = (f"cd {shlex.quote(self.provider)} && exec env -i "
                + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + f" ./{action}")
        started = time.monotonic()
        rc, out, err = self.vm.run(line, timeout)
        return Result(action, rc, out, err, time.monotonic() - started)

    def attach(self, vol: str, mapper: str) -> tuple[str, str]:
        res = self.run("attach", vol, mapper).ok()
        lines = res.stdout.split("\n")
        assert len(lines) == 3 and lines[2] == "", f"attach printed {res.stdout!r}"
        return lines[0], lines[1]

    def start_hook(self, vol: str, mapper: str) -> Result:
        """The instance-start pre hook, as Ganeti runs it on the primary for one instance with `vol`."""
        env = {"GANETI_HOOKS_PATH": "instance-start", "GANETI_HOOKS_PHASE": "pre", "GANETI_MASTER": self.node,
               "GANETI_INSTANCE_NAME": "inst1.kernel.test", "GANETI_INSTANCE_PRIMARY": self.node,
               "GANETI_INSTANCE_DISK_COUNT": "1", "GANETI_INSTANCE_DISK0_DEV_TYPE": "ext",
               "GANETI_INSTANCE_DISK0_PROVIDER": "rbd", "GANETI_INSTANCE_DISK0_ID": vol,
               "GANETI_INSTANCE_DISK0_SIZE": "64", "GANETI_INSTANCE_HV_use_chroot": "False",
               "GANETI_CEPH_CONFIG": self.configs[mapper], "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}
        line = "exec env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + self.start_hook_path
        started = time.monotonic()
        rc, out, err = self.vm.run(line, 120)
        return Result("start-hook", rc, out, err, time.monotonic() - started)

    # -- what the guest did -------------------------------------------------------------
    def take_tool_calls(self) -> list[str]:
        """The mapping tools' calls since the last take (the log is emptied)."""
        out = self.vm.check(f"cat {TOOL_CALLS} 2>/dev/null; : > {TOOL_CALLS}")
        return out.splitlines()

    def fake_calls(self) -> str:
        return self.vm.check(f"cat {FAKE_CALLS} 2>/dev/null || true")

    def write_random(self, dev: str, offset_mib: int, mib: int) -> str:
        """Write `mib` MiB of random data at `offset_mib` with O_DIRECT, read it back the same way; the
        sha256 of what was read (asserted equal to what was written)."""
        src = f"{GUEST}/data-{uuid.uuid4().hex}"
        out = self.vm.check(
            f"set -e; head -c {mib * MIB} /dev/urandom > {src}; sha256sum < {src}; "
            f"dd if={src} of={dev} bs=1M seek={offset_mib} oflag=direct conv=fsync status=none; "
            f"dd if={dev} bs=1M skip={offset_mib} count={mib} iflag=direct status=none | sha256sum; rm {src}")
        wrote, read = (line.split()[0] for line in out.splitlines())
        assert read == wrote, f"{dev} gave back other data than was written ({read} != {wrote})"
        return read

    def read_sum(self, dev: str, offset_mib: int, mib: int) -> str:
        out = self.vm.check(f"dd if={dev} bs=1M skip={offset_mib} count={mib} iflag=direct status=none | sha256sum")
        return out.split()[0]

    # -- Ceph, from the host ------------------------------------------------------------
    @contextmanager
    def image(self, vol: str) -> Iterator[rbd.Image]:
        with Session(self.cluster.client) as s, s.ioctx() as io, rbd.Image(io, vol, read_only=True) as img:
            yield img

    def ceph_sum(self, vol: str, offset_mib: int, mib: int) -> str:
        """sha256 of what librbd on the host reads: the data is in Ceph, not only in the guest."""
        with self.image(vol) as img:
            return hashlib.sha256(img.read(offset_mib * MIB, mib * MIB)).hexdigest()

    def ceph_size(self, vol: str) -> int:
        with self.image(vol) as img:
            return img.size()

    def leftovers(self) -> list[str]:
        """Images of this session still in the pool, mappings still in the guest, fake tools run."""
        found = []
        with Session(self.cluster.admin) as s, s.ioctx(self.cluster.client.pool) as io:
            found += [f"image {n}" for n in sorted(set(self.volumes) & set(rbd.RBD().list(io)))]
        found += [f"guest: {line}" for line in self.vm.check(
            "ls /sys/bus/rbd/devices/ | sed 's/^/rbd device /'; ls /sys/block/nbd*/pid 2>/dev/null; "
            "pgrep -a rbd-nbd || true").splitlines()]
        if calls := self.fake_calls().strip():
            found.append(f"the provider ran tools from the inherited PATH: {calls!r}")
        return found

