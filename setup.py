"""ganeti-ceph: Ceph RBD storage for Ganeti clusters."""

import os
import re

from setuptools import find_packages, setup

# The one place of the version is ganeti_ceph/__init__.py (gnt-storage --version, reports); read, not imported.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ganeti_ceph", "__init__.py")) as fh:
    VERSION = re.search(r'^__version__ = "([^"]+)"$', fh.read(), re.M)[1]

setup(
    name="ganeti-ceph",
    version=VERSION,
    description="Ceph RBD storage stack for Ganeti: ExtStorage provider, hooks, bootstrap, monitoring",
    license="BSD-2-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["ganeti_ceph", "ganeti_ceph.*", "extstorage", "hooks", "gnt_storage",
                                    "gnt_storage.*", "data_collector"]),
    # rados and rbd come only from Debian (python3-rados, python3-rbd); the
    # rest too, so nothing is pulled from PyPI at install time.
    install_requires=[],
    entry_points={
        "console_scripts": [
            "gnt-storage = gnt_storage.cli:entry",
            "ganeti-ceph-setup = extstorage.install:entry",
            "ganeti-ceph-agent = extstorage.agent:entry",
            "ganeti-ceph-collector = data_collector.cli:entry",
            "ganeti-ceph-mond = data_collector.daemon:entry",
            "ganeti-ceph-verify-hook = data_collector.verify_hook:entry",
        ],
    },
)
