"""The rules that name every location (warehouse/locations.py), case by case: they decide what
a freed version removes and what GC keeps, so a location no rule derives must be refused."""
from __future__ import annotations

import pytest

from pyplant.warehouse import locations
from pyplant.warehouse.locations import LocationError

S = "data@0123456789abcdef"  # a storage name
BLOB = "blobs/ab/cdef0123.npy"


@pytest.mark.parametrize("location, kind", [
    (f"files/{S}/x.csv", "file"), (f"files/temp-{S}/plot.png", "file"), (BLOB, "blob"), (S, "spec"),
])
def test_a_derived_location_is_accepted(location, kind):
    assert locations.check(location, kind) == location


@pytest.mark.parametrize("location, kind", [
    (f"files/{S}/", "file"), (f"files/{S}/.", "file"), (f"files/{S}/..", "file"),
    (f"files/{S}", "file"), (f"files/{S}/a/b", "file"), (f"blobs/{S}/x.csv", "file"),
    ("files/data/x.csv", "file"), (f"files/../{S}/x", "file"), (None, "file"),
    ("blobs/ab/cdef0123", "blob"), ("blobs/abc/cdef.npy", "blob"), ("blobs/ab/../../x.npy", "blob"),
    (None, "blob"), ("", "blob"), (f"{S}/x", "spec"), ("data", "spec"), (None, "spec"),
    (S, "directory"),
])
def test_a_location_no_rule_derives_is_refused(location, kind):
    with pytest.raises(LocationError):
        locations.check(location, kind)


@pytest.mark.parametrize("location, owner", [
    (BLOB, BLOB), ("blobs/ab/cd", None), ("blobs/x", None),
    (f"files/{S}/x.csv", f"files/{S}"), (f"files/{S}", f"files/{S}"), ("files/data/x.csv", None),
    ("files", None), (f"specs/{S}.hdf", f"specs/{S}"), (f"specs/{S}", f"specs/{S}"),
    ("specs/other.hdf", None), ("specs", None), (S, f"specs/{S}"), ("meta.lmdb", None),
    (f"leases/{S}", None), (f"x/{S}", None),
])
def test_the_owner_gc_keeps_or_deletes(location, owner):
    assert locations.owner(location) == owner


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b", "x" * 256, "é" * 128, 3])
def test_a_file_name_must_be_one_plain_name(name):
    with pytest.raises(LocationError, match="must be one plain file name"):
        locations.check_basename(name)


@pytest.mark.parametrize("name", ["x", "..x", "a.b", "x" * 255, "é" * 127])
def test_a_plain_file_name_up_to_255_bytes_is_accepted(name):
    assert locations.check_basename(name) == name


@pytest.mark.parametrize("ingredient, basename", [
    ("plot.png", "plot.png"), ("a b/c:d", "c_d"), ("x/y/z.csv", "z.csv"), (".", "file"),
    ("..", "file"), ("sub/.", "file"), ("n" * 200, "n" * 120), ("a*b", "a_b"),
])
def test_the_default_file_name_of_an_ingredient(ingredient, basename):
    assert locations.default_basename(ingredient) == basename


def test_a_blob_location_shards_by_the_first_two_hex_digits():
    assert locations.blob_location("abcdef0123", ".npy") == "blobs/ab/cdef0123.npy"
