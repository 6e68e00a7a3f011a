"""The package `make deb` builds, as the tests install it: version N and N+1, built once per source content.

The package test (tests/packaging) and the Ganeti test bed's nodes both take
their .debs from here, so a session builds them at most once: they are
cached under build/deb/test-<hash of what the build copies>/ and a rerun on
unchanged sources only finds them.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import time
from types import ModuleType

from ganeti_ceph import runner
from ganeti_ceph.errors import Busy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "build", "deb")
PYTHON = "/usr/bin/python3"  # Debian's, never the venv's: the build must not see the checkout's environment
REVISIONS = (1, 2)
KEEP_OTHERS_S = 3 * 3600  # longer than a whole test session


def builder() -> ModuleType:
    """packaging/build_deb.py as a module (packaging/ is no Python package: PyPI's `packaging` owns the name)."""
    spec = importlib.util.spec_from_file_location("build_deb", os.path.join(REPO, "packaging", "build_deb.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _locked(wait: float) -> contextlib.AbstractContextManager[None]:
    """One builder at a time (two test sessions may want the same .debs); a wait past `wait` s is Busy."""
    path = os.path.join(BUILD, ".test.lock")
    return runner.held(path, wait, f"pid {os.getpid()}", lambda holder: Busy(
        f"another test session ({holder}) held {path} for {wait:.0f} s, longer than its builds may take"))


def built() -> tuple[str, str]:
    """The paths of version N and N+1 (Debian revisions 1 and 2) of today's sources, built if not cached."""
    build_deb = builder()
    out = os.path.join(BUILD, f"test-{build_deb.tree_hash(REPO)}")
    ver = build_deb.version(REPO)
    debs = tuple(os.path.join(out, f"ganeti-ceph_{ver}-{rev}_all.deb") for rev in REVISIONS)
    build_s = build_deb.BUILD_TIMEOUT + 60
    with _locked(len(REVISIONS) * build_s + 60):
        for old in glob.glob(os.path.join(BUILD, "test-*")):
            # Built from sources that are no more; a recent one may be what a concurrent session installs.
            if old != out and time.time() - os.path.getmtime(old) > KEEP_OTHERS_S:
                shutil.rmtree(old, ignore_errors=True)
        for rev, deb in zip(REVISIONS, debs, strict=True):
            if not os.path.exists(deb):
                runner.run([PYTHON, "-I", os.path.join(REPO, "packaging", "build_deb.py"), "--out", out,
                            "--revision", str(rev)], f"building {os.path.basename(deb)}",
                           timeout=build_s, env=dict(build_deb.ENV))
    return debs[0], debs[1]
