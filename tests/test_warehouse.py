"""Ingredient types, arrays, files, HDF arrays, sparse matrices, custom specs, several versions."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import pyplant
import pyplant.specs
from pyplant import Ingredient, IngredientTypeSpec, ReactorFunc, specs

from conftest import Box, result_of, run_script, write_script


def sink_of(*names, out="result"):
    """A target reactor receiving ``names`` and sending them as a tuple (and recording them)."""
    received = Box()

    @ReactorFunc
    def target(pipe):
        values = []
        for name in names:
            values.append((yield pipe.receive(name)))
        received.update(zip(names, values))
        pipe.send(out, len(values))

    return target, received


# --- builtin types ---------------------------------------------------------------------------

def test_ingredient_type_members():
    """Ingredient.Type has simple, list, object, array and file."""
    for name in ("simple", "list", "object", "array", "file"):
        assert getattr(Ingredient.Type, name).name == name


VALUES = {
    "int": 7,
    "float": 2.5,
    "bool": False,
    "str": "text",
    "none": None,
    "bytes": b"\x00\x01",
    "tuple": (1, "two", 3.0),
    "dict": {"k": [1, 2], "n": {"deep": (None, True)}},
    "list": [1, [2, 3], {"a": 1}],
    "f32": np.float32(1.5),
    "i64": np.int64(-3),
    "complex": 1 + 2j,
}


def test_inferred_types_keep_exact_python_type_from_disk(open_plant):
    """Values sent without a type are read back from disk (new plant) with their exact type."""

    @ReactorFunc
    def producer(pipe):
        for name, value in VALUES.items():
            pipe.send(name, value)

    target, received = sink_of(*VALUES)
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    for name, value in VALUES.items():
        assert type(received[name]) is type(value) and received[name] == value, name
    plant.shutdown()

    plant2, events = open_plant(reactors=[target, producer])
    received.clear()
    plant2.run_reactor(target)
    assert events.started == ["target"]
    for name, value in VALUES.items():
        assert type(received[name]) is type(value), name
        assert received[name] == value, name
        fetched = plant2.fetch_ingredient(name)
        assert type(fetched) is type(value) and fetched == value, name


def test_explicit_types(open_plant, tmp_path):
    """send() with an explicit Ingredient.Type stores and returns each kind of value."""
    external = tmp_path / "external.txt"
    external.write_text("file content")

    @ReactorFunc
    def producer(pipe):
        pipe.send("s", 3, Ingredient.Type.simple)
        pipe.send("l", [1, 2], Ingredient.Type.list)
        pipe.send("o", {"a": (1,)}, Ingredient.Type.object)
        pipe.send("a", np.arange(4.0), Ingredient.Type.array)
        pipe.send("f", str(external), Ingredient.Type.file)

    target, received = sink_of("s", "l", "o", "a", "f")
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    external.write_text("changed afterwards")

    plant2, events = open_plant(reactors=[target, producer])
    with open(plant2.fetch_ingredient("f")) as f:
        assert f.read() == "file content"  # the warehouse keeps its own copy
    received.clear()
    plant2.run_reactor(target)
    assert received["s"] == 3
    assert received["l"] == [1, 2]
    assert received["o"] == {"a": (1,)}
    np.testing.assert_array_equal(received["a"], np.arange(4.0))
    # the producer read the external file (to copy it): its new content is a new version
    assert events.started == ["target", "producer"]
    with open(received["f"]) as f:
        assert f.read() == "changed afterwards"


def test_custom_class_instance_is_stored_as_object(open_plant):
    """An instance of a user class round-trips through the warehouse (pickled object)."""

    @ReactorFunc
    def producer(pipe):
        pipe.send("obj", Payload(3, "x"))

    target, received = sink_of("obj")
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[target, producer])
    obj = plant2.fetch_ingredient("obj")
    assert type(obj) is Payload and (obj.a, obj.b) == (3, "x")


class Payload:
    def __init__(self, a, b):
        self.a = a
        self.b = b


def test_lambda_value_round_trips(open_plant):
    """A value pickle cannot store but dill can (a lambda) is stored and works when read back."""

    @ReactorFunc
    def producer(pipe):
        pipe.send("fn", lambda v: v * 4)

    target, received = sink_of("fn")
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[target, producer])
    assert plant2.fetch_ingredient("fn")(3) == 12


# --- arrays ----------------------------------------------------------------------------------

ARRAYS = {
    "small": np.arange(12, dtype=np.int16).reshape(3, 4),
    "large": np.random.default_rng(0).random((400, 400)),  # 1.28 MB
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "scalar": np.array(3.5),
    "empty": np.zeros((0, 3), dtype=np.uint8),
    "bool": np.array([True, False]),
}


@pytest.mark.parametrize("from_disk", [False, True], ids=["same-plant", "new-plant"])
def test_received_arrays_are_read_only_and_equal(open_plant, from_disk):
    """Received arrays equal what was sent (dtype, shape, values) and are read-only."""

    @ReactorFunc
    def producer(pipe):
        for name, arr in ARRAYS.items():
            pipe.send(name, arr.copy())

    target, received = sink_of(*ARRAYS)
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    if from_disk:
        plant.shutdown()
        plant, events = open_plant(reactors=[target, producer])
        received.clear()
        plant.run_reactor(target)
        assert events.started == ["target"]
    for name, arr in ARRAYS.items():
        got = received[name]
        assert isinstance(got, np.ndarray), name
        assert got.dtype == arr.dtype and got.shape == arr.shape, name
        np.testing.assert_array_equal(got, arr)
        assert not got.flags.writeable, name
        if got.size:
            with pytest.raises(ValueError):
                got[...] = 0


def test_object_array_round_trips(open_plant):
    """An array of Python objects (not storable as .npy) still round-trips."""

    @ReactorFunc
    def producer(pipe):
        arr = np.empty(2, dtype=object)
        arr[0], arr[1] = {"a": 1}, [2]
        pipe.send("objarr", arr)

    target, received = sink_of("objarr")
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[target, producer])
    got = plant2.fetch_ingredient("objarr")
    assert got.dtype == object and got[0] == {"a": 1} and got[1] == [2]


# --- files -----------------------------------------------------------------------------------

def test_allocated_file_is_writable_and_received_as_path(open_plant):
    """allocate(name, Ingredient.Type.file) returns a writable path; consumers get that file."""

    @ReactorFunc
    def writer(pipe):
        path = pipe.allocate("report.txt", Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("hello report")
        yield

    target, received = sink_of("report.txt")
    plant, _ = open_plant(reactors=[target, writer])
    plant.run_reactor(target)
    with open(received["report.txt"]) as f:
        assert f.read() == "hello report"
    plant.shutdown()
    plant2, events = open_plant(reactors=[target, writer])
    received.clear()
    plant2.run_reactor(target)
    assert events.started == ["target"]
    with open(received["report.txt"]) as f:
        assert f.read() == "hello report"


def test_allocate_temp_is_freed_when_reactor_ends(open_plant):
    """allocate_temp storage (files and HDF arrays) exists during the run and is freed after."""
    paths = Box()

    @ReactorFunc
    def worker(pipe):
        path = pipe.allocate_temp("scratch", Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("tmp")
        paths["file"] = path
        ds = pipe.allocate_temp("scratch_hdf", specs.HdfArraySpec, shape=(3,), dtype="int32")
        ds[...] = 1
        paths["hdf"] = ds.file.filename
        paths["during"] = os.path.exists(path) and os.path.exists(paths["hdf"])
        pipe.send("done", True)

    plant, _ = open_plant(reactors=[worker])
    plant.run_reactor(worker)
    assert paths["during"] is True
    assert not os.path.exists(paths["file"])
    assert not os.path.exists(paths["hdf"])
    assert plant.fetch_ingredient("done") is True


# --- HDF arrays ------------------------------------------------------------------------------

def hdf_reactors(seen):
    @ReactorFunc
    def make_hdf(pipe):
        ds = pipe.allocate("matrix", specs.HdfArraySpec, shape=(4, 3), dtype=np.float32)
        seen["zeros"] = np.array(ds[...])
        seen["type"] = type(ds)
        ds[1, :] = [1, 2, 3]
        ds[3, 2] = 9
        yield

    @ReactorFunc
    def use_hdf(pipe):
        ds = yield pipe.receive("matrix")
        seen["received_type"] = type(ds)
        seen["data"] = np.array(ds[...])
        pipe.send("total", float(np.sum(ds[...])))

    return [use_hdf, make_hdf]


EXPECTED_HDF = np.array([[0, 0, 0], [1, 2, 3], [0, 0, 0], [0, 0, 9]], dtype=np.float32)


def test_hdf_array_allocated_zero_filled_and_received(open_plant):
    """HdfArraySpec allocate gives a zero-filled h5py dataset; consumers get its data."""
    seen = Box()
    plant, _ = open_plant(reactors=hdf_reactors(seen))
    plant.run_reactor("use_hdf")
    assert issubclass(seen["type"], h5py.Dataset)
    np.testing.assert_array_equal(seen["zeros"], np.zeros((4, 3), np.float32))
    assert issubclass(seen["received_type"], h5py.Dataset)
    np.testing.assert_array_equal(seen["data"], EXPECTED_HDF)
    assert plant.fetch_ingredient("total") == 15.0


def test_hdf_array_after_reopen(open_plant):
    """After shutdown, a new plant's consumer receives an h5py.Dataset with the same data."""
    seen = Box()
    plant, _ = open_plant(reactors=hdf_reactors(seen))
    plant.run_reactor("use_hdf")
    plant.shutdown()
    seen.clear()
    plant2, events = open_plant(reactors=hdf_reactors(seen))
    plant2.run_reactor("use_hdf")
    assert events.started == ["use_hdf"]
    assert issubclass(seen["received_type"], h5py.Dataset)
    np.testing.assert_array_equal(seen["data"], EXPECTED_HDF)
    fetched = plant2.fetch_ingredient("matrix")
    assert isinstance(fetched, h5py.Dataset)
    np.testing.assert_array_equal(fetched[...], EXPECTED_HDF)


# --- sparse ----------------------------------------------------------------------------------

def sparse_values():
    dense = np.array([[0, 1.5, 0], [2, 0, 0], [0, 0, 3]])
    return {"csr": sp.csr_matrix(dense), "coo": sp.coo_matrix(dense), "csc": sp.csc_matrix(dense)}


def test_scipy_sparse_round_trip(open_plant):
    """csr, coo and csc matrices round-trip (inferred and explicit type) with their format."""

    @ReactorFunc
    def producer(pipe):
        for name, matrix in sparse_values().items():
            pipe.send(name, matrix)
        pipe.send("explicit", sp.csr_matrix(np.eye(3)), specs.ScipySparseSpec)
        pipe.send("csr_array", sp.csr_array(np.eye(2)))

    target, received = sink_of("csr", "coo", "csc", "explicit", "csr_array")
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    received.clear()
    plant2, events = open_plant(reactors=[target, producer])
    plant2.run_reactor(target)
    assert events.started == ["target"]
    for name, matrix in sparse_values().items():
        got = received[name]
        assert type(got) is type(matrix) and got.format == name
        np.testing.assert_array_equal(got.toarray(), matrix.toarray())
    np.testing.assert_array_equal(received["explicit"].toarray(), np.eye(3))
    assert type(received["csr_array"]) is sp.csr_array


KERAS_SCRIPT = """
import os
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras

@ReactorFunc
def train(pipe):
    keras.utils.set_random_seed(0)
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(32, 2)
    y = x @ np.array([[2.0], [-3.0]], dtype=np.float32) + 0.5
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=3, verbose=0)
    np.save(os.path.join(os.path.dirname(PLANT_DIR), "trained.npy"),
            model.predict(x, verbose=0))
    pipe.send("model", model, specs.KerasModelSpec)

@ReactorFunc
def predict(pipe):
    model = yield pipe.receive("model")
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(32, 2)
    pipe.send("prediction", model.predict(x, verbose=0))
    RESULT["model_type"] = type(model).__name__
    RESULT["weights"] = [w.tolist() for w in model.get_weights()]

plant = open_plant()
plant.warehouse.register_ingredient_specs([specs.KerasModelSpec()])
plant.add_reactors(train, predict)
plant.run_reactor(predict)
RESULT["prediction"] = plant.fetch_ingredient("prediction").tolist()
plant.shutdown()
report()
"""


def test_keras_model_spec_survives_a_restart_with_its_weights(tmp_path):
    """A trained Keras model sent with KerasModelSpec comes back, in a new process, as the same
    model: same class, same weights, same predictions as the trained one; its producer is
    cached there."""
    import importlib.util
    # The script uses the torch backend unless KERAS_BACKEND says otherwise; neither is imported
    # here (a test process holding torch would be slower for every test after it).
    if not all(importlib.util.find_spec(m) for m in ("keras", "torch")):
        pytest.skip("keras with the torch backend is not installed (.ci/run installs it)")
    script = write_script(tmp_path / "keras_model.py", KERAS_SCRIPT)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir, timeout=300))
    trained = np.load(tmp_path / "trained.npy")
    (tmp_path / "trained.npy").unlink()
    second = result_of(run_script(script, plant_dir, timeout=300))
    assert first["started"] == ["predict", "train"] and second["started"] == ["predict"]
    assert not (tmp_path / "trained.npy").exists()  # train did not run again
    before, after = first["result"], second["result"]
    assert after["model_type"] == "Sequential"
    assert [np.asarray(w).shape for w in after["weights"]] == [(2, 4), (4,), (4, 1), (1,)]
    for w_before, w_after in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(np.asarray(w_before), np.asarray(w_after))
    np.testing.assert_allclose(np.asarray(after["prediction"]), trained, rtol=1e-6)
    assert np.abs(trained).max() > 0  # a trained model, not zeros


# --- custom specs ----------------------------------------------------------------------------

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class PointSpec(IngredientTypeSpec):
    calls = {"store": 0, "fetch": 0}

    def __init__(self):
        super().__init__()

    @classmethod
    def get_name(cls):
        return "point"

    def _path(self, warehouse, name):
        return os.path.join(warehouse.baseDir, name + ".point.json")

    def store(self, warehouse, name, value):
        PointSpec.calls["store"] += 1
        with open(self._path(warehouse, name), "w") as f:
            json.dump([value.x, value.y], f)
        return {"format": 1}

    def fetch(self, warehouse, name, meta):
        PointSpec.calls["fetch"] += 1
        assert meta == {"format": 1}
        with open(self._path(warehouse, name)) as f:
            x, y = json.load(f)
        return Point(x, y)

    def is_instance(self, value):
        return isinstance(value, Point)


@pytest.fixture
def point_calls():
    PointSpec.calls.update(store=0, fetch=0)
    return PointSpec.calls


class BareInitSpec(PointSpec):
    """A spec whose no-arg __init__ does not call super().__init__()."""

    def __init__(self):
        pass


@pytest.mark.parametrize("spec_class", [PointSpec, BareInitSpec])
def test_custom_spec_with_plain_init(open_plant, point_calls, spec_class):
    """Custom specs work whether or not their __init__ calls IngredientTypeSpec.__init__."""
    plant, _ = open_plant(reactors=point_reactors())
    plant.warehouse.register_ingredient_specs([spec_class()])
    plant.run_reactor("target")
    plant.shutdown()
    plant2, _ = open_plant(reactors=point_reactors())
    plant2.warehouse.register_ingredient_specs([spec_class()])
    assert plant2.fetch_ingredient("inferred") == Point(1, 2)
    assert point_calls["fetch"] == 1


def test_ingredient_type_spec_importable_from_both_places():
    """IngredientTypeSpec is importable from pyplant and from pyplant.specs (the same class)."""
    assert pyplant.IngredientTypeSpec is pyplant.specs.IngredientTypeSpec
    assert issubclass(specs.HdfArraySpec, IngredientTypeSpec)
    assert issubclass(specs.ScipySparseSpec, IngredientTypeSpec)


def point_reactors():
    @ReactorFunc
    def make_points(pipe):
        pipe.send("inferred", Point(1, 2))
        pipe.send("explicit", Point(3, 4), PointSpec)

    @ReactorFunc
    def first_user(pipe):
        p = yield pipe.receive("inferred")
        q = yield pipe.receive("explicit")
        pipe.send("sum", (p.x + q.x, p.y + q.y))

    @ReactorFunc
    def target(pipe):
        s = yield pipe.receive("sum")
        p = yield pipe.receive("inferred")
        q = yield pipe.receive("explicit")
        pipe.send("result", (s, p == Point(1, 2), q == Point(3, 4), type(p).__name__))

    return [target, first_user, make_points]


def test_custom_spec_send_receive_from_memory_within_session(open_plant, point_calls):
    """A custom spec stores values (explicit and inferred); in-session receives skip fetch."""
    plant, _ = open_plant(reactors=point_reactors())
    plant.warehouse.register_ingredient_specs([PointSpec()])  # after add_reactors
    plant.run_reactor("target")
    assert plant.fetch_ingredient("result") == ((4, 6), True, True, "Point")
    assert point_calls["store"] == 2
    assert point_calls["fetch"] == 0


def test_custom_spec_fetch_called_after_reopen(open_plant, point_calls, hasher):
    """After a restart the spec's fetch loads each version, once per plant."""
    plant, _ = open_plant(reactors=point_reactors())
    plant.warehouse.register_ingredient_specs([PointSpec()])
    plant.run_reactor("target")
    plant.shutdown()
    hasher.bump("first_user")
    plant2, events = open_plant(reactors=point_reactors())
    plant2.warehouse.register_ingredient_specs([PointSpec()])
    plant2.run_reactor("target")
    assert events.started == ["target", "first_user"]
    assert plant2.fetch_ingredient("result") == ((4, 6), True, True, "Point")
    assert point_calls["store"] == 2
    assert point_calls["fetch"] == 2  # 'inferred' and 'explicit', each loaded once


# --- several versions ------------------------------------------------------------------------

def versioned_reactors():
    @ReactorFunc
    def producer(pipe, config):
        pipe.send("data", np.full(3, config.level))

    @ReactorFunc
    def consumer(pipe):
        d = yield pipe.receive("data")
        pipe.send("mean", float(d.mean()))

    @ReactorFunc
    def target(pipe):
        m = yield pipe.receive("mean")
        pipe.send("report", f"mean={m}")

    return [target, consumer, producer]


def test_config_a_b_a_finds_a_versions_again(open_plant):
    """After config A -> B, going back to A re-runs nothing but the target; A's values return."""
    reactors = versioned_reactors()
    plant, _ = open_plant(config={"level": 1}, reactors=reactors)
    plant.run_reactor("target")
    plant.shutdown()
    plant, events = open_plant(config={"level": 2}, reactors=reactors)
    plant.run_reactor("target")
    assert events.started == ["target", "producer", "consumer"]
    assert plant.fetch_ingredient("report") == "mean=2.0"
    plant.shutdown()
    plant, events = open_plant(config={"level": 1}, reactors=reactors)
    plant.run_reactor("target")
    assert events.started == ["target"]
    assert plant.fetch_ingredient("report") == "mean=1.0"
    np.testing.assert_array_equal(plant.fetch_ingredient("data"), np.full(3, 1))
    assert plant.fetch_ingredient("mean") == 1.0


def test_config_a_b_a_in_one_plant(open_plant):
    """The same A -> B -> A switch made with set_config on one plant object."""
    reactors = versioned_reactors()
    plant, events = open_plant(config={"level": 1}, reactors=reactors)
    plant.run_reactor("target")
    plant.set_config({"level": 2})
    plant.run_reactor("target")
    plant.set_config({"level": 1})
    events.log.clear()
    plant.run_reactor("target")
    assert events.started == ["target"]
    assert plant.fetch_ingredient("report") == "mean=1.0"
    assert plant.fetch_ingredient("mean") == 1.0


def test_large_pickled_value_round_trips(open_plant):
    """A pickled value far above the inline size is stored and read back equal from disk."""
    big = {"numbers": list(range(200_000)), "text": "x" * 100_000}

    @ReactorFunc
    def producer(pipe):
        pipe.send("big", big)

    target, _ = sink_of("big")
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[target, producer])
    assert plant2.fetch_ingredient("big") == big


@pytest.mark.parametrize("name", ["with space", "a/b/c", "colon:and*star", "ünïcødé", "../escape"])
def test_unusual_ingredient_names(open_plant, name):
    """Ingredient names with slashes, spaces or unicode work for values, arrays, files and HDF."""

    @ReactorFunc
    def producer(pipe):
        pipe.send(name + ".value", {"v": 1})
        pipe.send(name + ".array", np.arange(3))
        path = pipe.allocate(name + ".file", Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("content")
        ds = pipe.allocate(name + ".hdf", specs.HdfArraySpec, shape=(2,), dtype="int8")
        ds[...] = [4, 5]

    suffixes = (".value", ".array", ".file", ".hdf")
    target, received = sink_of(*(name + s for s in suffixes))
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    received.clear()
    plant2, events = open_plant(reactors=[target, producer])
    plant2.run_reactor(target)
    assert events.started == ["target"]
    assert received[name + ".value"] == {"v": 1}
    np.testing.assert_array_equal(received[name + ".array"], np.arange(3))
    with open(received[name + ".file"]) as f:
        assert f.read() == "content"
    assert list(received[name + ".hdf"][...]) == [4, 5]


def test_hdf_versions_a_b_a(open_plant):
    """HDF arrays of config A and B are both kept: back to A, A's array is received again."""
    seen = Box()

    @ReactorFunc
    def fill(pipe, config):
        ds = pipe.allocate("filled", specs.HdfArraySpec, shape=(3,), dtype="float64")
        ds[...] = config.value

    @ReactorFunc
    def target(pipe):
        ds = yield pipe.receive("filled")
        seen["data"] = ds[...].tolist()
        pipe.send("out", 1)

    for value, expected_started in ((1.0, ["target", "fill"]), (2.0, ["target", "fill"]),
                                    (1.0, ["target"])):
        plant, events = open_plant(config={"value": value}, reactors=[target, fill])
        plant.run_reactor(target)
        plant.shutdown()
        assert events.started == expected_started
        assert seen["data"] == [value] * 3


def test_file_ingredient_early_cutoff(open_plant, hasher):
    """A file producer re-run that writes identical content does not re-run its consumers."""

    @ReactorFunc
    def write_file(pipe):
        path = pipe.allocate("data.csv", Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("a,b\n1,2\n")
        yield

    @ReactorFunc
    def parse(pipe):
        path = yield pipe.receive("data.csv")
        with open(path) as f:
            pipe.send("rows", f.read().splitlines())

    @ReactorFunc
    def target(pipe):
        rows = yield pipe.receive("rows")
        pipe.send("count", len(rows))

    reactors = [target, parse, write_file]
    plant, _ = open_plant(reactors=reactors)
    plant.run_reactor(target)
    plant.shutdown()
    hasher.bump("write_file")
    plant2, events = open_plant(reactors=reactors)
    plant2.run_reactor(target)
    assert events.started == ["target", "write_file"]
    assert plant2.fetch_ingredient("count") == 2


def test_a_file_renamed_with_the_same_content_reruns_its_consumers(open_plant):
    """A file ingredient's name is part of its value (a consumer may dispatch on its
    extension): the same bytes under another name are not cut off."""

    @ReactorFunc
    def write_file(pipe, config):
        path = pipe.allocate("data", Ingredient.Type.file, filename=config.filename)
        with open(path, "w") as f:
            f.write("a,b\n1,2\n")
        yield

    @ReactorFunc
    def read_name(pipe):
        path = yield pipe.receive("data")
        pipe.send("name", os.path.basename(path))

    @ReactorFunc
    def report(pipe):  # the target: read_name is a consumer below it, which early cutoff could skip
        name = yield pipe.receive("name")
        pipe.send("report", f"read {name}")

    reactors = [report, read_name, write_file]
    plant, _ = open_plant(config={"filename": "data.csv"}, reactors=reactors)
    plant.run_reactor(report)
    plant.shutdown()
    plant2, _ = open_plant(config={"filename": "data.tsv"}, reactors=reactors)
    plant2.run_reactor(report)
    assert plant2.fetch_ingredient("report") == "read data.tsv"


def test_a_structured_array_with_renamed_fields_reruns_its_consumers(open_plant):
    """Sent as an array, a structured array whose fields are renamed over the same bytes is a
    new value: its consumer re-runs instead of keeping what it computed from the old names."""

    @ReactorFunc
    def make_table(pipe, config):
        pipe.send("table", np.zeros(3, dtype=[(config.field, "<i4")]), Ingredient.Type.array)

    @ReactorFunc
    def read_table(pipe):
        table = yield pipe.receive("table")
        pipe.send("names", list(table.dtype.names))

    reactors = [read_table, make_table]
    plant, _ = open_plant(config={"field": "a"}, reactors=reactors)
    plant.run_reactor(read_table)
    plant.shutdown()
    plant2, _ = open_plant(config={"field": "b"}, reactors=reactors)
    plant2.run_reactor(read_table)
    assert plant2.fetch_ingredient("names") == ["b"]


def test_hdf_allocated_then_sent_explicitly(open_plant):
    """An allocated HDF dataset may also be sent explicitly; consumers get its data."""
    seen = Box()

    @ReactorFunc
    def producer(pipe):
        ds = pipe.allocate("explicit_hdf", specs.HdfArraySpec, shape=(2, 2), dtype="float32")
        ds[0, :] = 3
        pipe.send("explicit_hdf", ds, specs.HdfArraySpec)
        pipe.send("after", "ok")

    @ReactorFunc
    def target(pipe):
        ds = yield pipe.receive("explicit_hdf")
        seen["data"] = ds[...].tolist()
        pipe.send("out", (yield pipe.receive("after")))

    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    assert seen["data"] == [[3, 3], [0, 0]]
    plant.shutdown()
    plant2, _ = open_plant(reactors=[target, producer])
    plant2.run_reactor(target)
    assert seen["data"] == [[3, 3], [0, 0]]


def test_numpy_array_sent_as_hdf(open_plant):
    """An in-memory array sent with type HdfArraySpec is received as an h5py.Dataset."""
    seen = Box()

    @ReactorFunc
    def producer(pipe):
        pipe.send("as_hdf", np.arange(6).reshape(2, 3), specs.HdfArraySpec)

    @ReactorFunc
    def target(pipe):
        ds = yield pipe.receive("as_hdf")
        seen["type"] = type(ds)
        seen["data"] = ds[...].tolist()
        pipe.send("out", 1)

    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    assert issubclass(seen["type"], h5py.Dataset)
    assert seen["data"] == [[0, 1, 2], [3, 4, 5]]


def _object_array():
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = "a", (1, 2)
    return arr


@pytest.mark.parametrize("value, expected", [
    pytest.param([[1, 2], [3, 4]], np.array([[1, 2], [3, 4]]), id="nested-list"),
    pytest.param((1.5, 2.5), np.array([1.5, 2.5]), id="tuple"),
    pytest.param(_object_array(), _object_array(), id="object-dtype"),
])
def test_array_type_accepts_array_likes(open_plant, value, expected):
    """A value sent with Ingredient.Type.array (an array-like) is received as an equal NumPy array."""

    @ReactorFunc
    def producer(pipe):
        pipe.send("arr", value, Ingredient.Type.array)

    target, received = sink_of("arr")
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[target, producer])
    got = plant2.fetch_ingredient("arr")
    assert isinstance(got, np.ndarray)
    assert got.shape == expected.shape and got.tolist() == expected.tolist()


# --- ndarray subclasses and sparse formats keep their exact type ----------------------------

def _masked():
    data = np.ones(1000)
    return np.ma.MaskedArray(data, mask=np.arange(1000) != 3)


def _memmap(tmp_path):
    mm = np.memmap(tmp_path / "mm.dat", dtype=np.float32, mode="w+", shape=(10,))
    mm[:] = np.arange(10)
    return mm


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("explicit", [False, True], ids=["inferred", "Type.array"])
def test_ndarray_subclasses_keep_type_and_state(open_plant, tmp_path, explicit):
    """A masked array keeps its mask (its sum stays 1, not 1000), np.matrix and np.recarray
    stay what they are, from the same plant and from a new one; a memmap comes back as a
    read-only plain ndarray with its values."""
    values = {
        "masked": _masked(),
        "matrix": np.matrix([[1, 2], [3, 4]]),
        "recarray": np.rec.fromarrays([np.arange(3), np.arange(3) * 2.0], names="a,b"),
        "memmap": _memmap(tmp_path),
    }

    @ReactorFunc
    def producer(pipe):
        for name, value in values.items():
            if explicit:
                pipe.send(name, value, Ingredient.Type.array)
            else:
                pipe.send(name, value)

    target, received = sink_of(*values)
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    for from_disk in (False, True):
        if from_disk:
            plant.shutdown()
            plant, events = open_plant(reactors=[target, producer])
            received.clear()
            plant.run_reactor(target)
            assert events.started == ["target"]
        masked = received["masked"]
        assert type(masked) is np.ma.MaskedArray
        assert masked.sum() == 1.0 and masked.mask.sum() == 999
        assert type(received["matrix"]) is np.matrix
        assert (received["matrix"] @ received["matrix"]).tolist() == [[7, 10], [15, 22]]
        assert type(received["recarray"]) is np.recarray
        assert received["recarray"].b.tolist() == [0.0, 2.0, 4.0]
        mm = received["memmap"]
        assert type(mm) is np.ndarray and not mm.flags.writeable
        assert mm.dtype == np.float32 and mm.tolist() == list(range(10))


@pytest.mark.parametrize("make", [sp.lil_matrix, sp.dok_matrix, sp.lil_array, sp.dok_array],
                         ids=["lil_matrix", "dok_matrix", "lil_array", "dok_array"])
def test_lil_and_dok_sparse_round_trip_with_their_type(open_plant, make):
    """lil and dok sparse matrices (which scipy.sparse.save_npz cannot write) are stored and
    come back with their exact type and values."""
    dense = np.array([[0, 2.0, 0], [1.0, 0, 0], [0, 0, 3.5]])

    @ReactorFunc
    def producer(pipe):
        pipe.send("m", make(dense))

    target, received = sink_of("m")
    plant, _ = open_plant(reactors=[target, producer])
    plant.run_reactor(target)
    plant.shutdown()
    plant2, events = open_plant(reactors=[target, producer])
    received.clear()
    plant2.run_reactor(target)
    assert events.started == ["target"]
    got = received["m"]
    assert type(got) is type(make(dense))
    np.testing.assert_array_equal(got.toarray(), dense)
