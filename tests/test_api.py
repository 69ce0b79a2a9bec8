"""The Python API (`vopd_bench.evaluate / load_run / load_curve / train`) and its DataFrames, on the tiny model:
runs written by eval, by the lmms-eval importer and by an earlier release load alike; the notebook-style script
and the README's "Python API" code blocks run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_dataset

import vopd_bench
from vopd_bench.errors import UserError
from vopd_bench.frames import SAMPLE_COLUMNS, gap_from_samples, results_frame
from vopd_bench.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "fixtures" / "legacy_eval_22542a9"


def test_import_stays_cheap_and_train_is_both_package_and_function():
    cheap = ("import sys, vopd_bench; vopd_bench.load_run; "
             "print(sorted(m for m in ('torch', 'pandas', 'transformers') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", cheap], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"
    # `evaluate` and `train` are the API functions and the modules of those names, whichever is imported first
    both = ("import vopd_bench.evaluate as E, vopd_bench.train.config as c, vopd_bench; "
            "from vopd_bench.train import OPDConfig; from vopd_bench import evaluate, train; "
            "assert callable(evaluate) and callable(train) and evaluate is E and E.EvalConfig; "
            "assert vopd_bench.train.load_config is c.load_config and train.OPDConfig is OPDConfig; print('ok')")
    for code in (both, "import vopd_bench; assert callable(vopd_bench.evaluate) and callable(vopd_bench.train); " + both):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


@pytest.fixture(scope="module")
def fx_run(tiny_model, tmp_path_factory):
    """An eval of the tiny model on 6 boxed fixture items through the API."""
    root = tmp_path_factory.mktemp("api")
    data, spec = make_dataset(root / "fx", n=6)
    run = vopd_bench.evaluate(model=tiny_model, tasks=[str(spec)], data=str(data), out=root / "run", backend="hf",
                              batch_size=6)
    return run, data


def test_evaluate_returns_the_run_and_its_samples(fx_run):
    run, data = fx_run
    assert isinstance(run, vopd_bench.Run) and run.tasks == ["fx"] and run.views("fx") == ["full", "crop"]
    assert run.config.backend["backend"] == "hf" and run.config.limit is None
    df = run.samples
    assert len(df) == 12 and list(df.columns) == [*SAMPLE_COLUMNS[:3], "image", *SAMPLE_COLUMNS[3:]]
    on_disk = [json.loads(line) for v in ("full", "crop")
               for line in (run.path / "samples" / "fx" / f"{v}.jsonl").read_text().splitlines()]
    assert sorted(zip(df["view"], df["id"], df["response"], df["correct"])) == sorted(
        (r["view"], r["id"], r["response"], r["correct"]) for r in on_disk)
    items = {json.loads(line)["id"]: json.loads(line)["image"] for line in (data / "items.jsonl").read_text().splitlines()}
    assert all(Path(p) == data / items[i] for i, p in zip(df["id"], df["image"]))
    g = run.gap("fx")
    assert g.n_pairs == 6 and gap_from_samples(df, "fx") == pytest.approx(g.value)
    assert run.accuracy("fx", "crop").accuracy == pytest.approx(df[df.view == "crop"]["correct"].mean())
    table = run.table
    top = table[table.category.isna()].set_index("view")
    assert top.loc["full", "accuracy"] == run.accuracy("fx", "full").accuracy and top.loc["crop", "gap"] == g.value
    assert set(table.category.dropna()) == set(df.category.dropna()) and len(set(df.category.dropna())) >= 1


def test_evaluate_again_answers_from_the_run(fx_run, tiny_model):
    run, data = fx_run
    again = vopd_bench.evaluate(model=tiny_model, tasks=[str(run.config.tasks["fx"]["spec_file"])], data=str(data),
                                out=run.path, backend="hf", batch_size=6)
    assert again.results.to_dict() == run.results.to_dict()


def test_load_run_of_an_lmms_eval_import(fx_run, tmp_path):
    """lmms-eval sample logs carrying the records of the eval above → the importer → load_run: the same samples."""
    from vopd_bench.lmms.importer import gap_from_lmms_eval

    run, _ = fx_run
    logs = []
    for view in ("full", "crop"):
        recs = [json.loads(line) for line in (run.path / "samples" / "fx" / f"{view}.jsonl").read_text().splitlines()]
        p = tmp_path / "lmms" / f"2026_samples_vopd_fx_{view}.jsonl"
        p.parent.mkdir(exist_ok=True)
        p.write_text("".join(json.dumps({"doc_id": i, "target": r["answer"], "filtered_resps": r["response"],
                                         "vopd_accuracy": {**r, "score": float(r["correct"])}}) + "\n"
                             for i, r in enumerate(recs)))
        logs.append(str(p))
    gap_from_lmms_eval(logs, tmp_path / "imported")
    imp = vopd_bench.load_run(tmp_path / "imported")
    assert imp.config.backend["backend"] == "lmms-eval"
    cols = ["task", "view", "id", "response", "parsed", "correct"]
    a = imp.samples[cols].sort_values(["view", "id"]).reset_index(drop=True)
    b = run.samples[cols].sort_values(["view", "id"]).reset_index(drop=True)
    assert a.equals(b)
    assert imp.gap("fx").value == run.gap("fx").value == pytest.approx(gap_from_samples(imp.samples, "fx"))


def test_load_run_of_an_earlier_release():
    run = vopd_bench.load_run(LEGACY)
    results = json.loads((LEGACY / "results.json").read_text())
    for task, block in results["tasks"].items():
        n = {v: s["n"] for v, s in block["views"].items()}
        assert (run.samples.task == task).sum() >= sum(n.values())
        if "gap" in block:
            assert gap_from_samples(run.samples, task) == pytest.approx(block["gap"]["value"])
    assert len(results_frame(run.results, categories=False)) == sum(len(b["views"]) for b in results["tasks"].values())


def test_bad_input_is_one_line_user_error(tmp_path, fx_run):
    run, _ = fx_run
    with pytest.raises(UserError, match="no such run directory"):
        vopd_bench.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="results.json: missing"):
        vopd_bench.load_run(tmp_path / "empty")
    with pytest.raises(UserError, match="no curve.jsonl"):
        vopd_bench.load_curve(tmp_path / "empty")
    with pytest.raises(UserError, match="no task 'other'"):
        run.gap("other")
    with pytest.raises(UserError, match="unknown task 'nope'"):
        vopd_bench.evaluate(tasks=["nope"], out=tmp_path / "x", backend="hf")
    with pytest.raises(UserError, match="unknown option.*tensor_parallel"):
        vopd_bench.evaluate(tasks=["synth"], out=tmp_path / "x", backend="hf", tensor_parallel=2)
    with pytest.raises(UserError, match="unknown config key 'stepz'.*'steps'"):
        vopd_bench.train("demo", stepz=3)
    with pytest.raises(UserError, match="'beta'"):
        vopd_bench.train("demo", beta=2.0)
    assert not (tmp_path / "x").exists()


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT / "tests")}


@pytest.mark.slow  # about 40 s when the synthetic task is not generated yet
def test_notebook_script(tmp_path):
    """The notebook-style script: 20 items through the API, into pandas, the gap recomputed = results.json."""
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "api_notebook.py"), str(tmp_path / "nb")], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert re.search(r"gap from the DataFrame: [+-]\d+\.\d\d points over 20 pairs", p.stdout) and "OK" in p.stdout


def readme_python_blocks() -> str:
    """The ```python blocks of the README's "Python API" section, in order, as one script."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Python API\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, "README.md has no '## Python API' section"
    blocks = re.findall(r"^```python\n(.*?)^```", m.group(1), re.M | re.S)
    assert len(blocks) >= 2
    return "\n".join(blocks)


@pytest.mark.slow
def test_readme_python_api_blocks_run(tmp_path):
    """The section's code runs as written, in a fresh folder laid out as a clone (tasks/, trainers/ linked)."""
    for link in ("tasks", "trainers"):
        (tmp_path / link).symlink_to(ROOT / link)
    script = tmp_path / "readme_api.py"
    script.write_text(readme_python_blocks())
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert (tmp_path / "runs").is_dir() and any((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------------------- CLI polish
def test_tasks_never_cuts_a_name_on_80_columns(monkeypatch, capsys):
    from helpers import run_cli

    from vopd_bench.tasks import all_specs

    monkeypatch.setenv("COLUMNS", "80")
    assert run_cli(["tasks"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    first_cells = {line.split("│")[1].strip() for line in lines if line.startswith("│")}
    assert set(all_specs()) <= first_cells  # every name whole, on one line
    assert "…" not in out


@pytest.mark.slow
def test_demo_writes_its_report_under_the_run_not_the_repository(tmp_path, monkeypatch, capsys):
    """`vopd-bench demo` (shortened) writes report.md under OUT/report; `--report-dir` writes it where asked."""
    from helpers import run_cli

    monkeypatch.chdir(tmp_path)
    args = ["demo", "--out", "runs/demo", "--eval-limit", "4", "steps=1", "prompts_per_step=4",
            "train_options={seed: 2024, n: 16}"]
    assert run_cli(args) == 0
    assert f"report: {Path('runs/demo/report/report.md')}" in capsys.readouterr().out
    assert (tmp_path / "runs/demo/report/report.md").is_file() and (tmp_path / "runs/demo/report/figures").is_dir()
    assert not (tmp_path / "reports").exists()
    assert run_cli([*args, "--report-dir", "snapshot"]) == 0  # finished stages resume; only the report is written
    assert (tmp_path / "snapshot/report.md").is_file()


# ---------------------------------------------------------------------------- datasets
def test_parquet_benchmark_loads_through_datasets_and_the_run_records_its_fingerprint(tiny_model, tmp_path):
    """A folder holding MMStar's published Parquet (a snapshot of its Hub repo) loads through `datasets`; the items
    equal those of today's single-file reader, and config.json records what was read: a changed file shows."""
    import fixtures_bench as fb
    import pyarrow.parquet as pq

    from vopd_bench.protocol import gen_kwargs, task_record
    from vopd_bench.tasks import get_task

    folder = fb.mmstar(tmp_path / "mmstar")
    spec, plain = get_task("mmstar"), get_task("mmstar")
    via_datasets = spec.load_items(folder)
    via_file = plain.load_items(folder / "mmstar.parquet")
    assert [(i.id, i.question, i.options, i.answer, i.category) for i in via_datasets] == \
        [(i.id, i.question, i.options, i.answer, i.category) for i in via_file]
    assert all(a.load_image().tobytes() == b.load_image().tobytes() for a, b in zip(via_datasets, via_file))
    rec = spec.options["dataset"]
    assert rec["via"] == "datasets" and rec["files"] == [str(folder / "mmstar.parquet")] and rec["revision"] is None
    fingerprint = rec["fingerprints"][str(folder / "mmstar.parquet")]
    assert isinstance(fingerprint, str) and len(fingerprint) >= 16
    assert "dataset" not in plain.options  # a single file: today's reader, nothing to record
    assert task_record(spec, str(folder), gen_kwargs(spec))["options"]["dataset"] == rec

    run = vopd_bench.evaluate(model=tiny_model, tasks=["mmstar"], data=str(folder), out=tmp_path / "run",
                              backend="hf", limit=2)
    assert run.config.tasks["mmstar"]["options"]["dataset"]["fingerprints"] == rec["fingerprints"]
    assert run.samples["image"].isna().all()  # the images are Parquet cells, not files

    # a re-uploaded benchmark (one answer changed) is another fingerprint, and the run directory refuses to mix them
    rows = pq.read_table(folder / "mmstar.parquet").to_pylist()
    rows[0]["answer"] = "B"
    fb.write_parquet(folder / "mmstar.parquet", rows, pq.read_schema(folder / "mmstar.parquet"))
    again = get_task("mmstar")
    again.load_items(folder)
    assert again.options["dataset"]["fingerprints"][str(folder / "mmstar.parquet")] != fingerprint
    with pytest.raises(UserError, match="different configuration.*fingerprints"):
        vopd_bench.evaluate(model=tiny_model, tasks=["mmstar"], data=str(folder), out=tmp_path / "run", backend="hf",
                            limit=2)


def test_hub_parquet_offline_without_a_cached_copy_is_one_line_error(tmp_path):
    env = {**_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    p = subprocess.run([sys.executable, "-m", "vopd_bench.cli", "eval", "--task", "cvbench", "--limit", "2",
                        "--out", str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "nyu-visionx/CV-Bench" in err[0] and "through datasets" in err[0] and "--data" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("task", "hub"), [("pope", "lmms-lab/POPE"), ("mme_realworld", "MME-RealWorld"),
                                           ("zoombench", "ZoomBench"), ("mmstar", "Lin-Chen/MMStar")])
def test_hub_parquet_benchmarks_go_through_datasets(task, hub, tmp_path, monkeypatch):
    """Without --data, every benchmark published as Parquet loads through `datasets` (offline here: its one-line
    error, which names the route), not a raw snapshot download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="through datasets") as e:
        get_task(task).load_items(None)
    assert hub in str(e.value) and "\n" not in str(e.value)
