"""The disk cache of the Numba kernels: where it lives, and entries that cannot go wrong.

Numba's own ``cache=True`` keeps a kernel next to its source file (``__pycache__``) and
checks only that file's contents; fastgd's kernels inline functions from other modules
(the update, the losses, the stopping rules), whose changes it would not see. And a
garbled index or data file raises, or loads wrong code. Here, for fastgd's functions only
(:func:`njit` replaces ``numba.njit`` in this package; other libraries' caches are left
alone):

- **One stamped directory.** Every kernel of a process is cached under
  ``numba-py<version>-<stamp>``, the stamp hashing Numba's, llvmlite's and Python's versions and the
  sources of every module the kernels are compiled from (:data:`SOURCES`; a new fastgd
  version changes them). A changed install or source never reads an old entry. The directory is, in order:
  ``$NUMBA_CACHE_DIR/fastgd`` if the user set it; ``fastgd/__pycache__`` in the package
  (older stamps there are deleted); the user's cache directory (``~/.cache/fastgd``)
  when the package is read-only (a system ``site-packages``); else kernels are compiled
  in memory in each process, with one :class:`CacheWarning`.
- **Checked entries.** A data file holds its key and a SHA-256 of its contents and is
  named after its key: a truncated or garbled file, or one holding another kernel, is a
  miss (compiled again and rewritten), never loaded; an unreadable index is an empty
  one. Two processes compiling the same kernel at once write the same file name with
  the same contents (each write is atomic: Numba writes a temporary file and renames it),
  so neither can leave an index pointing at the other's code. Any other error while
  loading or saving an entry is a miss, not a crash.
"""

import functools
import hashlib
import os
import pickle
import sys
import warnings

import numba
from numba.core import caching

_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the modules the kernels are compiled from (inlined functions included), relative to fastgd/
SOURCES = ("_config.py", "backends/numba", "specs")
_MAGIC = b"fastgd-numba-entry-1\n"
# the parts of numba.core.caching built on here (present from Numba 0.59 to 0.68 at
# least); without them, Numba's own cache is used
_NUMBA_PARTS = ("_SourceFileBackedLocatorMixin", "_CacheLocator", "CompileResultCacheImpl",
                "IndexDataCacheFile", "FunctionCache")  # fmt: skip
_SUPPORTED = all(hasattr(caching, name) for name in _NUMBA_PARTS)
_base = functools.partial(getattr, caching)


class _Missing:
    """Stands in for a missing part of numba.core.caching (then unused)."""


class CacheWarning(UserWarning):
    """fastgd's compiled kernels cannot be cached on disk in this process."""


def _source_files():
    for entry in SOURCES:
        path = os.path.join(_PACKAGE, entry)
        if os.path.isdir(path):
            yield from sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".py"))
        else:
            yield path


@functools.cache
def stamp():
    """Hex digest of Numba's, llvmlite's and Python's versions and the kernels' sources."""
    import llvmlite

    digest = hashlib.sha256()
    for part in (numba.__version__, llvmlite.__version__, sys.version):
        digest.update(part.encode() + b"\0")
    for path in _source_files():
        digest.update(os.path.relpath(path, _PACKAGE).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _writable(directory):
    """True if ``directory`` exists or can be made, and a file can be written in it."""
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".probe-{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
        return True
    except OSError:
        return False


def _user_cache_dir():
    try:
        from numba.misc.appdirs import AppDirs

        return AppDirs("fastgd", appauthor=False).user_cache_dir
    except ImportError:  # pragma: no cover - Numba has vendored appdirs for years
        return os.path.join(os.path.expanduser("~"), ".cache", "fastgd")


def _prefix():
    """Directories of this Python version (another version's are left alone)."""
    return f"numba-py{sys.version_info[0]}{sys.version_info[1]}-"


def _prune(parent, keep):
    """Delete the other stamp directories of this Python version in ``parent`` (stale)."""
    import shutil

    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if name.startswith(_prefix()) and name != keep:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@functools.cache
def cache_root():
    """The directory of this process's kernel cache, or None (compiled in memory)."""
    name = _prefix() + stamp()
    if numba.config.CACHE_DIR:
        candidates = [(os.path.join(numba.config.CACHE_DIR, "fastgd"), False)]
    else:
        candidates = [(os.path.join(_PACKAGE, "__pycache__"), True), (_user_cache_dir(), False)]
    for parent, prune in candidates:
        if _writable(os.path.join(parent, name)):
            if prune:
                _prune(parent, name)
            return os.path.join(parent, name)
    tried = ", ".join(os.path.join(parent, name) for parent, _ in candidates)
    warnings.warn(
        f"fastgd cannot cache its compiled kernels on disk (not writable: {tried}), so "
        "each new process compiles the kernels it uses again (seconds per kernel). Set "
        "NUMBA_CACHE_DIR to a writable directory to keep them.",
        CacheWarning,
        stacklevel=2,
    )
    return None


class _Locator(_base("_SourceFileBackedLocatorMixin", _Missing), _base("_CacheLocator", object)):
    """Caches fastgd's functions under :func:`cache_root`, mirroring the package layout."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        relative = os.path.relpath(os.path.dirname(os.path.abspath(py_file)), _PACKAGE)
        self._cache_path = os.path.join(cache_root(), relative)

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        inside = os.path.abspath(py_file).startswith(_PACKAGE + os.sep)
        if cache_root() is None or not inside:
            return None
        return super().from_function(py_func, py_file)


class _Impl(_base("CompileResultCacheImpl", object)):
    _locator_classes = [_Locator]


class _CheckedFile(_base("IndexDataCacheFile", object)):
    """Numba's index and data files, with each data file named after and checked
    against its key, and a digest of its contents."""

    def _entry_name(self, key):
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
        return self._data_name_pattern.replace("{number:d}", digest)

    def save(self, key, data):
        name = self._entry_name(key)
        self._save_data(name, (key, data))  # the data first: an index never points at nothing
        overloads = self._load_index()
        overloads[key] = name
        self._save_index(overloads)

    def load(self, key):
        name = self._load_index().get(key)
        if name is None:
            return None
        try:
            stored_key, data = self._load_data(name)
        except Exception:  # missing, truncated, garbled: a miss
            return None
        return data if stored_key == key else None

    def _load_index(self):
        try:
            return super()._load_index()
        except Exception:  # a garbled index: empty, rewritten at the next save
            return {}

    def _save_data(self, name, data):
        payload = self._dump(data)
        with self._open_for_write(self._data_path(name)) as f:
            f.write(_MAGIC + hashlib.sha256(payload).digest() + payload)

    def _load_data(self, name):
        with open(self._data_path(name), "rb") as f:
            raw = f.read()
        head = len(_MAGIC) + 32
        payload = raw[head:]
        if raw[: len(_MAGIC)] != _MAGIC or hashlib.sha256(payload).digest() != raw[len(_MAGIC) : head]:  # fmt: skip
            raise ValueError(f"corrupt cache entry {name}")
        return pickle.loads(payload)


class GuardedCache(_base("FunctionCache", object)):
    """A Numba function cache over :class:`_CheckedFile` under :func:`cache_root`, whose
    load and save errors are misses."""

    _impl_class = _Impl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _CheckedFile(
            cache_path=self._cache_path,
            filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp(),
        )

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception:  # an entry that cannot be rebuilt: compile it again
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception:  # e.g. the directory went away: the kernel runs from memory
            pass


def enable_cache(dispatcher):
    """Give a dispatcher of fastgd's a :class:`GuardedCache` (nothing where
    :func:`cache_root` is None, or where the function is not fastgd's)."""
    try:
        dispatcher._cache = GuardedCache(dispatcher.py_func)
    except RuntimeError:  # no locator: not cached (compiled in each process)
        pass
    return dispatcher


def njit(*args, **options):
    """``numba.njit`` for fastgd's kernels: ``cache=True`` means :class:`GuardedCache`."""
    cache = options.pop("cache", False)

    def decorate(function):
        if not _SUPPORTED:  # another Numba: its own cache
            return numba.njit(cache=cache, **options)(function)
        dispatcher = numba.njit(**options)(function)
        return enable_cache(dispatcher) if cache else dispatcher

    if args and callable(args[0]):
        return decorate(args[0])
    return decorate
