"""A Ganeti OS definition that installs nothing: `gnt-instance add -o noop+default`.

There are no guest images offline, yet `gnt-instance add` wants an OS (or
--no-install). This one implements OS API 20 with scripts that succeed
without touching the disks, so instance creation exercises the disk path
(create, attach, open) and nothing else.
"""

from __future__ import annotations

import os

NAME = "noop"
VARIANT = "default"
SCRIPT = """#!/bin/sh
# Ganeti OS "noop" (testbed): {action} does nothing on purpose.
{body}
exit 0
"""
BODIES = {
    "create": "",
    "import": "cat >/dev/null",  # Ganeti streams the image on stdin: drain it
    "export": "",
    "rename": "",
    "verify": "",
}


def install(os_dir: str) -> str:
    """Write <os_dir>/noop (one of Ganeti's OS search paths inside the node); return its path."""
    target = os.path.join(os_dir, NAME)
    os.makedirs(target, mode=0o755, exist_ok=True)
    files = {"ganeti_api_version": "20\n", "variants.list": f"{VARIANT}\n", "parameters.list": ""}
    for name, text in files.items():
        with open(os.path.join(target, name), "w") as fh:
            fh.write(text)
    for action, body in BODIES.items():
        path = os.path.join(target, action)
        with open(path, "w") as fh:
            fh.write(SCRIPT.format(action=action, body=body))
        os.chmod(path, 0o755)
    return target
