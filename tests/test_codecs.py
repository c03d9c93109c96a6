"""Codecs: one per ingredient type, dispatched by type key; adding a type is one class and one
registration; only damage is a CorruptVersionError, a bug in a spec or codec is a SpecError."""
from __future__ import annotations

import errno
import glob
import logging
import os
import pickle
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import pyplant.specs
from pyplant import IngredientTypeSpec, ReactorFunc, specs
from pyplant.errors import (AllocationError, CorruptVersionError, IngredientTypeError,
                            InvalidOperationException, PyPlantError, SerializationError, SpecError,
                            WarehouseError)
from pyplant.warehouse.codecs import INLINE_MAX_BYTES, BytesCodec, Codec, Registry
from pyplant.warehouse.records import Version

from conftest import Box, result_of, run_script, write_script


@pytest.fixture
def warehouse(open_plant):
    plant, _ = open_plant()
    return plant.warehouse


# --- dispatch and inference ----------------------------------------------------------------------

class Thing:
    pass


@pytest.mark.parametrize("value, key", [
    (1, "simple"), ("s", "simple"), (None, "simple"), (b"b", "simple"), ([1, 2], "list"),
    ((1, 2), "object"), ({"a": 1}, "object"), (Thing(), "object"), (np.arange(3), "array"),
    (np.ma.masked_array([1, 2]), "object"), (np.array([None, 1], dtype=object), "object"),
    (sp.csr_matrix(np.eye(2)), "scipy_sparse"), (True, "simple"),
    # structured and void arrays are pickled: .npy cannot describe every layout of fields
    (np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]), "object"), (np.zeros(2, dtype="V4"), "object"),
    (np.zeros(2, dtype={"names": ["a", "b"], "formats": ["<i4", "<f4"], "offsets": [4, 0]}), "object"),
])
def test_values_sent_without_a_type_get_the_codec_that_accepts_them(warehouse, value, key):
    assert warehouse.infer_type(value) == key
    stored = warehouse.store("x", value, key)
    assert stored.version.type == key


def test_an_hdf_dataset_is_inferred_as_hdf(warehouse, tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        assert warehouse.infer_type(f.create_dataset("d", data=np.arange(3))) == "hdf_array"


class TaggedCodec(BytesCodec):
    """A custom codec for Thing: registered after the built-ins, inferred before 'object'."""
    key = "thing"
    suffix = ".thing"

    def __init__(self, tag="v1"):
        self.tag = tag

    def accepts(self, value):
        return isinstance(value, Thing)

    def encode(self, value):
        return pickle.dumps(value), {"tag": self.tag}

    def decode(self, data, meta):
        return pickle.loads(data)


def test_a_registered_codec_is_inferred_and_a_new_registration_replaces_it(warehouse):
    warehouse.register_codecs([TaggedCodec("v1")])
    assert warehouse.infer_type(Thing()) == "thing" and warehouse.infer_type((1,)) == "object"
    warehouse.register_codecs([TaggedCodec("v2")])
    assert warehouse.store("t", Thing(), "thing").version.meta == {"tag": "v2"}
    assert [c.key for c in warehouse.codecs].count("thing") == 1


def test_unknown_types_are_refused_with_an_ingredient_type_error(warehouse):
    with pytest.raises(IngredientTypeError, match="unknown ingredient type 'nope'") as info:
        warehouse.store("x", 1, "nope")
    assert isinstance(info.value, AllocationError) and isinstance(info.value, TypeError)
    with pytest.raises(IngredientTypeError, match="no key"):
        Registry([], TaggedCodec()).register(type("Keyless", (TaggedCodec,), {"key": ""})())
    assert Registry([], TaggedCodec()).infer(1) == "thing"  # no codec but the fallback


def test_a_version_of_an_unregistered_type_is_recomputed(warehouse):
    version = Version("x", "gone_codec", "h" * 32, None, b"data")
    with pytest.raises(CorruptVersionError, match="'gone_codec', which is not registered"):
        warehouse.load(version)


# --- BytesCodec: inline, blobs, damage and bugs ------------------------------------------------

def test_bytes_codec_stores_inline_up_to_its_limit_then_in_a_blob(warehouse):
    class Small(TaggedCodec):
        inline_max = 100

    warehouse.register_codecs([Small()])
    thing = Thing()
    thing.pad = b""
    inline = warehouse.store("t", thing, "thing").version
    thing.pad = b"x" * 200
    blobbed = warehouse.store("t", thing, "thing").version
    assert inline.inline is not None and inline.location is None
    assert blobbed.inline is None and blobbed.location.endswith(".thing")
    assert warehouse.load(blobbed).pad == b"x" * 200
    Path(warehouse.plantDir, blobbed.location).write_bytes(b"altered")
    with pytest.raises(CorruptVersionError, match="do not match their content hash"):
        warehouse.load(blobbed)


def test_a_decode_that_raises_on_intact_bytes_is_a_spec_error(warehouse):
    class Broken(TaggedCodec):
        def decode(self, data, meta):
            raise KeyError("a bug")

    warehouse.register_codecs([Broken()])
    version = warehouse.store("t", Thing(), "thing").version
    with pytest.raises(SpecError, match="codec 'thing' failed to decode ingredient 't': KeyError: 'a bug'") as info:
        warehouse.load(version)
    assert (info.value.spec, info.value.ingredient, info.value.version) == ("thing", "t", version)
    assert isinstance(info.value.__cause__, KeyError)


def test_a_pickle_that_no_longer_unpickles_is_recomputed(warehouse):
    """Intact bytes (their hash matches) naming a class that is gone: recomputed, since they
    cannot be used here; altered bytes are never unpickled at all."""
    version = warehouse.store("t", Thing(), "object").version
    data = version.inline.replace(b"Thing", b"Gone_")
    gone = Version(version.name, version.type, pyplant.hashing.bytes_hash(data, "pickle"), None, data,
                   version.meta, len(data))
    with pytest.raises(CorruptVersionError, match="cannot be unpickled: AttributeError"):
        warehouse.load(gone)
    altered = Version(version.name, version.type, version.content_hash, None, data, version.meta, len(data))
    with pytest.raises(CorruptVersionError, match="do not match their content hash"):
        warehouse.load(altered)


# --- a DataFrame codec, added through the public registration path -----------------------------

DATAFRAME_CODEC = '''
"""A pandas DataFrame codec: Parquet when pyarrow is installed, else pickled."""
import io
import pickle

import pandas as pd

from pyplant.warehouse.codecs import BytesCodec

try:
    import pyarrow  # noqa: F401
    PARQUET = True
except ImportError:
    PARQUET = False


class DataFrameCodec(BytesCodec):
    key = "dataframe"
    suffix = ".df"

    def accepts(self, value):
        return isinstance(value, pd.DataFrame)

    def encode(self, df):
        if PARQUET:
            buffer = io.BytesIO()
            df.to_parquet(buffer)
            return buffer.getvalue(), {"format": "parquet"}
        return pickle.dumps(df, protocol=5), {"format": "pickle"}

    def decode(self, data, meta):
        if meta["format"] == "parquet":
            return pd.read_parquet(io.BytesIO(data))
        return pickle.loads(data)
'''

DATAFRAME_SCRIPT = '''
import pandas as pd
from dfcodec import PARQUET, DataFrameCodec

@ReactorFunc
def make(pipe, config):
    pipe.send("table", pd.DataFrame({"x": range(config.n), "name": [f"row{i}" for i in range(config.n)]}))

@ReactorFunc
def target(pipe):
    df = yield pipe.receive("table")
    RESULT["type"] = type(df).__name__
    RESULT["table"] = df.to_dict(orient="list")
    RESULT["dtypes"] = [str(t) for t in df.dtypes]

plant = open_plant({"n": 3})
plant.warehouse.register_codecs([DataFrameCodec()])
plant.add_reactors(target, make)
plant.run_reactor(target)
version = plant.warehouse.metadata.traces("make", limit=1)[0].outputs["table"]
plant.shutdown()
report(version=[version.type, version.meta, version.location is None], parquet=PARQUET)
'''


def test_a_dataframe_codec_round_trips_in_a_new_process(tmp_path):
    """A user codec (one class, one registration): DataFrames sent without a type are stored
    with it, and a new process loads them back equal, running only the target."""
    (tmp_path / "dfcodec.py").write_text(DATAFRAME_CODEC)
    script = write_script(tmp_path / "tables.py", DATAFRAME_SCRIPT)
    first = result_of(run_script(script, tmp_path / "plant"))
    second = result_of(run_script(script, tmp_path / "plant"))
    assert first["started"] == ["target", "make"] and second["started"] == ["target"]
    table = {"x": [0, 1, 2], "name": ["row0", "row1", "row2"]}
    assert first["result"]["table"] == second["result"]["table"] == table
    assert second["result"]["type"] == "DataFrame"
    assert second["result"]["dtypes"] == first["result"]["dtypes"]
    expected_format = "parquet" if second["parquet"] else "pickle"
    assert second["version"] == ["dataframe", {"format": expected_format}, True]  # small: inline


# --- specs: damage is recomputed, bugs are SpecErrors ---------------------------------------------

class Note:
    def __init__(self, text):
        self.text = text


class NoteSpec(IngredientTypeSpec):
    """A note in ``specs/<storage>.note``; ``fail`` makes one of its methods raise a bug."""
    fail: set = set()

    @classmethod
    def get_name(cls):
        return "note"

    def _path(self, warehouse, name):
        return os.path.join(warehouse.baseDir, name + ".note")

    def store(self, warehouse, name, value):
        if "store" in self.fail:
            raise ValueError("bug in store")
        with open(self._path(warehouse, name), "w") as f:
            f.write(value.text)
        return {"length": len(value.text)}

    def fetch(self, warehouse, name, meta):
        if "fetch" in self.fail:
            raise ZeroDivisionError("bug in fetch")
        if "fetch_io" in self.fail:
            raise OSError(errno.EIO, "Input/output error")
        path = self._path(warehouse, name)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return Note(f.read())

    def is_instance(self, value):
        if "is_instance" in self.fail:
            raise AttributeError("bug in is_instance")
        return isinstance(value, Note)

    def content_hash(self, value):
        if "content_hash" in self.fail:
            raise TypeError("bug in content_hash")
        return pyplant.hashing.digest("note", value.text)

    def verify(self, value, meta):
        if "verify" in self.fail:
            raise LookupError("bug in verify")
        return len(value.text) == meta["length"]


@pytest.fixture
def note_spec():
    NoteSpec.fail = set()
    yield NoteSpec()
    NoteSpec.fail = set()


def note_chain(box):
    @ReactorFunc
    def write_note(pipe):
        pipe.send("before", 1)
        pipe.send("note", Note("hello"))

    @ReactorFunc
    def read_note(pipe):
        note = yield pipe.receive("note")
        box["text"] = note.text

    return [read_note, write_note]


def run_notes(open_plant, spec, box):
    plant, events = open_plant(reactors=note_chain(box))
    plant.warehouse.register_ingredient_specs([spec])
    return plant, events


def test_a_bug_in_fetch_on_intact_files_is_a_spec_error_naming_spec_and_ingredient(open_plant, hasher, note_spec):
    box = Box()
    plant, _ = run_notes(open_plant, note_spec, box)
    plant.run_reactor("read_note")
    plant.shutdown()
    NoteSpec.fail = {"fetch"}
    hasher.bump("read_note")
    plant, events = run_notes(open_plant, note_spec, box)
    with pytest.raises(SpecError, match="spec 'note' raised in fetch for ingredient 'note'") as info:
        plant.run_reactor("read_note")
    assert (info.value.spec, info.value.ingredient) == ("note", "note")
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert events.started == ["read_note"]  # not recomputed: it is not damage


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_a_damaged_spec_file_is_recomputed_even_when_fetch_would_raise(open_plant, hasher, note_spec,
                                                                        caplog, damage):
    """Missing, truncated or altered (same size) spec files are damage: the producer re-runs
    with a warning naming the ingredient, whatever the spec's fetch would do with them."""
    box = Box()
    plant, _ = run_notes(open_plant, note_spec, box)
    plant.run_reactor("read_note")
    plant.shutdown()
    (path,) = glob.glob(os.path.join(plant.plantDir, "specs", "*.note"))
    if damage == "delete":
        os.remove(path)
    else:
        Path(path).write_text("hel" if damage == "truncate" else "HELLO")
    NoteSpec.fail = {"fetch"}  # fetch is never reached for a damaged version
    hasher.bump("read_note")
    caplog.set_level(logging.WARNING)
    plant, events = run_notes(open_plant, note_spec, box)
    plant.run_reactor("read_note")
    assert events.started == ["read_note", "write_note"]
    assert box["text"] == "hello"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("ingredient 'note'" in m and ("damaged" in m or "missing" in m) for m in warned), warned


def test_a_version_stored_before_files_were_recorded_counts_a_failing_fetch_as_damage(warehouse, note_spec):
    warehouse.register_ingredient_specs([note_spec])
    version = warehouse.store("note", Note("old"), "note").version
    old = Version(version.name, version.type, version.content_hash, version.location, meta=version.meta)
    NoteSpec.fail = {"fetch"}
    with pytest.raises(CorruptVersionError, match="cannot be loaded by spec 'note': ZeroDivisionError: bug in fetch"):
        warehouse.load(old)
    with pytest.raises(SpecError, match=r"\(its files are intact\): ZeroDivisionError: bug in fetch") as info:
        warehouse.load(version)
    assert info.value.version == version


@pytest.mark.parametrize("method", ["store", "is_instance", "content_hash"])
def test_a_bug_in_store_is_instance_or_content_hash_is_a_spec_error(open_plant, note_spec, method):
    NoteSpec.fail = {method}
    box = Box()
    plant, events = run_notes(open_plant, note_spec, box)
    said = {"store": " for ingredient 'note': ValueError: bug in store",
            "is_instance": ": AttributeError: bug in is_instance",  # asked before it has a name
            "content_hash": " for ingredient 'note': TypeError: bug in content_hash"}[method]
    with pytest.raises(SpecError, match=re.escape(f"spec 'note' raised in {method}{said}")) as info:
        plant.run_reactor("read_note")
    assert info.value.spec == "note" and info.value.__cause__ is not None
    assert info.value.ingredient == "note" and info.value.reactor == "write_note"
    assert not glob.glob(os.path.join(plant.plantDir, "specs", "*"))  # nothing half-stored is left
    NoteSpec.fail = set()
    plant.run_reactor("read_note")  # what finished before stays: 'write_note' re-runs alone
    assert events.started == ["read_note", "write_note", "read_note", "write_note"]
    assert box["text"] == "hello"


def test_a_spec_whose_disk_refuses_raises_warehouse_error(warehouse, note_spec, monkeypatch):
    warehouse.register_ingredient_specs([note_spec])

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(NoteSpec, "store", full)
    with pytest.raises(WarehouseError, match="cannot store ingredient 'note'") as info:
        warehouse.store("note", Note("x"), "note", reactor="r")
    assert not isinstance(info.value, SpecError) and info.value.reactor == "r"


def test_a_bug_in_an_allocatable_spec_is_a_spec_error_and_invalid_operation_is_pyplants(warehouse):
    class Canvas(IngredientTypeSpec):
        def __init__(self):
            super().__init__()
            self.isAllocatable = True

        @classmethod
        def get_name(cls):
            return "canvas"

        def store(self, warehouse, name, value):
            return None

        def fetch(self, warehouse, name, meta):
            return None

        def allocate(self, warehouse, name, **kwargs):
            return kwargs["size"]  # KeyError without size: a bug

    warehouse.register_ingredient_specs([Canvas()])
    with pytest.raises(SpecError, match="spec 'canvas' raised in allocate for ingredient 'c'") as info:
        warehouse.allocate("c", "canvas", reactor="painter")
    assert (info.value.ingredient, info.value.reactor) == ("c", "painter")
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(InvalidOperationException, match="canvas cannot be deallocated") as info:
        IngredientTypeSpec.deallocate(Canvas(), warehouse, "x")
    assert isinstance(info.value, SpecError) and isinstance(info.value, PyPlantError)
    assert info.value.spec == "canvas"
    with pytest.raises(InvalidOperationException, match="canvas cannot be allocated") as info:
        IngredientTypeSpec.allocate(Canvas(), warehouse, "x")
    assert info.value.spec == "canvas"
    assert pyplant.specs.InvalidOperationException is InvalidOperationException


def test_a_truncated_hdf_file_is_recomputed(open_plant, hasher, caplog):
    box = Box()

    @ReactorFunc
    def make(pipe):
        ds = pipe.allocate("grid", specs.HdfArraySpec, shape=(64, 64), dtype="float64")
        ds[...] = 1.5
        pipe.send("grid", ds)

    @ReactorFunc
    def use(pipe):
        grid = yield pipe.receive("grid")
        box["sum"] = float(grid[...].sum())

    plant, _ = open_plant(reactors=[use, make])
    plant.run_reactor(use)
    plant.shutdown()
    (path,) = glob.glob(os.path.join(plant.plantDir, "specs", "*.hdf"))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    hasher.bump("use")
    caplog.set_level(logging.WARNING)
    plant, events = open_plant(reactors=[use, make])
    plant.run_reactor(use)
    assert events.started == ["use", "make"] and box["sum"] == 1.5 * 64 * 64
    assert any("'grid'" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_spec_versions_record_their_files_sizes_and_hashes(warehouse):
    version = warehouse.store("m", sp.csr_matrix(np.eye(4)), "scipy_sparse").version
    [(location, (size, digest))] = version.files.items()
    assert location == f"specs/{version.location}.npz" and size == version.nbytes > 0
    assert digest == pyplant.hashing.file_hash(os.path.join(warehouse.plantDir, location))


class _Unused(Codec):  # the protocol's defaults: nothing allocatable, no content hash
    key = "unused"

    def store(self, warehouse, name, value, allocated):
        raise AssertionError

    def load(self, warehouse, version):
        raise AssertionError


def test_codec_defaults(warehouse):
    codec = _Unused()
    assert not codec.accepts(1) and codec.content_hash(1) is None and not codec.allocatable
    with pytest.raises(AllocationError, match="'n' of type 'unused' cannot be allocated") as info:
        codec.allocate(warehouse, "n", "n@0123456789abcdef")
    assert info.value.ingredient == "n"


@pytest.mark.parametrize("make_pair", [
    # same data and indptr, another column for the second entry: another matrix
    lambda sp: (sp.csr_matrix((np.array([1.0, 2.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 3)),
                sp.csr_matrix((np.array([1.0, 2.0]), np.array([0, 2]), np.array([0, 2])), shape=(1, 3))),
    # same entries, one more empty column
    lambda sp: (sp.csr_matrix(np.eye(2)), sp.csr_matrix((np.array([1.0, 1.0]), np.array([0, 1]),
                                                         np.array([0, 1, 2])), shape=(2, 3))),
    # same entries, other row and column of one of them (COO keeps row and col)
    lambda sp: (sp.coo_matrix((np.array([1.0]), (np.array([0]), np.array([1]))), shape=(2, 2)),
                sp.coo_matrix((np.array([1.0]), (np.array([1]), np.array([0]))), shape=(2, 2))),
    # same data, indices and shape, another indptr: the second entry in another row
    lambda sp: (sp.csr_matrix((np.array([1.0, 2.0]), np.array([0, 1]), np.array([0, 1, 2])), shape=(2, 2)),
                sp.csr_matrix((np.array([1.0, 2.0]), np.array([0, 1]), np.array([0, 2, 2])), shape=(2, 2))),
    # COO: another row only, another column only
    lambda sp: (sp.coo_matrix((np.array([1.0]), (np.array([0]), np.array([1]))), shape=(2, 2)),
                sp.coo_matrix((np.array([1.0]), (np.array([1]), np.array([1]))), shape=(2, 2))),
    lambda sp: (sp.coo_matrix((np.array([1.0]), (np.array([1]), np.array([0]))), shape=(2, 2)),
                sp.coo_matrix((np.array([1.0]), (np.array([1]), np.array([1]))), shape=(2, 2))),
    # same values on other diagonals
    lambda sp: (sp.dia_matrix((np.array([[1.0, 2.0]]), np.array([0])), shape=(2, 2)),
                sp.dia_matrix((np.array([[1.0, 2.0]]), np.array([1])), shape=(2, 2))),
])
def test_sparse_content_hashes_differ_whenever_the_matrices_differ(make_pair):
    """A content hash that ignored indices, shape, rows, columns or offsets would let early
    cutoff serve a stale consumer."""
    import scipy.sparse as sp
    from pyplant.specs import ScipySparseSpec
    a, b = make_pair(sp)
    assert (a != b).nnz if a.shape == b.shape else True  # the pair really differs
    spec = ScipySparseSpec()
    assert spec.content_hash(a) != spec.content_hash(b)
    assert spec.content_hash(a) == spec.content_hash(a.copy())


def test_a_custom_codecs_free_is_called_for_what_a_failed_reactor_sent(open_plant, caplog):
    """``Codec.free`` is the hook for a version that will never commit: the warehouse calls
    the codec's own (here: a blob codec that records the call, then fails, which is logged
    and never hides the reactor's error)."""
    freed = []

    class Freeing(TaggedCodec):
        def free(self, warehouse, version):
            freed.append((version.name, version.type))
            raise OSError("cannot free")

    @ReactorFunc
    def failing(pipe):
        pipe.send("t", Thing(), "thing")
        raise RuntimeError("after sending")

    plant, _ = open_plant(reactors=[failing])
    plant.warehouse.register_codecs([Freeing()])
    caplog.set_level(logging.WARNING)
    with pytest.raises(RuntimeError, match="after sending"):
        plant.run_reactor(failing)
    assert freed == [("t", "thing")]
    assert any("could not free ingredient storage" in r.getMessage() and "cannot free" in r.getMessage()
               for r in caplog.records)


# --- built-in codecs: what their mutants showed unpinned ------------------------------------------

BIG = INLINE_MAX_BYTES + 1000


@pytest.mark.parametrize("value, key, said", [
    ({"pad": b"x" * BIG}, "object", r"cannot be read from blobs/\S+\.pkl: \[Errno 2\]"),
    (np.arange(10.0), "array", r"cannot be read from blobs/\S+\.npy: FileNotFoundError"),
])
def test_a_missing_blob_is_damage_naming_the_version_and_its_location(warehouse, value, key, said):
    version = warehouse.store("gone", value, key).version
    os.remove(os.path.join(warehouse.plantDir, version.location))
    with pytest.raises(CorruptVersionError, match=said) as info:
        warehouse.load(version)
    assert "ingredient 'gone'" in str(info.value)
    assert (info.value.ingredient, info.value.version, info.value.path) == ("gone", version, version.location)


def test_decode_gets_the_meta_that_encode_returned(warehouse):
    class Encoded(BytesCodec):
        """Text in the encoding recorded in its meta."""
        key = "text"

        def encode(self, value):
            return value.encode("utf-16"), {"encoding": "utf-16"}

        def decode(self, data, meta):
            return data.decode(meta["encoding"])

    warehouse.register_codecs([Encoded()])
    assert warehouse.load(warehouse.store("t", "héllo", "text").version) == "héllo"


@pytest.mark.parametrize("value, other, key", [
    (1.5, 2.5, "simple"), ({"pad": b"x" * BIG}, {}, "object"), (Thing(), [], "thing"),
    (np.arange(6.0).reshape(2, 3), np.zeros(1), "array"), (sp.csr_matrix(np.eye(2)), sp.csr_matrix(np.eye(3)), "scipy_sparse"),
])
def test_a_codecs_content_hash_is_the_hash_its_store_records(warehouse, value, other, key):
    warehouse.register_codecs([TaggedCodec()])
    codec = warehouse.codecs.get(key)
    stored = warehouse.store("x", value, key).version
    assert codec.content_hash(value) == stored.content_hash != codec.content_hash(other)


def test_pickled_values_use_protocol_5_and_lambdas_come_back_through_dill(warehouse):
    """Protocol 5, as documented, whatever Python's default is (it sets the bytes, so the
    content hashes); a lambda of a script or notebook (its globals are __main__'s), which
    pickle can neither store nor load, is stored with dill and loaded with it."""
    script_lambda = eval("lambda x: x + 3", vars(sys.modules["__main__"]))
    plain = warehouse.store("p", {"a": [1, 2]}, "object").version
    closure = warehouse.store("f", script_lambda, "object").version
    assert plain.meta == {"codec": "pickle"} and closure.meta == {"codec": "dill"}
    assert plain.inline[:2] == closure.inline[:2] == b"\x80\x05"
    assert warehouse.load(closure)(1) == 4 and warehouse.load(plain) == {"a": [1, 2]}


@pytest.mark.parametrize("value", [
    np.ma.masked_array(np.arange(BIG // 8 + 1, dtype=float), mask=[True] + [False] * (BIG // 8)),
    np.array([b"x" * BIG, None], dtype=object),
], ids=["masked", "objects"])
def test_a_large_array_the_npy_format_cannot_hold_is_pickled_into_a_blob(warehouse, value):
    """Sent as ``array``: an ndarray subclass or an array of objects goes to the object codec,
    which stores it (over 64 KiB) as a .pkl blob and gives back its type and state."""
    version = warehouse.store("a", value, "array").version
    assert version.type == "object" and version.location.endswith(".pkl") and version.inline is None
    loaded = warehouse.load(version)
    assert type(loaded) is type(value)
    if isinstance(value, np.ma.MaskedArray):
        assert loaded.mask[0] and not loaded.mask[1:].any() and loaded.sum() == value.sum()
    else:
        assert loaded[0] == value[0] and loaded[1] is None


def test_a_ragged_list_sent_as_an_array_is_a_serialization_error(warehouse):
    with pytest.raises(SerializationError, match="a value of type list cannot be stored as an array"):
        warehouse.store("r", [[1], [1, 2]], "array", reactor="maker")


# --- files --------------------------------------------------------------------------------------

def test_a_pending_file_is_held_by_the_lease_until_its_trace_commits(warehouse, open_plant, tmp_path):
    """A file sent by path (copied in under its own name) and an allocated one are recorded in
    the plant's lease before they are written: another plant's GC keeps them even when they
    look old, before any trace references them."""
    source = tmp_path / "table.csv"
    source.write_text("a,b\n")
    sent = warehouse.store("table", str(source), "file").value
    allocated, _ = warehouse.allocate("out", "file", filename="out.bin")
    Path(allocated).write_bytes(b"1234")
    assert os.path.basename(sent) == "table.csv" and Path(sent).read_text() == "a,b\n"
    for path in (sent, allocated):
        os.utime(path, (1, 1))
    other, _ = open_plant()
    other.gc()
    assert Path(sent).exists() and Path(allocated).exists()


def test_sending_a_directory_as_a_file_is_a_warehouse_error(warehouse, tmp_path):
    with pytest.raises(WarehouseError, match="cannot store ingredient 'd'") as info:
        warehouse.store("d", f"{tmp_path}/", "file", reactor="r")
    assert info.value.reactor == "r"


def test_an_allocated_file_removed_before_it_is_sent_is_a_warehouse_error(warehouse):
    path, location = warehouse.allocate("gone", "file")
    os.remove(path)
    with pytest.raises(WarehouseError, match=f"file ingredient 'gone' was allocated but its file "
                                             f"{re.escape(path)} does not exist") as info:
        warehouse.store("gone", path, "file", allocated=location)
    assert (info.value.ingredient, info.value.path) == ("gone", path)


def test_a_file_is_hashed_on_load_up_to_the_verify_limit_inclusive(warehouse, monkeypatch):
    """A file of exactly VERIFY_MAX_BYTES is still verified against its content hash, so an
    alteration that keeps its size is caught."""
    from pyplant.warehouse import codecs as codecs_module
    monkeypatch.setattr(codecs_module, "VERIFY_MAX_BYTES", 100)
    path, location = warehouse.allocate("f", "file")
    Path(path).write_bytes(b"a" * 100)
    version = warehouse.store("f", path, "file", allocated=location).version
    assert warehouse.load(version) == path
    Path(path).write_bytes(b"b" * 100)
    with pytest.raises(CorruptVersionError, match=re.escape(
            f"is damaged on disk: it does not match its content hash ({location})")):
        warehouse.load(version)


def test_a_file_removed_between_load_and_verify_is_damage(warehouse):
    path, location = warehouse.allocate("f", "file")
    version = warehouse.store("f", path, "file", allocated=location).version
    os.remove(path)
    with pytest.raises(CorruptVersionError, match="ingredient 'f' cannot be read: .*No such file") as info:
        warehouse.codecs.get("file").verify(warehouse, version, path)
    assert info.value.version == version


# --- specs: what spec_codec.py's and specs.py's surviving mutants showed unpinned ---------------

class Bare(IngredientTypeSpec):
    """A spec with only the required methods, whose __init__ skips IngredientTypeSpec's."""

    def __init__(self):
        pass

    @classmethod
    def get_name(cls):
        return "bare"

    def store(self, warehouse, name, value):
        Path(warehouse.baseDir, name + ".bare").write_text(value.text)

    def fetch(self, warehouse, name, meta):
        return Note(Path(warehouse.baseDir, name + ".bare").read_text())


def test_a_spec_with_only_the_required_methods(warehouse):
    """Never inferred (no is_instance), not allocatable (no isAllocatable), and each version
    gets a content hash of its own (no content_hash: the storage name stands for it)."""
    warehouse.register_ingredient_specs([Bare()])
    assert warehouse.infer_type(Note("x")) == "object"
    with pytest.raises(AllocationError, match="'n' of type 'bare' cannot be allocated; send it instead") as info:
        warehouse.allocate("n", "bare")
    assert not isinstance(info.value, InvalidOperationException)
    first, second = (warehouse.store("n", Note("same"), "bare").version for _ in range(2))
    assert first.content_hash != second.content_hash
    assert warehouse.load(first).text == "same"


def test_an_in_memory_array_sent_as_hdf_keeps_its_dtype_and_values(warehouse):
    data = np.array([2**60 + 1, -3], dtype=np.int64)  # neither float32 nor float64 holds 2**60 + 1
    stored = warehouse.store("h", data, "hdf_array")
    for dataset in (stored.value, warehouse.load(stored.version)):
        assert dataset.dtype == np.int64 and dataset[...].tolist() == data.tolist()


def damaged_by_its_spec(version):
    return pytest.raises(CorruptVersionError, match=re.escape(
        f"ingredient '{version.name}' is damaged on disk: it does not match its content hash ({version.location})"))


def test_a_spec_version_is_checked_by_the_specs_verify_and_content_hash(warehouse, note_spec):
    """Against what was recorded: HDF shape and dtype, a spec's own verify, its content hash;
    their bugs are SpecErrors naming the ingredient."""
    import dataclasses
    hdf = warehouse.store("h", np.zeros((2, 3), dtype="<f4"), "hdf_array").version
    for meta in ({**hdf.meta, "shape": [3, 2]}, {**hdf.meta, "dtype": "<f8"}):
        with damaged_by_its_spec(hdf):
            warehouse.load(dataclasses.replace(hdf, meta=meta))
    assert warehouse.load(dataclasses.replace(hdf, meta=None)).shape == (2, 3)  # nothing recorded to check

    matrix = warehouse.store("m", sp.csr_matrix(np.eye(3)), "scipy_sparse").version
    with damaged_by_its_spec(matrix):
        warehouse.load(dataclasses.replace(matrix, content_hash="0" * 32))
    assert (warehouse.load(matrix) != sp.csr_matrix(np.eye(3))).nnz == 0

    warehouse.register_ingredient_specs([note_spec])
    note = warehouse.store("note", Note("hello"), "note").version
    with damaged_by_its_spec(note):
        warehouse.load(dataclasses.replace(note, meta={"length": 4}))
    for method, said in [("verify", "verify for ingredient 'note': LookupError: bug in verify"),
                         ("content_hash", "content_hash for ingredient 'note': TypeError: bug in content_hash")]:
        NoteSpec.fail = {method}
        with pytest.raises(SpecError, match=re.escape(f"spec 'note' raised in {said}")) as info:
            warehouse.load(note)
        assert info.value.ingredient == "note"


def test_freeing_what_a_failed_spec_store_wrote_logs_its_own_failure(warehouse, caplog):
    """The store's error propagates; a failure to free its storage is only logged."""
    class Failing(specs.HdfArraySpec):
        @classmethod
        def get_name(cls):
            return "failing_hdf"

        def store(self, warehouse, name, value):
            raise ValueError("bug in store")

        def deallocate(self, warehouse, name):
            raise OSError(errno.EBUSY, "busy")

    warehouse.register_ingredient_specs([Failing()])
    caplog.set_level(logging.WARNING)
    with pytest.raises(SpecError, match="raised in store"):
        warehouse.store("h", np.zeros(2), "failing_hdf")
    [message] = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(rf"could not free ingredient storage h@[0-9a-f]{{16}}: \[Errno {errno.EBUSY}\] busy", message)


class Labelled(NoteSpec):
    """Consumers receive the note's recorded length with it (stored_value uses the meta)."""

    @classmethod
    def get_name(cls):
        return "labelled"

    def stored_value(self, warehouse, name, value, meta):
        if "stored_value" in self.fail:
            raise KeyError("bug in stored_value")
        return (value.text, meta["length"])


def test_stored_value_gets_the_meta_and_its_bugs_are_spec_errors(warehouse, note_spec):
    warehouse.register_ingredient_specs([Labelled()])
    assert warehouse.store("l", Note("hello"), "labelled").value == ("hello", 5)
    NoteSpec.fail = {"stored_value"}
    with pytest.raises(SpecError, match="spec 'labelled' raised in stored_value for ingredient 'l': KeyError"):
        warehouse.store("l", Note("hello"), "labelled")


def test_pending_spec_storage_is_held_by_the_lease_until_its_trace_commits(warehouse, open_plant):
    stored = warehouse.store("m", sp.csr_matrix(np.eye(2)), "scipy_sparse").version
    dataset, storage = warehouse.allocate("h", "hdf_array", shape=(2,), dtype="int8")
    paths = [os.path.join(warehouse.baseDir, stored.location + ".npz"),
             os.path.join(warehouse.baseDir, storage + ".hdf")]
    for path in paths:
        os.utime(path, (1, 1))
    other, _ = open_plant()
    other.gc()
    assert all(os.path.exists(p) for p in paths)


class Folder(IngredientTypeSpec):
    """A note in a directory of its own, ``specs/<storage>/``, with a link to a file outside."""
    outside = None

    @classmethod
    def get_name(cls):
        return "folder"

    def store(self, warehouse, name, value):
        folder = Path(warehouse.baseDir, name)
        (folder / "deep").mkdir(parents=True)
        (folder / "deep" / "text").write_text(value.text)
        (folder / "link").symlink_to(self.outside)
        return None

    def fetch(self, warehouse, name, meta):
        return Note(Path(warehouse.baseDir, name, "deep", "text").read_text())


def test_a_spec_directory_is_fingerprinted_file_by_file_without_following_links(warehouse, tmp_path):
    Folder.outside = tmp_path / "outside.txt"
    Folder.outside.write_text("not the plant's")
    warehouse.register_ingredient_specs([Folder()])
    version = warehouse.store("f", Note("hello"), "folder").version
    text = f"specs/{version.location}/deep/text"
    assert list(version.files) == [text] and version.files[text][0] == 5 == version.nbytes
    assert warehouse.load(version).text == "hello"
    Path(warehouse.plantDir, text).write_text("HELLO")
    with pytest.raises(CorruptVersionError, match=f"{text} does not match its content hash"):
        warehouse.load(version)


def test_recorded_spec_files_must_be_the_versions_own_and_of_their_size(warehouse):
    import dataclasses
    version = warehouse.store("m", sp.csr_matrix(np.eye(2)), "scipy_sparse").version
    [(location, (size, digest))] = version.files.items()
    other = warehouse.store("m", sp.csr_matrix(np.eye(3)), "scipy_sparse").version
    [other_location] = other.files
    for files in ({location: [size, digest, "extra"]}, {other_location: other.files[other_location]}):
        with pytest.raises(CorruptVersionError, match="records a file .* that is not its own") as info:
            warehouse.load(dataclasses.replace(version, files=files))
        assert info.value.version.files == files
    with pytest.raises(CorruptVersionError, match=f"{location} has {size} bytes, not {size + 1}"):
        warehouse.load(dataclasses.replace(version, files={location: [size + 1, digest]}))


def test_spec_files_are_hashed_up_to_the_verify_limit_inclusive(warehouse, note_spec, monkeypatch):
    from pyplant.warehouse import spec_codec
    monkeypatch.setattr(spec_codec, "VERIFY_MAX_BYTES", 5)
    warehouse.register_ingredient_specs([note_spec])
    [(_, digest)] = warehouse.store("n", Note("hello"), "note").version.files.values()
    [(_, too_big)] = warehouse.store("n", Note("hello!"), "note").version.files.values()
    assert digest is not None and too_big is None


def test_a_coo_matrix_comes_back_as_sent_in_an_uncompressed_npz(warehouse):
    """Duplicate entries stay (a trip through CSR would sum them), in their order."""
    import zipfile
    coo = sp.coo_matrix((np.array([1.0, 2.0, 3.0]), (np.array([1, 0, 1]), np.array([1, 0, 1]))), shape=(2, 2))
    version = warehouse.store("m", coo, "scipy_sparse").version
    loaded = warehouse.load(version)
    assert loaded.format == "coo" and loaded.nnz == 3
    assert loaded.row.tolist() == [1, 0, 1] and loaded.col.tolist() == [1, 0, 1] and loaded.data.tolist() == [1, 2, 3]
    [location] = version.files
    with zipfile.ZipFile(os.path.join(warehouse.plantDir, location)) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}


def open_paths():
    """The paths this process holds open (Linux)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)"))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_hdf_files_are_closed_when_deallocated_or_their_allocation_fails(warehouse):
    _, storage = warehouse.allocate("h", "hdf_array", shape=(2,), dtype="int8")
    path = os.path.realpath(os.path.join(warehouse.baseDir, storage + ".hdf"))
    assert path in open_paths()
    warehouse.deallocate("hdf_array", storage)
    assert path not in open_paths() and not os.path.exists(path)
    with pytest.raises(AllocationError, match="cannot allocate HDF array"):
        warehouse.allocate("bad", "hdf_array", shape=(2,), dtype="int8", compression="no-such-filter")
    assert not any(p.startswith(os.path.realpath(warehouse.baseDir)) for p in open_paths())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_plant_closes_its_hdf_files_on_shutdown(open_plant):
    plant, _ = open_plant()
    version = plant.warehouse.store("h", np.zeros(3), "hdf_array").version
    plant.warehouse.load(version)
    specs_dir = os.path.realpath(plant.warehouse.baseDir)
    assert any(p.startswith(specs_dir) for p in open_paths())
    plant.shutdown()
    assert not any(p.startswith(specs_dir) for p in open_paths())


def test_a_spec_whose_disk_refuses_to_read_raises_warehouse_error_naming_the_version(warehouse, note_spec):
    warehouse.register_ingredient_specs([note_spec])
    version = warehouse.store("note", Note("x"), "note").version
    NoteSpec.fail = {"fetch_io"}
    with pytest.raises(WarehouseError, match=re.escape(
            f"ingredient 'note' cannot be read from {version.location}: [Errno {errno.EIO}] Input/output error")) as info:
        warehouse.load(version)
    assert not isinstance(info.value, CorruptVersionError)
    assert (info.value.ingredient, info.value.version, info.value.path) == ("note", version, version.location)


def test_opening_a_plant_whose_storage_directory_is_a_symlink_out_warns(plant_dir, tmp_path, caplog):
    from pyplant import Plant
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    plant_dir.mkdir()
    os.symlink(outside, plant_dir / "specs")
    caplog.set_level(logging.WARNING)
    plant = Plant(str(plant_dir))
    try:
        [message] = [r.getMessage() for r in caplog.records if "is a symlink to" in r.getMessage()]
        assert message.startswith(f"{plant_dir / 'specs'} is a symlink to {outside.resolve()}, outside the plant directory")
    finally:
        plant.shutdown()
