"""Edit scenarios in fresh processes: run a script, edit a source file, run again.

Each run is a new Python process (``conftest.run_script``), as a user re-running a script. A
scenario checks three things: an unchanged re-run starts only the target; after the edit the
reactors that must re-run do (``reactor_started`` events) and no other; and the result equals
that of a from-scratch run in an empty plant directory.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from conftest import result_of, run_script, write_script

# produce -> x -> target; `helpers.compute(3)` is the code under test
PIPELINE = '''
import helpers

@ReactorFunc
def produce(pipe):
    pipe.send("x", helpers.compute(3))

@ReactorFunc
def other(pipe):
    pipe.send("y", 1)

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    y = yield pipe.receive("y")
    RESULT["x"] = x

plant = open_plant()
plant.add_reactors(target, produce, other)
plant.run_reactor(target)
explain = plant.explain()
plant.shutdown()
report(explain=explain)
'''


class Scenario:
    """A script (``body``) and a module ``helpers.py`` next to it, in ``directory``."""

    def __init__(self, directory: Path, helpers: str, body: str = PIPELINE, module: str = "helpers"):
        self.directory = directory
        self.module = directory / f"{module}.py"
        self.module.write_text(textwrap.dedent(helpers))
        self.script = write_script(directory / "pipeline.py", body)
        self.runs = 0

    def run(self, plant: str = "plant") -> dict:
        self.runs += 1
        return result_of(run_script(self.script, self.directory / plant))

    def from_scratch(self) -> dict:
        scratch = self.directory / f"scratch-{self.runs}"
        try:
            return self.run(scratch.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def edit(self, old: str, new: str, path: Path | None = None) -> None:
        path = path or self.module
        text = path.read_text()
        assert old in text, f"{old!r} not in {path.name}"
        path.write_text(text.replace(old, new))

    def check(self, old: str, new: str, rerun: set[str], path: Path | None = None,
              changes_result: bool = True) -> dict:
        """Run, run unchanged, edit ``old`` -> ``new``, run: ``rerun`` (and the target) start,
        nothing else, and the result is that of a run from scratch (and differs from the
        first result when the edit ``changes_result``)."""
        first = self.run()
        unchanged = self.run()
        assert unchanged["started"] == ["target"], unchanged["explain"]
        self.edit(old, new, path)
        edited = self.run()
        scratch = self.from_scratch()
        assert edited["result"] == scratch["result"], (edited["result"], scratch["result"])
        assert sorted(edited["started"]) == sorted({"target"} | rerun), edited["explain"]
        if changes_result:
            assert edited["result"] != first["result"], "the edit was meant to change the result"
        return edited
