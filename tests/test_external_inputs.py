"""Files, directory listings and environment variables a reactor reads are part of its trace.

Each scenario runs a real script in a new process per run (a user re-running a script), edits a
data file or an environment variable between runs, and checks what re-ran, what ``explain()``
says, and that the result equals a from-scratch run.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import result_of, run_script, write_script

READ_CSV = '''
@ReactorFunc
def load(pipe, config):
    with open(config.path) as f:
        rows = [line.strip() for line in f if line.strip()]
    pipe.send('rows', rows)

@ReactorFunc
def count(pipe):
    rows = yield pipe.receive('rows')
    pipe.send('n', len(rows))

@ReactorFunc
def show(pipe):
    RESULT['n'] = yield pipe.receive('n')

with open_plant({'path': ARGS[0]}) as plant:
    plant.run_reactor(show)
    report(explain=plant.explain())
'''


def _bump_mtime(path):
    """Make sure a rewrite is seen even on a coarse file clock (a new mtime_ns)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_input_file_content_change_reruns_its_reader_and_downstream(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a\nb\n")
    script = write_script(tmp_path / "s.py", READ_CSV)
    first = result_of(run_script(script, tmp_path / "p", str(data)))
    assert first["started"] == ["show", "count", "load"] and first["result"]["n"] == 2

    warm = result_of(run_script(script, tmp_path / "p", str(data)))
    assert warm["started"] == ["show"]

    data.write_text("a\nb\nc\n")  # same path, new content
    edited = result_of(run_script(script, tmp_path / "p", str(data)))
    assert edited["started"] == ["show", "load", "count"]
    assert edited["result"]["n"] == 3
    assert edited["explain"]["load"] == "input file data.csv changed" or \
        edited["explain"]["load"].startswith("input file ") and "data.csv changed" in edited["explain"]["load"]
    scratch = result_of(run_script(script, tmp_path / "fresh", str(data)))
    assert scratch["result"] == edited["result"]


def test_same_content_rewritten_is_not_a_change(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a\nb\n")
    script = write_script(tmp_path / "s.py", READ_CSV)
    run_script(script, tmp_path / "p", str(data))
    data.write_text("a\nb\n")
    _bump_mtime(data)
    again = result_of(run_script(script, tmp_path / "p", str(data)))
    assert again["started"] == ["show"]


def test_file_replaced_with_same_size_and_mtime_restored_is_still_seen(tmp_path):
    """The stat signature includes the inode: a file replaced by rename is hashed again."""
    data = tmp_path / "data.csv"
    data.write_text("a\nb\n")
    script = write_script(tmp_path / "s.py", READ_CSV)
    run_script(script, tmp_path / "p", str(data))
    st = os.stat(data)
    replacement = tmp_path / "new.csv"
    replacement.write_text("a\nc\n")  # same size
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, data)
    again = result_of(run_script(script, tmp_path / "p", str(data)))
    assert again["started"] == ["show", "load", "count"]


def test_numpy_load_and_a_helper_reading_files_are_tracked(tmp_path):
    arr = tmp_path / "x.npy"
    np.save(arr, np.arange(3))
    script = write_script(tmp_path / "s.py", '''
def read(path):
    return np.load(path)

@ReactorFunc
def load(pipe, config):
    pipe.send('x', read(config.path))

@ReactorFunc
def show(pipe):
    RESULT['sum'] = int((yield pipe.receive('x')).sum())

with open_plant({'path': ARGS[0]}) as plant:
    plant.run_reactor(show)
    report()
''')
    assert result_of(run_script(script, tmp_path / "p", str(arr)))["result"]["sum"] == 3
    np.save(arr, np.arange(4))
    out = result_of(run_script(script, tmp_path / "p", str(arr)))
    assert out["started"] == ["show", "load"] and out["result"]["sum"] == 6


def test_directory_listing_is_tracked(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "a.txt").write_text("1")
    script = write_script(tmp_path / "s.py", '''
@ReactorFunc
def gather(pipe, config):
    total = 0
    for name in sorted(os.listdir(config.folder)):
        with open(os.path.join(config.folder, name)) as f:
            total += int(f.read())
    pipe.send('total', total)

@ReactorFunc
def show(pipe):
    RESULT['total'] = yield pipe.receive('total')

with open_plant({'folder': ARGS[0]}) as plant:
    plant.run_reactor(show)
    report(explain=plant.explain())
''')
    assert result_of(run_script(script, tmp_path / "p", str(folder)))["result"]["total"] == 1
    (folder / "b.txt").write_text("2")  # a new file: no file read before changed
    out = result_of(run_script(script, tmp_path / "p", str(folder)))
    assert out["started"] == ["show", "gather"] and out["result"]["total"] == 3
    assert out["explain"]["gather"].startswith("directory listing of ")


def test_track_file_by_hand_for_c_readers(tmp_path):
    h5 = tmp_path / "in.h5"
    import h5py
    with h5py.File(h5, "w") as f:
        f["x"] = np.arange(5)
    script = write_script(tmp_path / "s.py", '''
import h5py

@ReactorFunc
def load(pipe, config):
    pipe.track_file(config.path)
    with h5py.File(config.path, "r") as f:
        pipe.send('x', f["x"][...])

@ReactorFunc
def show(pipe):
    RESULT['sum'] = int((yield pipe.receive('x')).sum())

with open_plant({'path': ARGS[0]}) as plant:
    plant.run_reactor(show)
    report()
''')
    assert result_of(run_script(script, tmp_path / "p", str(h5)))["result"]["sum"] == 10
    assert result_of(run_script(script, tmp_path / "p", str(h5)))["started"] == ["show"]
    with h5py.File(h5, "w") as f:
        f["x"] = np.arange(6)
    out = result_of(run_script(script, tmp_path / "p", str(h5)))
    assert out["started"] == ["show", "load"] and out["result"]["sum"] == 15


ENV_SCRIPT = '''
@ReactorFunc
def norm(pipe):
    order = int(os.environ.get("NORM_ORD", "2"))
    pipe.send('n', float(np.linalg.norm(np.array([3.0, 4.0]), ord=order)))

@ReactorFunc
def other(pipe):
    pipe.send('o', 1)

@ReactorFunc
def show(pipe):
    RESULT['n'] = yield pipe.receive('n')
    RESULT['o'] = yield pipe.receive('o')

with open_plant() as plant:
    plant.run_reactor(show)
    report(explain=plant.explain())
'''


def test_environment_variable_read_in_reactor_is_tracked(tmp_path):
    script = write_script(tmp_path / "s.py", ENV_SCRIPT)
    env = {"NORM_ORD": "2"}
    first = result_of(run_script(script, tmp_path / "p", env_extra=env))
    assert first["result"]["n"] == 5.0
    assert result_of(run_script(script, tmp_path / "p", env_extra=env))["started"] == ["show"]
    changed = result_of(run_script(script, tmp_path / "p", env_extra={"NORM_ORD": "1"}))
    assert changed["started"] == ["show", "norm"] and changed["result"]["n"] == 7.0
    assert changed["explain"]["norm"] == "environment variable NORM_ORD changed"
    assert changed["explain"]["other"] == "up to date"


def test_unset_environment_variable_is_tracked_too(tmp_path):
    script = write_script(tmp_path / "s.py", ENV_SCRIPT)
    clean = {k: v for k, v in os.environ.items() if k != "NORM_ORD"}
    os.environ.pop("NORM_ORD", None)
    assert result_of(run_script(script, tmp_path / "p"))["result"]["n"] == 5.0
    out = result_of(run_script(script, tmp_path / "p", env_extra={"NORM_ORD": "1"}))
    assert out["started"] == ["show", "norm"] and out["result"]["n"] == 7.0
    assert "NORM_ORD" not in clean


def test_track_files_false_turns_it_off(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a\n")
    script = write_script(tmp_path / "s.py", READ_CSV.replace("open_plant({'path': ARGS[0]})",
                                                              "_open_untracked({'path': ARGS[0]})")
                          .replace("@ReactorFunc\ndef load", '''def _open_untracked(config):
    plant = Plant(PLANT_DIR, track_files=False)
    plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
    plant.set_config(config)
    return plant

@ReactorFunc
def load''', 1))
    run_script(script, tmp_path / "p", str(data))
    data.write_text("a\nb\n")
    out = result_of(run_script(script, tmp_path / "p", str(data)))
    assert out["started"] == ["show"] and out["result"]["n"] == 1  # documented: not tracked


def test_files_inside_the_plant_and_written_files_are_not_inputs(tmp_path):
    script = write_script(tmp_path / "s.py", '''
from pyplant import Ingredient

@ReactorFunc
def make(pipe):
    path = pipe.allocate('out.txt', Ingredient.Type.file)
    with open(path, 'w') as f:
        f.write('hello')
    with open(os.path.join(os.path.dirname(PLANT_DIR), 'scratch.txt'), 'w') as f:
        f.write(str(os.getpid()))  # differs at every run

@ReactorFunc
def use(pipe):
    path = yield pipe.receive('out.txt')
    with open(path) as f:
        RESULT['text'] = f.read()

with open_plant() as plant:
    plant.run_reactor(use)
    trace = plant.warehouse.metadata.traces('make', limit=1)[0]
    report(files=list(trace.files), dirs=list(trace.dirs))
''')
    out = result_of(run_script(script, tmp_path / "p"))
    assert out["result"]["text"] == "hello"
    assert out["files"] == [] and out["dirs"] == []
    again = result_of(run_script(script, tmp_path / "p"))  # scratch.txt now differs
    assert again["started"] == ["use"]


def test_file_changed_while_the_reactor_reads_it_reruns_next_time(tmp_path):
    """Another writer changes the input while the reactor runs: what it read is unknown."""
    data = tmp_path / "data.txt"
    data.write_text("1")
    script = write_script(tmp_path / "s.py", '''
import subprocess

@ReactorFunc
def load(pipe, config):
    with open(config.path) as f:
        value = int(f.read())
    if ARGS[1:] == ["meddle"]:  # another process appends while the reactor still runs
        subprocess.run([sys.executable, "-c", f"open({config.path!r}, 'a').write('0')"], check=True)
    pipe.send('v', value)

@ReactorFunc
def show(pipe):
    RESULT['v'] = yield pipe.receive('v')

with open_plant({'path': ARGS[0]}) as plant:
    plant.run_reactor(show)
    report()
''')
    assert result_of(run_script(script, tmp_path / "p", str(data), "meddle"))["result"]["v"] == 1
    out = result_of(run_script(script, tmp_path / "p", str(data)))
    assert out["started"] == ["show", "load"] and out["result"]["v"] == 10
    assert result_of(run_script(script, tmp_path / "p", str(data)))["started"] == ["show"]


LIBRARY_SETS_ENV = '''
import fakelib_env_setup

@ReactorFunc
def uses(pipe):
    import fakelib_env_setup          # a library that sets a variable at import
    value = os.environ.get("PYPLANT_USER_KNOB", "default")   # the reactor's own read
    pipe.send("value", value + fakelib_env_setup.VALUE)

@ReactorFunc
def show(pipe):
    RESULT["value"] = yield pipe.receive("value")

plant = Plant(PLANT_DIR, libraryPackages=["fakelib_env_setup"])   # the walk does not import it
plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
with plant:
    for _ in range(2):               # one process, two runs: the second finds it cached
        STARTED.append("--")
        plant.run_reactor(show)
report()
'''


def test_a_variable_a_library_sets_while_being_imported_is_not_an_input(tmp_path):
    """scikit-learn sets KMP_DUPLICATE_LIB_OK at import: that read is the library's set-up,
    not an input, or every later run in the process would re-run the reactor. The reactor's
    own reads stay inputs."""
    lib = tmp_path / "site-packages"
    lib.mkdir()
    (lib / "fakelib_env_setup.py").write_text(
        "import os\nos.environ.setdefault('PYPLANT_FAKELIB', '1')\nVALUE = os.environ['PYPLANT_FAKELIB']\n")
    script = write_script(tmp_path / "env_lib.py", LIBRARY_SETS_ENV.replace(
        "import fakelib_env_setup\n", "", 1))
    # the directory counts as installed libraries for the child (as site-packages does)
    script.write_text(script.read_text().replace(
        "PLANT_DIR = sys.argv[1]",
        f"PLANT_DIR = sys.argv[1]\nimport pyplant.tracking as _t\n"
        f"_t._LIBRARY_DIRS += ({str(lib.resolve()) + os.sep!r},)\nsys.path.insert(0, {str(lib)!r})"))
    out = result_of(run_script(script, tmp_path / "plant"))
    assert out["started"] == ["--", "show", "uses", "--", "show"]
    assert out["result"]["value"] == "default1"
    out = result_of(run_script(script, tmp_path / "plant", env_extra={"PYPLANT_USER_KNOB": "x"}))
    assert out["started"] == ["--", "show", "uses", "--", "show"]  # its own read is an input
    assert out["result"]["value"] == "x1"


ENV_READS = {
    "environb": "os.environb.get(b'PP_X', b'-').decode()",
    "getenvb": "(os.getenvb(b'PP_X') or b'-').decode()",
    "iterated": "','.join(sorted(k for k in os.environ if k.startswith('PP_')))",
    "keys": "','.join(sorted(k for k in os.environ.keys() if k.startswith('PP_')))",
}


@pytest.mark.parametrize("how", sorted(ENV_READS))
def test_every_way_of_reading_the_environment_is_tracked(tmp_path, how):
    """Reads through ``os.environb`` and ``os.getenvb`` count as reads of the variable; a
    listing of the names (iterating ``os.environ`` or its keys) counts as a read of the set of
    names, so a variable added re-runs the reactor, and an unchanged environment does not."""
    script = write_script(tmp_path / "s.py", f'''
@ReactorFunc
def read(pipe):
    pipe.send('v', {ENV_READS[how]})

@ReactorFunc
def show(pipe):
    RESULT['v'] = yield pipe.receive('v')

with open_plant() as plant:
    plant.run_reactor(show)
    report(explain=plant.explain())
''')
    changed_env = {"PP_X": "b"} if how in ("environb", "getenvb") else {"PP_X": "a", "PP_Y": "c"}
    first = result_of(run_script(script, tmp_path / "p", env_extra={"PP_X": "a"}))
    assert first["result"]["v"] == ("a" if how in ("environb", "getenvb") else "PP_X")
    again = result_of(run_script(script, tmp_path / "p", env_extra={"PP_X": "a"}))
    assert again["started"] == ["show"]
    changed = result_of(run_script(script, tmp_path / "p", env_extra=changed_env))
    assert changed["started"] == ["show", "read"]
    assert changed["result"]["v"] == ("b" if how in ("environb", "getenvb") else "PP_X,PP_Y")
    assert changed["explain"]["read"] == ("environment variable PP_X changed" if how in ("environb", "getenvb")
                                          else "the names of the environment variables changed")
