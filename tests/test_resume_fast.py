"""A finished eval re-run answers from the run directory without loading the model (issue: re-running a
finished eval loaded the model), and anything that could change a record sends it down the ordinary path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_dataset, records, run_cli

ROOT = Path(__file__).resolve().parents[1]
FINISHED = "already holds this run"


@pytest.fixture()
def fx(tmp_path):
    return make_dataset(tmp_path / "fx", n=8)


def _args(model, spec, data, out, *extra):
    return ["eval", "--model", model, "--task", str(spec), "--data", str(data), "--out", str(out), "-q", *extra]


def _rerun_in_subprocess(args: list[str]) -> dict:
    """Run the CLI in a fresh interpreter; report its exit code and whether torch/transformers got imported."""
    code = (
        "import json, sys\n"
        "from vopd_bench.cli import main\n"
        "rc = 0\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = int(e.code or 0)\n"
        "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "stderr": p.stderr}


def test_finished_rerun_loads_no_model(tiny_model, fx, tmp_path):
    data, spec = fx
    out = tmp_path / "run"
    assert run_cli(_args(tiny_model, spec, data, out)) == 0
    before = {v: (out / "samples" / "fx" / f"{v}.jsonl").read_bytes() for v in ("full", "crop")}
    results = json.loads((out / "results.json").read_text())
    assert len(results["complete"]) == 1
    again = _rerun_in_subprocess(_args(tiny_model, spec, data, out))
    assert again["rc"] == 0 and FINISHED in again["stderr"]
    assert not again["torch"] and not again["transformers"]  # the model was never loaded
    assert {v: (out / "samples" / "fx" / f"{v}.jsonl").read_bytes() for v in ("full", "crop")} == before
    assert json.loads((out / "results.json").read_text())["tasks"] == results["tasks"]


def test_anything_that_changes_records_takes_the_ordinary_path(tiny_model, fx, tmp_path, capsys):
    data, spec = fx
    out = tmp_path / "run"
    assert run_cli(_args(tiny_model, spec, data, out)) == 0
    capsys.readouterr()

    def rerun(*extra: str, rc: int = 0) -> str:
        assert run_cli(_args(tiny_model, spec, data, out, *extra)) == rc
        return capsys.readouterr().err

    assert FINISHED in rerun()
    # another generation setting is another run: still refused, never answered from the finished one
    assert "different configuration" in rerun("--max-new-tokens", "5", rc=2)
    assert FINISHED not in rerun("--views", "full")  # another view set: ordinary path (nothing generated)
    assert FINISHED in rerun("--views", "full")  # ...which is now finished too
    assert FINISHED not in rerun("--limit", "4")  # rewrites the task's results for 4 items
    assert FINISHED not in rerun()  # so the 8-item results must be recomputed, not read back
    assert json.loads((out / "results.json").read_text())["tasks"]["fx"]["views"]["full"]["n"] == 8
    assert FINISHED in rerun()
    items = data / "items.jsonl"
    items.write_text(items.read_text())  # same content, new mtime: the data may have changed
    assert FINISHED not in rerun()
    p = out / "samples" / "fx" / "full.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:-1]))  # a record lost: the ordinary resume must redo it
    assert FINISHED not in rerun()
    assert len(records(out, "fx", "full")) == 8
    assert FINISHED not in rerun("--overwrite")


def test_results_digest_survives_the_file(tmp_path):
    """An empty view's NaN accuracy is null once results.json is read back: the finished-run check must still match."""
    from vopd_bench.resume import _digest
    from vopd_bench.rundir import RunDir
    from vopd_bench.schema import Results, TaskResult, ViewStats

    res = Results(tasks={"t": TaskResult(views={"full": ViewStats(n=3, accuracy=0.5, ci_low=0.1, ci_high=0.9,
                                                                  parse_failures=0),
                                                "crop": ViewStats(n=0, accuracy=float("nan"), ci_low=float("nan"),
                                                                  ci_high=float("nan"), parse_failures=0)})})
    run = RunDir(tmp_path)
    run.write_results(res)
    assert _digest(run.read_results(), ["t"]) == _digest(res, ["t"])
