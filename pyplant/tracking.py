"""External inputs a reactor reads: files, directory listings and environment variables.

While a reactor's code runs, a Python audit hook (PEP 578, ``sys.addaudithook``) sees every
``open`` of a file and every ``os.listdir``/``os.scandir``, and a wrapper around
``os.environ``'s item lookup and iteration sees every environment variable read
(``os.environ[...]``, ``.get``, ``os.getenv``, ``in``, the same through ``os.environb`` and
``os.getenvb``) and every listing of their names (``for k in os.environ``, ``.keys()``: the
entry ``ENV_NAMES``). When the reactor finishes, its trace records::

    files  {path: content hash}    regular files opened read-only, outside the plant directory,
                                   the standard library, site-packages and Python sources
    dirs   {path: listing hash}    directories listed (hash of the sorted entry names)
    env    {name: value or None}   environment variables read (None: it was unset)

and a later run re-runs the reactor when one of them changed. A file hash is cached by
``(device, inode, size, mtime_ns)`` (``FileHashes``), so a warm run stats a big input file
instead of reading it; a file modified within ``RACY_SECONDS`` of being hashed is hashed again
next time, since the file clock is coarse (git's "racy" rule). A file that changed while the
reactor had it open gets a hash that never verifies, so the reactor runs again.

Not seen: files opened by C code that bypasses Python's ``open`` (h5py, some image and NetCDF
loaders) -- use ``pipe.track_file(path)``; files the reactor also writes (they are its
outputs); ``os.path.exists`` and ``os.stat`` checks; environment variables read by a
subprocess.

The hook is process-wide (audit hooks cannot be removed), costs one set lookup per audit event
outside reactors, and finds the recorder of the reactor running in this context
(``running.active_run``). Threads a reactor starts have a context of their own: their reads are
credited to the running reactor when exactly one reactor is stepping in the process.
"""
from __future__ import annotations

import logging
import os
import site
import stat
import sys
import sysconfig
import threading
import time
from typing import Any, Callable, Protocol

from . import hashing
from .running import active_run

logger = logging.getLogger(__name__)

RACY_SECONDS = 2.0
_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd")
_SYSTEM_ROOTS = ("/dev/", "/proc/", "/sys/")
CHANGED_WHILE_READ = "changed-while-read"

_stepping: list["InputRecorder"] = []  # recorders of the reactor steps running now (any thread)
_install_lock = threading.Lock()
_installed = False


class HashStore(Protocol):
    """A persistent map {real path: (device, inode, size, mtime_ns, hashed_at, hash)}."""
    def get_file_hash(self, path: str) -> tuple | None: ...
    def put_file_hash(self, path: str, entry: tuple) -> None: ...


class FileHashes:
    """Content hashes of input files, cached by their stat signature (see the module docstring).

    Parameters
    ----------
    store : HashStore, optional
        Where entries persist across processes (the plant's LMDB); a dict in memory without it.
    """

    def __init__(self, store: HashStore | None = None):
        self._store = store
        self._memory: dict[str, tuple] = {}

    def digest(self, path: str) -> str | None:
        """The content hash of the regular file at ``path``, or None when it is missing."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        signature = _signature(st)
        entry = self._memory.get(path)
        if entry is None and self._store is not None:
            entry = self._store.get_file_hash(path)
        if entry is not None and tuple(entry[:4]) == signature \
                and st.st_mtime_ns / 1e9 < entry[4] - RACY_SECONDS:
            return entry[5]
        hashed_at = time.time()
        try:
            digest = hashing.file_hash(path)
        except OSError:
            return None
        entry = (*signature, hashed_at, digest)
        self._memory[path] = entry
        if self._store is not None:
            self._store.put_file_hash(path, entry)
        return digest


def listing_hash(path: str) -> str | None:
    """Hash of the sorted entry names of a directory, or None when it is not one."""
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return None
    return hashing.digest("listing", *names)


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class InputRecorder:
    """What one reactor run reads from outside the plant; see the module docstring.

    Parameters
    ----------
    plant_dir : str
        The plant directory: files inside it are ingredients, not external inputs.
    files, env : bool
        Record files and directory listings; record environment variables.
    resolved : bool
        ``plant_dir`` is already a real path (a plant resolves it once, not once per run).
    """

    def __init__(self, plant_dir: str, files: bool = True, env: bool = True, resolved: bool = False):
        self.plant_root = (plant_dir if resolved else os.path.realpath(plant_dir)) + os.sep
        self.track_files = files
        self.track_env = env
        self.opened: dict[str, tuple | None] = {}   # {absolute path: stat signature at open}
        self.written: set[str] = set()
        self.listed: set[str] = set()
        self.env: dict[str, str | None] = {}

    def note_open(self, path: Any, flags: Any) -> None:
        if not self.track_files or isinstance(path, int):
            return
        path = os.path.abspath(os.fsdecode(path))
        if path.endswith(_CODE_SUFFIXES) or path.startswith(_SYSTEM_ROOTS):
            return
        if isinstance(flags, int) and flags & (os.O_ACCMODE | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            self.written.add(path)  # opened for writing: an output of the reactor, not an input
            return
        if path not in self.opened:
            try:
                self.opened[path] = _signature(os.stat(path))
            except OSError:
                self.opened[path] = None

    def track_file(self, path: Any) -> None:
        """Record ``path`` as read (for readers the audit hook cannot see)."""
        path = os.path.abspath(os.fsdecode(os.fspath(path)))
        if os.path.isdir(path):
            self.listed.add(path)
            return
        if path not in self.opened:
            try:
                self.opened[path] = _signature(os.stat(path))
            except OSError:
                self.opened[path] = None

    def note_listing(self, path: Any) -> None:
        if not self.track_files or isinstance(path, int):
            return
        self.listed.add(os.path.abspath(os.fsdecode(path if path is not None else ".")))

    def note_env(self, name: Any, value: str | None) -> None:
        if self.track_env and isinstance(name, str) and name not in self.env:
            self.env[name] = value

    def finish(self, hashes: FileHashes) -> tuple[dict[str, str], dict[str, str], dict[str, str | None]]:
        """Hash what was read: ``(files, dirs, env)`` as the trace records them."""
        files: dict[str, str] = {}
        for path, at_open in self.opened.items():
            if path in self.written:
                continue
            real = os.path.realpath(path)
            if not self._is_external(real):
                continue
            digest = hashes.digest(real)
            if digest is None:
                continue  # gone, or not a regular file (a FIFO, a device)
            try:
                now = _signature(os.stat(real))
            except OSError:
                continue
            files[real] = digest if at_open in (None, now) else CHANGED_WHILE_READ
        dirs = {}
        for path in self.listed:
            real = os.path.realpath(path)
            if self._is_external(real + os.sep):
                digest = listing_hash(real)
                if digest is not None:
                    dirs[real] = digest
        return files, dirs, dict(self.env)

    def _is_external(self, real: str) -> bool:
        if real.startswith(self.plant_root) or real.startswith(_SYSTEM_ROOTS):
            return False
        return not real.startswith(_library_roots())


def _library_roots() -> tuple[str, ...]:
    from .scope import _library_roots as roots  # the one definition of "library"
    prefixes = {os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return tuple(roots()) + tuple(prefixes)


def current_recorder() -> InputRecorder | None:
    """The recorder of the reactor running in this context, else the only one stepping."""
    run = active_run.get()
    if run is not None:
        return getattr(run, "external", None)
    stepping = _stepping
    return stepping[0] if len(stepping) == 1 else None


def stepping(recorder: InputRecorder | None) -> "_Stepping":
    """Context manager around one step of a reactor's generator."""
    return _Stepping(recorder)


class _Stepping:
    __slots__ = ("recorder",)

    def __init__(self, recorder: InputRecorder | None):
        self.recorder = recorder

    def __enter__(self) -> None:
        if self.recorder is not None:
            _stepping.append(self.recorder)

    def __exit__(self, *exc: Any) -> None:
        if self.recorder is not None:
            try:
                _stepping.remove(self.recorder)
            except ValueError:
                pass


def _audit(event: str, args: tuple, _events: frozenset = _EVENTS) -> None:
    # _EVENTS bound at definition: the hook outlives the module's globals at interpreter exit
    if event not in _events or current_recorder is None:  # None: the module is torn down
        return
    recorder = current_recorder()
    if recorder is None:
        return
    try:
        if event == "open":
            recorder.note_open(args[0], args[2] if len(args) > 2 else None)
        elif not _importing(sys._getframe(1)):  # the import system lists sys.path entries
            recorder.note_listing(args[0] if args else None)
    except Exception as exc:  # an audit hook must never break the reactor's own open()
        logger.debug("input tracking skipped %s %r: %s", event, args[:1], exc)


def _importing(frame: Any, depth: int = 4) -> bool:
    """True when the caller is the import system (looking for a module, not reading data)."""
    while frame is not None and depth > 0:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame, depth = frame.f_back, depth - 1
    return False


# The trace's env entry for the set of variable names (iterating os.environ, .keys()): no
# variable's name can hold '=', so it is never the name of a variable.
ENV_NAMES = "=names"


def env_value(env: Any, name: str) -> str | None:
    """What a trace's ``env`` entry ``name`` is now in ``env`` (``os.environ``): the value of
    the variable, None when unset; for ``ENV_NAMES``, the hash of the sorted variable names."""
    if name == ENV_NAMES:
        iterate = getattr(type(env).__iter__, "_pyplant_original", None)  # reading is no input
        return hashing.digest("env-names", *sorted(iterate(env) if iterate else env))
    return env.get(name)


def _decoded(key: Any, value: Any) -> tuple[Any, Any]:
    """A read of ``os.environb`` as the read of ``os.environ`` it stands for (they share data)."""
    try:
        return os.fsdecode(key), None if value is None else os.fsdecode(value)
    except TypeError:
        return None, None


def _wrap_environ_getitem(original: Callable) -> Callable:
    def __getitem__(self: Any, key: Any) -> Any:
        try:
            value = original(self, key)
        except KeyError:
            if self is os.environ:
                _note_env(key, None)
            elif self is _ENVIRONB:
                _note_env(*_decoded(key, None))
            raise
        if self is os.environ:
            _note_env(key, value)
        elif self is _ENVIRONB:
            _note_env(*_decoded(key, value))
        return value
    __getitem__._pyplant_original = original  # type: ignore[attr-defined]
    return __getitem__


def _wrap_environ_iter(original: Callable) -> Callable:
    def __iter__(self: Any) -> Any:
        if (self is os.environ or self is _ENVIRONB) and current_recorder() is not None:
            names = sorted(original(os.environ))  # the names themselves are read
            _note_env(ENV_NAMES, hashing.digest("env-names", *names))
        return original(self)
    __iter__._pyplant_original = original  # type: ignore[attr-defined]
    return __iter__


_ENVIRONB = getattr(os, "environb", None)  # POSIX only


def _note_env(key: Any, value: str | None) -> None:
    recorder = current_recorder()
    if recorder is not None and not _library_import(sys._getframe(2)):
        recorder.note_env(key, value)


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.update(getattr(site, "getsitepackages", lambda: [])())
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


_LIBRARY_DIRS = _library_dirs()
_library_file: dict[str, bool] = {}


def _library_import(frame: Any, depth: int = 80) -> bool:
    """True when a variable is read while an installed library's module is being imported
    (scikit-learn sets and reads ``KMP_DUPLICATE_LIB_OK`` at import): the library's own set-up,
    not an input of the reactor that imported it. The innermost module body on the stack
    decides; a user module read at import time stays an input."""
    while frame is not None and depth > 0:
        code = frame.f_code
        if code.co_name == "<module>":
            caller = frame.f_back
            if caller is None or not caller.f_code.co_filename.startswith("<frozen importlib"):
                return False  # a script or `python -m` body: not an import
            name = code.co_filename
            found = _library_file.get(name)
            if found is None:
                found = _library_file[name] = os.path.realpath(name).startswith(_LIBRARY_DIRS)
            return found
        frame, depth = frame.f_back, depth - 1
    return False


def install() -> None:
    """Install the audit hook and the ``os.environ`` wrapper, once per process."""
    global _installed
    with _install_lock:
        if _installed:
            return
        sys.addaudithook(_audit)
        environ_type = type(os.environ)
        if not hasattr(environ_type.__getitem__, "_pyplant_original"):
            environ_type.__getitem__ = _wrap_environ_getitem(environ_type.__getitem__)
        if not hasattr(environ_type.__iter__, "_pyplant_original"):
            environ_type.__iter__ = _wrap_environ_iter(environ_type.__iter__)
        _installed = True


def display_path(path: str) -> str:
    """``path`` relative to the working directory when under it, for messages."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


__all__ = ["InputRecorder", "FileHashes", "install", "stepping", "current_recorder",
           "listing_hash", "display_path", "CHANGED_WHILE_READ", "ENV_NAMES", "env_value"]
