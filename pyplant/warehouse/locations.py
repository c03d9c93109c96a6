"""Where each version lives: the one definition of storage names and locations.

Every path the warehouse writes, reads, frees or sweeps is derived here from an ingredient
name and a per-version token; anything else is refused. A location is relative to the plant
directory:

=========================  ===================================================================
``blobs/ab/cdef...<sfx>``  a content-addressed blob (shared by every version with that content)
``files/<storage>/<base>``  a file ingredient; ``<base>`` is one plain file name
``<storage>``               a spec's storage name; the spec writes ``specs/<storage>*``
=========================  ===================================================================

with ``<storage>`` = ``[temp-]<safe ingredient name>@<16 hex digits>``. The *owner* of a
location (``owner``) is what GC keeps or deletes as a unit: a blob, a file ingredient's
directory, or every ``specs/`` file of one storage name.

Paths are resolved (symlinks followed) before they are trusted: ``resolve`` refuses a location
whose real path leaves the plant directory, so a symlink planted in ``blobs/`` or a symlinked
``specs/`` directory is never read, written or swept through.
"""
from __future__ import annotations

import os
import re
import uuid

TOKEN_HEX = 16
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
STORAGE = re.compile(r"(temp-)?[A-Za-z0-9._-]*@[0-9a-f]{%d}" % TOKEN_HEX)
_BLOB = re.compile(r"blobs/[0-9a-f]{2}/[0-9a-f]+\.[a-z]+")
TOPS = ("blobs", "files", "specs")


class LocationError(ValueError):
    """A location that no rule of this module derives (tampered metadata, a bad file name)."""


def storage_name(ingredient: str, temp: bool = False) -> str:
    """A file-system-safe name unique to one version of ``ingredient``."""
    safe = _SAFE.sub("_", ingredient)[:80]
    return f"{'temp-' if temp else ''}{safe}@{uuid.uuid4().hex[:TOKEN_HEX]}"


def is_storage_name(name: str) -> bool:
    """True when ``name`` is a storage name (``[temp-]<safe name>@<16 hex digits>``)."""
    return STORAGE.fullmatch(name) is not None


def check_basename(basename: str) -> str:
    """``basename`` when it is one plain file name (no separator, not ``.``/``..``, no NUL).

    Raises
    ------
    LocationError
        otherwise: a file ingredient stays inside its own version's directory.
    """
    if not isinstance(basename, str) or basename in ("", ".", "..") or "/" in basename \
            or "\0" in basename or (os.altsep and os.altsep in basename) or len(basename.encode(
                "utf-8", "surrogatepass")) > 255:
        raise LocationError(f"file name {basename!r} must be one plain file name (no '/', not "
                            f"'.' or '..', at most 255 bytes): it is stored in the version's "
                            f"own directory")
    return basename


def default_basename(ingredient: str) -> str:
    """The file name of a file ingredient allocated without ``filename=``."""
    base = _SAFE.sub("_", ingredient.rsplit("/", 1)[-1])[:120]
    return base if base.strip(".") else "file"


def file_location(storage: str, basename: str) -> str:
    """The location of a file ingredient's file (``LocationError`` for a bad ``basename``)."""
    return f"files/{storage}/{check_basename(basename)}"


def blob_location(content_hash: str, suffix: str) -> str:
    """The location of the blob of ``content_hash`` (hex) with ``suffix`` (``.npy``)."""
    return f"blobs/{content_hash[:2]}/{content_hash[2:]}{suffix}"


def owner(location: str) -> str | None:
    """The unit GC keeps or deletes for a location, or None when no rule derives it.

    ``blobs/ab/cd.npy`` -> itself; ``files/<storage>/<base>`` -> ``files/<storage>``;
    a storage name or ``specs/<storage>.<ext>`` -> ``specs/<storage>``.
    """
    parts = location.split("/")
    if parts[0] == "blobs":
        return location if _BLOB.fullmatch(location) else None
    if parts[0] == "files":
        return f"files/{parts[1]}" if len(parts) >= 2 and is_storage_name(parts[1]) else None
    if parts[0] == "specs" and len(parts) >= 2:
        match = STORAGE.match(parts[1])
        return f"specs/{match.group(0)}" if match else None
    if len(parts) == 1 and is_storage_name(location):
        return f"specs/{location}"
    return None


KINDS = ("blob", "file", "spec")


def check(location: str, kind: str) -> str:
    """``location`` when a rule of this module derives it for a location of ``kind``.

    Parameters
    ----------
    location : str
        Relative to the plant directory.
    kind : str
        ``'blob'`` (``blobs/ab/<hex>.<suffix>``), ``'file'`` (``files/<storage>/<name>``) or
        ``'spec'`` (a storage name), as a codec's ``location_kind`` says.

    Raises
    ------
    LocationError
        for anything else (an absolute path, ``..``, a name no rule makes, an unknown kind).
    """
    parts = location.split("/") if isinstance(location, str) else []
    if kind == "file":
        ok = len(parts) == 3 and parts[0] == "files" and is_storage_name(parts[1]) \
            and parts[2] not in ("", ".", "..")
    elif kind == "blob":
        ok = _BLOB.fullmatch(location or "") is not None
    else:
        ok = kind == "spec" and is_storage_name(location or "")
    if not ok:
        raise LocationError(f"location {location!r} is not a storage location of a "
                            f"'{kind}' version")
    return location


class Root:
    """The plant directory, for turning locations into paths that are safe to use."""

    def __init__(self, plant_dir: str):
        self.path = os.path.abspath(plant_dir)
        self.real = os.path.realpath(plant_dir)

    def path_of(self, location: str) -> str:
        """The path of ``location`` under the plant directory, after checking that its real
        path (symlinks resolved) stays inside.

        Raises
        ------
        LocationError
            when it leaves the plant directory (``..``, an absolute path, a symlink out).
        """
        if not isinstance(location, str) or os.path.isabs(location) or "\0" in location:
            raise LocationError(f"location {location!r} is outside the plant directory {self.path!r}")
        path = os.path.normpath(os.path.join(self.path, location))
        real = os.path.realpath(path)
        if not (real.startswith(self.real + os.sep) and path.startswith(self.path + os.sep)):
            raise LocationError(f"location {location!r} resolves to {real!r}, outside the plant "
                                f"directory {self.path!r}")
        return path

    def path_for_write(self, location: str) -> str:
        """The path at which to create ``location``: its directory is created and must resolve
        inside the plant directory; a symlink in its place is removed (never followed).

        Raises ``LocationError`` when the directory leads out of the plant directory.
        """
        path = self.lexical(location)  # refuses a directory leading out
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        if not self.is_inside(os.path.join(directory, "x")):  # created through a symlink
            raise LocationError(f"directory {directory!r} resolves to {os.path.realpath(directory)!r}, "
                                f"outside the plant directory {self.path!r}")
        if os.path.islink(path):
            os.unlink(path)
        return path

    def lexical(self, location: str) -> str:
        """The path of ``location`` without resolving symlinks (to remove a link itself)."""
        if not isinstance(location, str) or os.path.isabs(location) or "\0" in location:
            raise LocationError(f"location {location!r} is outside the plant directory {self.path!r}")
        path = os.path.normpath(os.path.join(self.path, location))
        directory = os.path.dirname(path)
        if not path.startswith(self.path + os.sep) or not self.is_inside(os.path.join(directory, "x")):
            raise LocationError(f"location {location!r} resolves to "
                                f"{os.path.join(os.path.realpath(directory), os.path.basename(path))!r}, "
                                f"outside the plant directory {self.path!r}")
        return path

    def is_inside(self, path: str) -> bool:
        """True when ``path`` (absolute) resolves inside the plant directory."""
        return os.path.realpath(path).startswith(self.real + os.sep)
