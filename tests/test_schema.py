"""The run directory speaks the typed records of `vopd_bench.schema`: every record type round-trips, what a real
run writes is exactly the types' fields (a field written without being a field, or a field no writer fills,
fails here), and a run directory written by the release before the types (commit 22542a9, no `version`
anywhere) still loads into the types, resumes without recomputing anything, and reports."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

import vopd_bench
from vopd_bench.rundir import RunDir
from vopd_bench.schema import (
    SCHEMA_VERSION,
    Closure,
    CurvePoint,
    GapStats,
    Record,
    Results,
    RunConfig,
    SampleRecord,
    TaskResult,
    TrainRunConfig,
    ViewStats,
)

LEGACY = Path(__file__).parent / "fixtures" / "legacy_eval_22542a9"
# made by `git archive 22542a9 | tar -x -C /tmp/old` and `PYTHONPATH=/tmp/old python -m vopd_bench.cli eval
# --model vopd-tiny --task synth --limit 6 --out /tmp/legacy_eval -q`; the old package lay here:
LEGACY_ROOT = "/tmp/old/vopd_bench"


def _fields(cls: type[Record]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"extra"}


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory) -> Path:
    """A real run of the current code: the reference model on 4 synth items, full and crop."""
    out = tmp_path_factory.mktemp("fresh") / "run"
    assert run_cli(["eval", "--model", "vopd-tiny", "--task", "synth", "--limit", "4", "--out", str(out), "-q"]) == 0
    return out


@pytest.fixture()
def legacy_copy(tmp_path) -> Path:
    """The old release's run directory, as if that release had been installed where this one is: its recorded
    package paths (model folder, task spec file) point at this package."""
    d = tmp_path / "legacy"
    shutil.copytree(LEGACY, d)
    cfg = d / "config.json"
    cfg.write_text(cfg.read_text().replace(LEGACY_ROOT, str(Path(vopd_bench.__file__).parent)))
    return d


# ----------------------------------------------------------------------------- round trips
def _examples() -> list[Record]:
    vs = ViewStats(n=6, accuracy=0.5, ci_low=0.2, ci_high=0.8, parse_failures=1, parse_failure_rate=1 / 6, errors=2,
                   skipped_no_box=3, extra={"new_key": [1, 2]})
    gap = GapStats(value=33.3, ci_low=0.0, ci_high=66.7, p_value=0.5, n_pairs=6, crop_only_correct=2,
                   full_only_correct=0, clustered=False)
    closure = Closure(value=0.5, ci_low=0.4, ci_high=0.6, n_items=200, gap_reduction=0.54, base_step=0)
    task = TaskResult(views={"full": vs, "crop": vs}, gap=gap, chance=0.25,
                      categories={"colour": TaskResult(views={"full": vs}, chance=0.25)}, closure=closure)
    return [
        SampleRecord(id="a", task="synth", view="crop", answer="A", response="Answer: A", parsed="A", correct=True,
                     error=None, retryable=False, latency=0.1, n_tokens=4, prompt_hash="p", crop_box=[1, 2, 3, 4],
                     category="colour", group="g", n_options=4, extra={"judge": "x"}),
        SampleRecord(id="b", task="synth", view="full", error="cannot decode", retryable=True, latency=0.0),
        vs, gap, closure, task,
        Results(tasks={"synth": task}, average={"views": {}, "gap": None}, model="m", backend="hf",
                views={"synth": ["full", "crop"]}, limit=6, complete={"k": {"samples": {}, "results": "d"}}),
        RunConfig(vopd_bench="0.1.0", created="now", backend={"backend": "hf"}, backend_config={"batch_size": 16},
                  tasks={"synth": {"loader": "synth"}}, views={"synth": ["full"]}, seed=3, limit=6, world_size=2,
                  versions={"python": "3.11"}, identity={"model": "m"}, extra={"source": {"x": "y"}}),
        CurvePoint(step=10, checkpoint="c", eval_dir="e", tasks={"synth": task}, roles={"synth": "eval"},
                   train={"loss": 1.0}, eval_s=2.0, warnings=["w"]),
        TrainRunConfig(vopd_bench="0.1.0", created="then", resumed="now", model="vopd-tiny", model_path="/m", seed=1,
                       world_size=2, train_task={"name": "synth", "n_prompts": 8}, config={"lr": 1e-3},
                       versions={"python": "3.11"}, extra={"note": "x"}),
    ]


@pytest.mark.parametrize("rec", _examples(), ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips(rec: Record):
    d = rec.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON
    assert type(rec).from_dict(d) == rec
    assert type(rec).from_dict(json.loads(json.dumps(d))) == rec


def test_the_examples_cover_every_record_type():
    kinds = {type(r) for r in _examples()}
    assert kinds == {c for c in vars(__import__("vopd_bench.schema").schema).values()
                     if isinstance(c, type) and issubclass(c, Record) and c is not Record}


# ----------------------------------------------------------------------------- what a real run writes
def test_a_real_run_writes_exactly_the_types_fields(fresh_run: Path):
    """Each file's keys are its type's fields: nothing written beside the types, no field the writer drops."""
    run = RunDir(fresh_run)
    config = json.loads(run.config_path.read_text())
    assert set(config) == _fields(RunConfig) and config["version"] == SCHEMA_VERSION
    results = json.loads(run.results_path.read_text())
    assert set(results) == _fields(Results) and results["version"] == SCHEMA_VERSION
    task = results["tasks"]["synth"]
    assert set(task) == _fields(TaskResult) - {"closure"}  # closure: curve points only
    assert set(task["gap"]) == _fields(GapStats)
    for block in [task, *task["categories"].values()]:
        for stats in block["views"].values():
            # judge counts only with a judge (test_judge_eval), circular ones only with --circular (test_circular)
            assert set(stats) == _fields(ViewStats) - {"judged", "judge_agreement", "circular_accuracy", "circular_n", "grounding"}
    lines = [json.loads(x) for v in ("full", "crop") for x in run.samples_path("synth", v).read_text().splitlines()]
    assert lines and all(set(x) == _fields(SampleRecord) and x["version"] == SCHEMA_VERSION for x in lines)
    # every sample field is filled by the writer on some record of a clean run (the error fields only fill on failure,
    # `group` only for tasks that repeat a question: test_eval / test_exit_codes / test_loaders cover those)
    recs = [SampleRecord.from_dict(x) for x in lines]
    defaults = SampleRecord(id="", task="", view="")
    unfilled = {f for f in _fields(SampleRecord)
                if all(getattr(r, f) == getattr(defaults, f) for r in recs)}
    assert unfilled == {"error", "retryable", "group", "version"}


def test_the_typed_readers_read_back_what_was_written(fresh_run: Path):
    run = RunDir(fresh_run)
    results = run.read_results()
    assert isinstance(results, Results) and results.to_dict() == json.loads(run.results_path.read_text())
    assert all(not t.extra for t in results.tasks.values())
    config = run.read_config()
    assert isinstance(config, RunConfig) and not config.extra and config.identity["model"] == "vopd-tiny"
    for view in ("full", "crop"):
        typed, plain = run.samples("synth", view), run.load_records("synth", view)
        assert list(typed) == list(plain) and all(typed[i].to_dict() == plain[i] for i in plain)
        assert all(not r.extra for r in typed.values())


# ----------------------------------------------------------------------------- the previous release's run
def test_the_legacy_run_loads_into_the_types():
    run = RunDir(LEGACY)
    raw_config = json.loads(run.config_path.read_text())
    raw_results = json.loads(run.results_path.read_text())
    assert "version" not in raw_config and "version" not in raw_results  # it predates the types
    config = run.read_config()
    assert config.identity == raw_config["identity"] and config.backend["model"] == "vopd-tiny" and not config.extra
    results = run.read_results()
    assert not results.extra and set(results.tasks) == {"synth"}
    assert results.tasks["synth"].to_dict() == raw_results["tasks"]["synth"]  # every number as written
    assert results.tasks["synth"].gap.value == pytest.approx(100 / 3)
    for view in ("full", "crop"):
        recs = run.samples("synth", view)
        assert len(recs) == 6 and all(r.n_options is None and not r.extra for r in recs.values())
        plain = run.load_records("synth", view)
        assert all({k: v for k, v in recs[i].to_dict().items() if k in plain[i]} == plain[i] for i in plain)


def test_the_legacy_run_resumes_without_recomputing(legacy_copy: Path):
    before = {p: p.read_bytes() for p in (legacy_copy / "samples").rglob("*.jsonl")}
    old = RunDir(legacy_copy).read_results()
    assert run_cli(["eval", "--model", "vopd-tiny", "--task", "synth", "--limit", "6", "--out", str(legacy_copy),
                    "-q"]) == 0
    assert {p: p.read_bytes() for p in (legacy_copy / "samples").rglob("*.jsonl")} == before  # nothing recomputed
    new = RunDir(legacy_copy).read_results()
    # the same numbers, now versioned (the old release wrote no chance level; the current one adds it)
    assert new.version == SCHEMA_VERSION and new.complete and old.tasks["synth"].chance is None
    for t_new, t_old in [(new.tasks["synth"], old.tasks["synth"]),
                         *zip(new.tasks["synth"].categories.values(), old.tasks["synth"].categories.values())]:
        assert (t_new.views, t_new.gap) == (t_old.views, t_old.gap)
    assert json.loads((legacy_copy / "config.json").read_text())["version"] == SCHEMA_VERSION


def test_the_legacy_run_reports(tmp_path: Path):
    out = tmp_path / "report"
    assert run_cli(["report", str(LEGACY), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "vopd-tiny" in md and "33.3" in md  # its gap, +33.3 points

