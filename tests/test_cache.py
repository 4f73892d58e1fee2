"""Installs and kernel caches: a read-only install caches in the user's directory (or
compiles in memory with one warning); a garbled cache entry is compiled again, never
loaded. Real processes, one small linear model on Numba (one kernel compiled cold)."""

import ctypes
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# import and fit under a warnings recorder; report where fastgd came from, where its
# kernels are cached, what was compiled (cache misses) and the warnings
SCRIPT = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np, fastgd
    from fastgd.backends.numba import cache, linear
    X = np.linspace(-1, 1, 64)
    result = fastgd.fit(X, 2 * X + 1, epochs=3, backend="numba", lr=0.1, seed=0)
print(json.dumps(dict(
    package=fastgd.__file__, root=cache.cache_root(),
    compiled=sum(sum(k.stats.cache_misses.values()) for k in linear.dispatchers()),
    warnings=[f"{w.category.__name__}: {w.message}" for w in caught],
    params=result.params.tolist())))
"""

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3
PR_CAPBSET_DROP = 24


def _without_root_overrides():
    """In the child before exec: root loses the capabilities that ignore file
    permissions, so that a read-only directory is read-only for it too."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run(site, home):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(PYTHONPATH=str(site), HOME=str(home))
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=str(home), capture_output=True,
        text=True, timeout=600, preexec_fn=_without_root_overrides,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _read_only(path):
    for folder, dirs, files in os.walk(path):
        for name in dirs + files + [""]:
            target = os.path.join(folder, name)
            os.chmod(target, os.stat(target).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))  # fmt: skip


def _writable_again(path):
    for folder, dirs, files in os.walk(path):
        for name in dirs + files + [""]:
            target = os.path.join(folder, name)
            os.chmod(target, os.stat(target).st_mode | stat.S_IWUSR)


def _garble(root):
    """Truncate every index file and flip bytes in the middle of every data file."""
    touched = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".nbi"):
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
            elif name.endswith(".nbc"):
                with open(path, "r+b") as f:
                    f.seek(os.path.getsize(path) // 2)
                    chunk = f.read(64)
                    f.seek(os.path.getsize(path) // 2)
                    f.write(bytes(b ^ 0x5A for b in chunk))
            else:
                continue
            touched += 1
    return touched


def _entries(root):
    return sorted(name for _, _, files in os.walk(root) for name in files if name.endswith(".nbc"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX permissions, Linux prctl")
def test_read_only_install_caches_in_the_user_directory_and_survives_a_garbled_cache(tmp_path):
    pytest.importorskip("numba")
    site, home = tmp_path / "site", tmp_path / "home"
    shutil.copytree(os.path.join(ROOT, "fastgd"), site / "fastgd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))  # fmt: skip
    home.mkdir()
    _read_only(site)
    try:
        first = _run(site, home)
        assert first["package"].startswith(str(site))
        assert first["root"].startswith(str(home)), first  # the package is not writable
        assert not os.path.exists(site / "fastgd" / "__pycache__")
        assert first["warnings"] == [] and first["compiled"] > 0
        assert _entries(first["root"])
        again = _run(site, home)
        assert again["compiled"] == 0 and again["params"] == first["params"]  # loaded

        assert _garble(first["root"]) >= 2
        garbled = _run(site, home)  # compiled again, not loaded, no crash
        assert garbled["compiled"] > 0 and garbled["params"] == first["params"]
        assert garbled["warnings"] == []
        rewritten = _run(site, home)
        assert rewritten["compiled"] == 0 and rewritten["params"] == first["params"]

        _read_only(home)  # nowhere to write: compiled in memory, one warning
        nowhere = _run(site, home)
        assert nowhere["root"] is None and nowhere["params"] == first["params"]
        assert len(nowhere["warnings"]) == 1 and nowhere["warnings"][0].startswith("CacheWarning")  # fmt: skip
    finally:
        _writable_again(tmp_path)


def test_checked_entries_are_misses_when_garbled_foreign_or_unindexed(tmp_path):
    pytest.importorskip("numba")
    from fastgd.backends.numba.cache import _CheckedFile

    entries = _CheckedFile(str(tmp_path), "kernel-12.py311", "source stamp")
    entries.save(("sig", 1), {"code": b"x" * 100})
    assert entries.load(("sig", 1)) == {"code": b"x" * 100}
    assert entries.load(("sig", 2)) is None
    path = tmp_path / entries._entry_name(("sig", 1))
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    assert entries.load(("sig", 1)) is None
    # another key's entry under this key's file name (what a concurrent writer could
    # leave with Numba's numbered files): refused, not loaded as this kernel
    entries.save(("sig", 2), "other kernel")
    os.replace(tmp_path / entries._entry_name(("sig", 2)), path)
    assert entries.load(("sig", 1)) is None
    (tmp_path / "kernel-12.py311.nbi").write_bytes(b"garbage")  # an unreadable index
    assert entries.load(("sig", 1)) is None
    entries.save(("sig", 3), 3.0)  # rewritten from scratch
    assert entries.load(("sig", 3)) == 3.0
