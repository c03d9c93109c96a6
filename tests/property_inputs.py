"""External inputs for the property test (tests/test_property.py): data files, a listed
directory and environment variables that reactors read.

An example's data directory (``<example>/data``, outside the plant directory) holds:

* data files ``d{k}.txt`` / ``d{k}.npy`` and an alternate ``d{k}b.*`` of the same kind, each a
  few small integers (text: one ``%03d`` per line, so a file of other values with as many lines
  has the same size; ``.npy``: an int64 array). A reactor reads ``d{k}`` through the module
  constant ``D{k}`` (a ``str`` or a ``pathlib.Path``) or through the config parameter ``f{k}``,
  which points at ``d{k}`` or at its alternate; it adds the sum of the numbers to its value.
  Readers: the module's helper ``read_numbers``, ``open``, ``pathlib.Path.read_text``,
  ``np.load``.
* ``listed/``, a directory some reactors list (``os.listdir``, ``os.scandir``, ``glob``,
  ``Path.iterdir``; path from the constant ``LISTED`` or the parameter ``folder``), reading every
  file found.

Reactors and subreactors read ``PYPLANT_PROP_X0``/``PYPLANT_PROP_X1``
(``os.environ.get``, ``os.getenv``, ``os.environ[...]`` after ``in``), default ``'1'``.

Data files start a day old (research data is old: a cached hash is trusted at once, so the stat
signature does the work). Edits: rewrite a file with other content, with the same content, touch
it (mtime only), replace it by a file of the same size (``os.replace``, old mtime restored, or
in place), restore an earlier content, point ``f{k}`` at the other file, add or remove a file of
``listed/``; set a variable to a new value (``'02'`` and ``' 2'`` read as 2: early cutoff), unset
it, set it back to its earlier value (A -> B -> A finds A's traces).

The model (``external``) describes what a reactor read as values: each file's kind and numbers,
the sorted names of ``listed/``, each variable's value or None. An execution matches when these
are equal, as for config values; the paths read through parameters are config values.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

ENV_NAMES = ("PYPLANT_PROP_X0", "PYPLANT_PROP_X1")
ENV_VALUES = ("0", "1", "2", "3", "02", " 2")   # '02' and ' 2' read as 2: same value, new text
ENV_DEFAULT = "1"
DAY_NS = 86_400 * 10**9
numbers = st.lists(st.integers(0, 40), min_size=1, max_size=3)

INPUT_EDIT_KINDS = ["file_rewrite", "file_same", "file_touch", "file_same_size", "file_back",
                    "config_file", "listed_add", "listed_remove", "env_change", "env_unset",
                    "env_back"]


@dataclass
class DataFile:
    kind: str                   # "txt" or "npy"
    values: list[int]

    def identity(self) -> tuple:
        return (self.kind, tuple(self.values))


@dataclass
class FileRead:
    k: int                      # data file d{k}
    via_config: bool            # path from config f{k}; else the module constant D{k}
    style: int                  # 0 read_numbers(), 1 open / np.load, 2 pathlib / np.load(Path)


@dataclass
class Reads:
    """What one reactor reads from outside the plant."""
    files: list[FileRead] = field(default_factory=list)
    listing: int | None = None  # 0 os.listdir, 1 os.scandir, 2 glob.glob, 3 Path.iterdir
    listing_via_config: bool = False
    env: list[tuple[int, int]] = field(default_factory=list)  # (variable, style)


@dataclass
class Inputs:
    """The data directory and the environment of one example."""
    kinds: list[str]                    # kind of d{k} (its alternate has the same)
    path_objects: list[bool]            # D{k} is a pathlib.Path (else a str)
    files: dict[str, DataFile]          # relative path -> content
    alt: list[bool]                     # config f{k} points at d{k}b
    env: dict[str, str | None]
    history: dict[str, list] = field(default_factory=dict)  # earlier contents, for A -> B -> A
    root: str = ""
    added: int = 0                      # files added to listed/ so far

    def main(self, k: int) -> str:
        return f"d{k}.{self.kinds[k]}"

    def chosen(self, k: int) -> str:
        return f"d{k}b.{self.kinds[k]}" if self.alt[k] else self.main(k)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def params(self) -> dict[str, str]:
        """Config parameters naming paths: f{k} and folder."""
        out = {f"f{k}": self.path(self.chosen(k)) for k in range(len(self.kinds))}
        out["folder"] = self.path("listed")
        return out

    def listed(self) -> list[str]:
        return sorted(n for n in self.files if n.startswith("listed/"))


# --- strategies ----------------------------------------------------------------------------

def inputs(draw) -> Inputs:
    n = draw(st.integers(0, 2))
    kinds = [draw(st.sampled_from(["txt", "npy"])) for _ in range(n)]
    files = {}
    for k, kind in enumerate(kinds):
        files[f"d{k}.{kind}"] = DataFile(kind, draw(numbers))
        files[f"d{k}b.{kind}"] = DataFile(kind, draw(numbers))
    for m in range(draw(st.integers(0, 3))):
        files[f"listed/e{m}.txt"] = DataFile("txt", draw(numbers))
    env = {name: draw(st.none() | st.sampled_from(ENV_VALUES)) for name in ENV_NAMES}
    return Inputs(kinds=kinds, path_objects=[draw(st.booleans()) for _ in range(n)], files=files,
                  alt=[draw(st.booleans()) for _ in range(n)], env=env,
                  added=sum(n.startswith("listed/") for n in files))


def reads(draw, world_inputs: Inputs) -> Reads:
    n = len(world_inputs.kinds)
    ks = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n)) if n and draw(st.booleans()) else []
    files = [FileRead(k, draw(st.booleans()), draw(st.integers(0, 2))) for k in ks]
    listing = draw(st.integers(0, 3)) if draw(st.integers(0, 3)) == 0 else None
    env = []
    if draw(st.booleans()):
        env = [(v, draw(st.integers(0, 2)))
               for v in draw(st.lists(st.integers(0, len(ENV_NAMES) - 1), unique=True, min_size=1))]
    return Reads(files=files, listing=listing, listing_via_config=draw(st.booleans()), env=env)


# --- source ----------------------------------------------------------------------------------

def render_constants(inp: Inputs) -> list[str]:
    """Module constants naming the data, and the module's reader."""
    lines = [f"DATA = {inp.root!r}"]
    for k in range(len(inp.kinds)):
        if inp.path_objects[k]:
            lines.append(f"D{k} = pathlib.Path(DATA) / {inp.main(k)!r}")
        else:
            lines.append(f"D{k} = {inp.path(inp.main(k))!r}")
    lines += ["LISTED = os.path.join(DATA, 'listed')", "", "",
              "def read_numbers(path):",
              "    if str(path).endswith('.npy'):",
              "        return int(np.sum(np.load(path)))",
              "    with open(path) as f:",
              "        return sum(int(t) for t in f.read().split())", "", ""]
    return lines


def _param(name: str, read_style: bool) -> str:
    return f"pipe.read_config({name!r})" if read_style else f"config.{name}"


def env_expr(v: int, style: int) -> str:
    name = ENV_NAMES[v]
    return {0: f"os.environ.get({name!r}, {ENV_DEFAULT!r})",
            1: f"os.getenv({name!r}, {ENV_DEFAULT!r})",
            2: f"(os.environ[{name!r}] if {name!r} in os.environ else {ENV_DEFAULT!r})"}[style]


def render_reads(r: Reads, kinds: list[str], read_style: bool) -> list[str]:
    """Lines of a reactor body adding what it reads to ``acc``."""
    lines = []
    for fr in r.files:
        path = _param(f"f{fr.k}", read_style) if fr.via_config else f"D{fr.k}"
        npy = kinds[fr.k] == "npy"
        if fr.style == 0:
            lines.append(f"    acc = acc + read_numbers({path})")
        elif fr.style == 1 and npy:
            lines.append(f"    acc = acc + int(np.sum(np.load({path})))")
        elif fr.style == 1:
            lines += [f"    with open({path}) as f:",
                      "        acc = acc + sum(int(t) for t in f.read().split())"]
        elif npy:
            lines.append(f"    acc = acc + int(np.load(pathlib.Path({path})).sum())")
        else:
            lines.append(f"    acc = acc + sum(int(t) for t in pathlib.Path({path}).read_text().split())")
    if r.listing is not None:
        folder = _param("folder", read_style) if r.listing_via_config else "LISTED"
        found = {0: f"[os.path.join({folder}, n) for n in os.listdir({folder})]",
                 1: None,
                 2: f"glob.glob(os.path.join({folder}, '*'))",
                 3: f"pathlib.Path({folder}).iterdir()"}[r.listing]
        if found is None:
            lines += [f"    with os.scandir({folder}) as entries:",
                      "        found = [e.path for e in entries]"]
        else:
            lines.append(f"    found = {found}")
        lines += ["    for path in sorted(found):",
                  "        acc = acc + read_numbers(path)"]
    for v, style in r.env:
        lines.append(f"    acc = acc + int({env_expr(v, style)})")
    return lines


# --- the model -------------------------------------------------------------------------------

def env_value(inp: Inputs, v: int) -> int:
    value = inp.env[ENV_NAMES[v]]
    return int(ENV_DEFAULT if value is None else value)


def value_of_reads(inp: Inputs, r: Reads) -> int:
    total = sum(sum(inp.files[inp.chosen(fr.k) if fr.via_config else inp.main(fr.k)].values)
                for fr in r.files)
    if r.listing is not None:
        total += sum(sum(inp.files[n].values) for n in inp.listed())
    return total + sum(env_value(inp, v) for v, _ in r.env)


def params_of_reads(r: Reads) -> list[str]:
    return [f"f{fr.k}" for fr in r.files if fr.via_config] + \
        (["folder"] if r.listing is not None and r.listing_via_config else [])


def external(inp: Inputs, r: Reads, sub_env: int | None) -> frozenset:
    """What the reactor read from outside, as values (see the module docstring)."""
    out = set()
    for fr in r.files:
        name = inp.chosen(fr.k) if fr.via_config else inp.main(fr.k)
        out.add(("file", name, inp.files[name].identity()))
    if r.listing is not None:
        out.add(("listing", tuple(os.path.basename(n) for n in inp.listed())))
        out.update(("file", n, inp.files[n].identity()) for n in inp.listed())
    variables = [v for v, _ in r.env] + ([sub_env] if sub_env is not None else [])
    out.update(("env", ENV_NAMES[v], inp.env[ENV_NAMES[v]]) for v in variables)
    return frozenset(out)


# --- the disk and the environment ------------------------------------------------------------

def _encode(f: DataFile, path: str) -> None:
    if f.kind == "npy":
        np.save(path, np.array(f.values, dtype=np.int64))  # path ends with .npy: kept as is
    else:
        with open(path, "w") as out:
            out.write("".join(f"{v:03d}\n" for v in f.values))


def materialize(inp: Inputs, root: str) -> None:
    """Write every file under ``root`` (a day old)."""
    inp.root = root
    os.makedirs(os.path.join(root, "listed"))
    old = time.time_ns() - DAY_NS
    for name, f in inp.files.items():
        _encode(f, inp.path(name))
        os.utime(inp.path(name), ns=(old, old))


def sync_env(inp: Inputs, monkeypatch: Any) -> None:
    """Make ``os.environ`` say what ``inp.env`` says (restored when the example ends)."""
    for name, value in inp.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def _replace(inp: Inputs, name: str, f: DataFile, keep_mtime: bool) -> None:
    """Write ``f`` to a new file and rename it over ``name`` (a new inode)."""
    path = inp.path(name)
    st = os.stat(path)
    tmp = inp.path(f"replacement{os.path.splitext(name)[1]}")  # outside listed/
    _encode(f, tmp)
    if keep_mtime:
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def _different(draw: Callable, old: list[int], same_length: bool) -> list[int]:
    new = draw(st.lists(st.integers(0, 40), min_size=len(old), max_size=len(old))) \
        if same_length else draw(numbers)
    if new == old:
        new = [(new[0] + 1) % 41] + new[1:]
    return new


def apply_input_edit(draw: Callable, inp: Inputs, kind: str) -> str:
    """Perform one edit of the data directory or the environment; returns a description."""
    if kind.startswith("env_"):
        return _env_edit(draw, inp, kind)
    if kind == "config_file" and inp.kinds:
        k = draw(st.integers(0, len(inp.kinds) - 1))
        inp.alt[k] = not inp.alt[k]
        return f"config f{k} -> {inp.chosen(k)}"
    removed = [n for n in sorted(inp.history) if n.startswith("listed/") and n not in inp.files]
    if kind == "listed_add" and removed and draw(st.booleans()):
        name = draw(st.sampled_from(removed))  # back as it was: the old listing verifies again
        inp.files[name] = inp.history[name][-1]
        _encode(inp.files[name], inp.path(name))
        return f"restored {name} {inp.files[name].values}"
    if kind == "listed_remove" and inp.listed():
        name = draw(st.sampled_from(inp.listed()))
        inp.history.setdefault(name, []).append(inp.files.pop(name))
        os.remove(inp.path(name))
        return f"removed {name}"
    if kind in ("listed_add", "listed_remove", "config_file") or not inp.files:
        name = f"listed/e{inp.added}.txt"
        inp.added += 1
        inp.files[name] = DataFile("txt", draw(numbers))
        _encode(inp.files[name], inp.path(name))
        return f"added {name} {inp.files[name].values}"
    name = draw(st.sampled_from(sorted(inp.files)))
    f = inp.files[name]
    path = inp.path(name)
    if kind == "file_touch":
        if draw(st.booleans()):
            os.utime(path)  # now
            return f"touched {name}"
        delta = draw(st.sampled_from([-30, -3, 3, 30])) * 10**9
        st_ = os.stat(path)
        os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + delta))
        return f"mtime of {name} moved by {delta // 10**9} s"
    if kind == "file_same":
        replace = draw(st.booleans())
        _replace(inp, name, f, keep_mtime=False) if replace else _encode(f, path)
        return f"{name} {'replaced by' if replace else 'rewritten with'} the same content"
    history = inp.history.setdefault(name, [])
    if kind == "file_back" and history:
        new = history.pop()
    else:
        new = DataFile(f.kind, _different(draw, f.values, same_length=kind == "file_same_size"))
    history.append(f)
    inp.files[name] = new
    how = "rewritten"
    if kind == "file_same_size":
        how = draw(st.sampled_from(["replaced, old mtime kept", "replaced", "rewritten in place"]))
    if how.startswith("replaced"):
        _replace(inp, name, new, keep_mtime=how.endswith("kept"))
    else:
        _encode(new, path)
    return f"{name} {how}: {f.values} -> {new.values}"


def _env_edit(draw: Callable, inp: Inputs, kind: str) -> str:
    name = draw(st.sampled_from(ENV_NAMES))
    old = inp.env[name]
    history = inp.history.setdefault(name, [])
    if kind == "env_back" and history:
        new = history.pop()
    elif kind == "env_unset" and old is not None:
        new = None
    else:
        new = draw(st.sampled_from([v for v in ENV_VALUES if v != old]))
    history.append(old)
    inp.env[name] = new
    return f"environment {name}: {old!r} -> {new!r}"
