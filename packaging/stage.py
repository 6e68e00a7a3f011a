#!/usr/bin/python3
"""Lay out what the Debian package ships beside its Python modules (run by debian/rules).

    packaging/stage.py DESTDIR

Everything is made by the project's own code, never a second copy of it:
the `rbd` provider and the hooks by extstorage/install.py's generator (their
scripts run /usr/bin/python3 -IS on the system's dist-packages, so they hold
no build or checkout path), the example /etc/ganeti/ceph.yaml by
ganeti_ceph/config.py's key table and `dump`. gnt-storage moves to /usr/sbin,
where it stands in for Ganeti's own (diverted by the preinst), because root's
PATH finds /usr/sbin before /usr/bin.
"""

from __future__ import annotations

import os
import sys

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SRC)  # build time only: the staged scripts get SYSTEM_PATH below

from extstorage import install  # noqa: E402
from ganeti_ceph import config  # noqa: E402

PYTHON = "/usr/bin/python3"
SYSTEM_PATH = ["/usr/lib/python3/dist-packages"]  # our modules and rados, rbd, yaml: all from Debian packages
EXTSTORAGE_DIR = "/usr/share/ganeti/extstorage"  # the last of Ganeti's search path, the one for packages
EXAMPLE = config.Config(conf="/etc/ceph/ceph.conf", keyring="/etc/ceph/ceph.client.ganeti.keyring",
                        client_id="ganeti")  # what gnt-storage init-distributed-storage writes, mapper aside


def _default(value: object) -> str:
    return "required" if value is config.REQUIRED else repr(value)


def example_config() -> str:
    """The example config: every key with its help as comments, then the keys as `dump` writes them."""
    head = ["# ganeti-ceph: how this node reaches its Ceph cluster (see ganeti-ceph-setup(8) and",
            "# /usr/share/doc/ganeti-ceph). `gnt-storage init-distributed-storage` rewrites this file on",
            "# every node of the storage group; by hand, set conf, keyring and client. Keys are only ever",
            "# named by their keyring file, never written here.", "#", "# Every key:"]
    head += [f"#   {k.name} ({k.kind.describe()}; default {_default(k.default)}): {k.help}" for k in config.KEYS]
    return "\n".join(head) + "\n\n" + config.dump(EXAMPLE)


def main(destdir: str) -> int:
    install.install(destdir + EXTSTORAGE_DIR, PYTHON, log_dir=destdir + install.LOG_DIR, path=SYSTEM_PATH)
    install.install_hooks(install.DEFAULT_HOOKS_DIR, PYTHON, path=SYSTEM_PATH, destdir=destdir)
    cfg = destdir + config.DEFAULT_PATH
    with open(cfg, "w", encoding="utf-8") as fh:
        fh.write(example_config())
    config.load(cfg)  # the example must be a config the product reads
    sbin = os.path.join(destdir, "usr/sbin")
    os.makedirs(sbin, exist_ok=True)
    os.rename(os.path.join(destdir, "usr/bin/gnt-storage"), os.path.join(sbin, "gnt-storage"))
    return 0


if __name__ == "__main__":
    sys.exit(main(os.path.abspath(sys.argv[1])))
