"""`vopd-bench export RUN --format parquet|csv`: the per-sample table, read back with pandas equal to the run's
records; bad input is a one-line error (exit 2) that writes nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import make_dataset, records, run_cli

import vopd_bench


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data, spec = make_dataset(root / "fx", n=5)
    out = root / "run"
    assert run_cli(["eval", "--model", tiny_model, "--task", str(spec), "--data", str(data), "--out", str(out),
                    "--backend", "hf", "-q"]) == 0
    return out


def _expected(run_dir) -> list[dict]:
    return sorted((r for v in ("full", "crop") for r in records(run_dir, "fx", v)), key=lambda r: (r["view"], r["id"]))


def test_export_parquet_default_path(run_dir, capsys):
    assert run_cli(["export", str(run_dir)]) == 0
    assert "10 rows (1 task(s), views crop, full)" in capsys.readouterr().out
    df = pd.read_parquet(run_dir / "samples.parquet").sort_values(["view", "id"]).reset_index(drop=True)
    want = _expected(run_dir)
    assert len(df) == len(want) == 10
    for col in ("id", "view", "answer", "response", "parsed", "correct", "prompt_hash"):
        assert df[col].tolist() == [r[col] for r in want], col
    assert [list(b) for b in df["crop_box"] if b is not None] == \
        [r["crop_box"] for r in want if r["crop_box"] is not None]
    assert df["image"].str.endswith(".png").all()


def test_export_csv(run_dir, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert run_cli(["export", str(run_dir), "--format", "csv", "--out", str(out)]) == 0
    df = pd.read_csv(out).sort_values(["view", "id"]).reset_index(drop=True)
    want = _expected(run_dir)
    assert df["response"].tolist() == [r["response"] for r in want]
    assert df["correct"].tolist() == [r["correct"] for r in want]
    boxes = [json.loads(b) if isinstance(b, str) else None for b in df["crop_box"]]
    assert boxes == [r["crop_box"] for r in want]
    # the gap recomputed from the exported file equals results.json's
    wide = df.pivot(index="id", columns="view", values="correct").astype(float)
    assert 100 * (wide["crop"].mean() - wide["full"].mean()) == pytest.approx(vopd_bench.load_run(run_dir).gap("fx").value)


def test_export_bad_input(tmp_path, run_dir, capsys):
    assert run_cli(["export", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "no such run directory" in err
    assert run_cli(["export", str(run_dir), "--format", "xlsx"]) == 2
    assert "'xlsx' is not one of 'parquet', 'csv'" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    assert run_cli(["export", str(run_dir), "--out", str(tmp_path / "d")]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not list(tmp_path.glob("nope*"))


def test_tables_from_dataframes_bold_the_best(run_dir):
    """The report-table path through pandas: results → DataFrame → Markdown / LaTeX (Styler, booktabs) with the best
    displayed value of each column in bold (ties all bold; closest to zero for a gap)."""
    from vopd_bench.frames import best_rows, results_frame, to_latex, to_markdown

    top = results_frame(vopd_bench.load_run(run_dir).results, categories=False)
    assert list(top["view"]) == ["full", "crop"] and top["gap"].nunique() == 1
    df = pd.DataFrame({"full": [50.0, 76.5, 76.54, None], "gap": [48.5, -22.5, 30.0, 22.5]},
                      index=pd.Index(["base", "opd", "a_b", "x|y"], name="Model"))
    assert best_rows(df["full"], "max") == {"opd", "a_b"}  # 76.5 and 76.54 display alike
    assert best_rows(df["gap"], "absmin") == {"opd", "x|y"}
    assert best_rows(pd.Series([3.0, None]), "max") == set()
    md = to_markdown(df, {"full": "max", "gap": "absmin"})
    assert md.splitlines()[3] == "| opd | **76.5** | **-22.5** |" and "| x\\|y | – | **22.5** |" in md
    tex = to_latex(df, {"full": "max", "gap": "absmin"}, caption="Full", label="tab:full")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "opd & \\bfseries 76.5 & \\bfseries -22.5" in tex
    assert "a\\_b & \\bfseries 76.5 & 30.0" in tex and "base & 50.0 & 48.5" in tex
    # a flagged row (a collapsed model's gap) is never best: the next closest wins
    md = to_markdown(df, {"gap": "absmin"}, exclude={"gap": {"opd"}})
    assert "| opd | 76.5 | -22.5 |" in md and "| x\\|y | – | **22.5** |" in md
