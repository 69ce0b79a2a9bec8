"""The run record as pandas DataFrames: per-sample rows, per-view results, the training curve.

    samples_frame(run_dir)      one row per item × view: every `SampleRecord` field a column (+ `image`)
    results_frame(results)      one row per task × view (and category): accuracy, CI, n, the task's gap
    curve_frame(train_dir)      one row per scored checkpoint × task × view (tidy: pivot as you like)
    gap_from_samples(df, task)  the gap (crop − full, points) recomputed from a samples frame
    to_markdown / to_latex      a table frame rendered (LaTeX through pandas' Styler, booktabs), best in bold

Everything is read through `RunDir` / `TrainRun` and the typed records of `vopd_bench.schema`, so a frame
holds exactly what the files hold. pandas is imported by these functions only (the CLI stays fast).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vopd_bench.errors import UserError
from vopd_bench.rundir import RunDir
from vopd_bench.schema import Results, RunConfig, SampleRecord, TaskResult

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
SAMPLE_COLUMNS = [f.name for f in dataclasses.fields(SampleRecord) if f.name != "extra"]
# Nested per-sample facts flattened into `<key>.<field>` columns (the `self_zoom` view's first stage).
NESTED_FACTS = ("self_zoom",)
RESULT_COLUMNS = ["task", "category", "view", "n", "accuracy", "ci_low", "ci_high", "parse_failures",
                  "parse_failure_rate", "errors", "skipped_no_box", "chance", "gap", "gap_ci_low", "gap_ci_high",
                  "gap_p_value", "gap_n_pairs"]


def _pd() -> Any:
    try:
        import pandas as pd
    except ImportError:  # a dependency of the package; only a broken environment lacks it
        raise UserError("pandas is not installed (pip install pandas)") from None
    return pd


# ----------------------------------------------------------------------------- samples


def sample_rows(run: RunDir, views: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """Every finished record of the run's tasks and views, as flat dicts (unknown keys kept as columns; the
    `NESTED_FACTS` dicts as `<key>.<field>` columns, e.g. `self_zoom.iou`)."""
    rows = []
    for task, task_views in views.items():
        for view in task_views:
            for rec in run.samples(task, view).values():
                row = {k: getattr(rec, k) for k in SAMPLE_COLUMNS}
                for k, v in rec.extra.items():
                    if k in NESTED_FACTS and isinstance(v, dict):
                        row.update({f"{k}.{f}": fv for f, fv in v.items()})
                    else:
                        row[k] = v
                rows.append(row)
    return rows


def run_views(run: RunDir, results: Results | None = None) -> dict[str, list[str]]:
    """task → views of a run: as results.json lists them, else as the sample files on disk show them."""
    if results is not None and results.views:
        return {t: list(v) for t, v in results.views.items()}
    root = run.path / "samples"
    if not root.is_dir():
        return {}
    return {d.name: sorted({p.name.split(".")[0] for p in d.glob("*.jsonl")}) for d in sorted(root.iterdir()) if d.is_dir()}


def samples_frame(path: str | Path, images: bool = True, config: RunConfig | None = None,
                  results: Results | None = None) -> pd.DataFrame:
    """One row per item × view of an eval run directory, the `SampleRecord` fields as columns (in schema order,
    then any unknown keys), plus `image`: the item's image file where the task's data are local files (None
    where the image is not a file: base64 cells, a Hub download not on disk). `images=False` skips that."""
    pd = _pd()
    run = RunDir(path)
    if not run.path.is_dir():
        raise UserError(f"{run.path}: no such run directory")
    if config is None:
        config = run.read_config()
    if results is None:
        results = run.read_results(tolerant=True)
    views = run_views(run, results)
    rows = sample_rows(run, views)
    df = pd.DataFrame(rows, columns=list(dict.fromkeys([*SAMPLE_COLUMNS, *(k for r in rows for k in r)])))
    if images:
        paths = image_paths(config, list(views)) if config is not None else {}
        df.insert(3, "image", [paths.get((t, i)) for t, i in zip(df["task"], df["id"])])
    return df


def image_paths(config: RunConfig, tasks: list[str]) -> dict[tuple[str, str], str]:
    """(task, item id) → image file, for the tasks whose recorded data are local files (`--data`, or a synthetic
    task already generated into the cache). Other tasks are left out: nothing is downloaded or generated to name
    an image."""
    from vopd_bench.tasks import get_task

    out: dict[tuple[str, str], str] = {}
    for task in tasks:
        rec = config.tasks.get(task) or {}
        data = rec.get("data")
        if data is None and rec.get("loader") == "synth":
            data = cached_synth(rec.get("options") or {})
        if data is None:
            continue
        try:
            spec = get_task(rec.get("spec_file") or task)
            if isinstance(rec.get("options"), dict):
                spec.options = dict(rec["options"])
            items = spec.load_items(data)
        except (UserError, OSError) as e:
            log.warning("task %s: image paths unknown (%s)", task, e)
            continue
        for it in items:
            if isinstance(it.image, (str, Path)) and Path(it.image).suffix:
                out[(task, it.id)] = str(it.image)
    return out


def cached_synth(options: Mapping[str, Any]) -> str | None:
    """The folder of a synthetic task's generated data when it is in the cache (never generated here)."""
    from vopd_bench.synth import SynthConfig, cache_dir, dataset_key

    opts = dict(options)
    try:
        n, seed = int(opts.pop("n", 500)), int(opts.pop("seed", 1234))
        path = cache_dir() / "synth" / dataset_key(SynthConfig(**opts), n, seed)
    except (TypeError, ValueError):
        return None
    return str(path) if (path / "items.jsonl").is_file() else None


def gap_from_samples(df: pd.DataFrame, task: str, a: str = "full", b: str = "crop") -> float:
    """`b` − `a` accuracy in points over the items answered without error in both views (results.json's
    `gap.value` for the default views)."""
    t = df[(df["task"] == task) & df["error"].isna()]
    wide = t.pivot(index="id", columns="view", values="correct")
    if a not in wide or b not in wide:
        raise UserError(f"task {task}: the samples have no {a!r} and {b!r} views to pair")
    paired = wide[[a, b]].dropna().astype(float)
    if paired.empty:
        raise UserError(f"task {task}: no item answered in both {a} and {b}")
    return float(100.0 * (paired[b].mean() - paired[a].mean()))


# ----------------------------------------------------------------------------- results


def _result_rows(task: str, category: str | None, block: TaskResult) -> list[dict[str, Any]]:
    g = block.gap
    rows = []
    for view, s in block.views.items():
        rows.append({
            "task": task, "category": category, "view": view, "n": s.n, "accuracy": s.accuracy, "ci_low": s.ci_low,
            "ci_high": s.ci_high, "parse_failures": s.parse_failures, "parse_failure_rate": s.parse_failure_rate,
            "errors": s.errors, "skipped_no_box": s.skipped_no_box, "chance": block.chance,
            "gap": g.value if g else None, "gap_ci_low": g.ci_low if g else None,
            "gap_ci_high": g.ci_high if g else None, "gap_p_value": g.p_value if g else None,
            "gap_n_pairs": g.n_pairs if g else None,
        })
    return rows


def results_frame(results: Results | Mapping[str, TaskResult], categories: bool = True) -> pd.DataFrame:
    """One row per task × view (accuracy as a fraction, CI, n, parse failures) with the task's gap (points) on each
    of its rows; with `categories`, also one row per category × view (`category` None on the task's own rows)."""
    pd = _pd()
    tasks = results.tasks if isinstance(results, Results) else results
    rows: list[dict[str, Any]] = []
    for task, block in tasks.items():
        rows += _result_rows(task, None, block)
        if categories:
            for cat, cblock in (block.categories or {}).items():
                rows += _result_rows(task, cat, cblock)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# ----------------------------------------------------------------------------- training curve


def curve_frame(path: str | Path) -> pd.DataFrame:
    """A training run's curve.jsonl, one row per scored checkpoint × task × view: step, task, role (eval or
    holdout), view, n, accuracy, CI, the task's gap and closure, and the mean training statistics since the
    previous point as `train_<key>` columns (loss, JSD, entropies, lr, step_s, ...)."""
    from vopd_bench.train.rundir import CURVE, TrainRun, read_curve

    pd = _pd()
    p = Path(path)
    curve_path = p if p.is_file() else p / CURVE
    if not curve_path.is_file():
        raise UserError(f"{p}: no {CURVE} (not a training run directory)")
    run = TrainRun(curve_path.parent)
    rows: list[dict[str, Any]] = []
    for point in read_curve(curve_path):
        d = run.eval_dir(point)
        train = {f"train_{k}": v for k, v in point.train.items() if not isinstance(v, (dict, list))}
        for task, block in point.tasks.items():
            g, c = block.gap, block.closure
            for view, s in block.views.items():
                rows.append({
                    "step": point.step, "task": task, "role": point.role(task), "view": view, "n": s.n,
                    "accuracy": s.accuracy, "ci_low": s.ci_low, "ci_high": s.ci_high,
                    "gap": g.value if g else None, "gap_ci_low": g.ci_low if g else None,
                    "gap_ci_high": g.ci_high if g else None, "gap_p_value": g.p_value if g else None,
                    "closure": c.value if c else None, "closure_ci_low": c.ci_low if c else None,
                    "closure_ci_high": c.ci_high if c else None, "checkpoint": point.checkpoint,
                    "eval_dir": str(d) if d is not None else point.eval_dir, "eval_s": point.eval_s,
                    "warnings": "; ".join(point.warnings) or None, **train,
                })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- rendering (Markdown, LaTeX, CSV)


def best_rows(values: pd.Series, rule: str, fmt: str = "{:.1f}") -> set[Any]:
    """Index labels holding the best *displayed* value of a column (`max`, or `absmin`: closest to zero); ties all
    win; none when fewer than two values are shown (a lone number is no winner)."""
    shown = {i: float(fmt.format(v)) for i, v in values.items() if v is not None and v == v}
    if len(shown) < 2:
        return set()
    key = abs if rule == "absmin" else (lambda x: -x)
    top = min(key(v) for v in shown.values())
    return {i for i, v in shown.items() if key(v) == top}


def _bold(df: pd.DataFrame, best: Mapping[str, str], fmt: str, exclude: Mapping[str, set[Any]] | None) -> dict[str, set]:
    """column → rows in bold: the best among the rows not excluded (e.g. a collapsed model's gap, marked †)."""
    ex = exclude or {}
    return {c: best_rows(df[c].drop(index=list(ex.get(c, ())), errors="ignore"), r, fmt) for c, r in best.items()}


def styler(df: pd.DataFrame, best: Mapping[str, str] | None = None, fmt: str = "{:.1f}", na: str = "--",
           exclude: Mapping[str, set[Any]] | None = None) -> Any:
    """`df` as a pandas Styler: numbers formatted with `fmt`, missing as `na`, the best value of each column of
    `best` (column → `max` | `absmin`) in bold, rows of `exclude[column]` never best."""
    best = dict(best or {})
    bold = _bold(df, best, fmt, exclude)
    numeric = [c for c in df.columns if c in best or df[c].dtype.kind in "fi"]
    sty = df.style.format(fmt, subset=numeric, na_rep=na)
    for col, rows in bold.items():
        sty = sty.apply(lambda s, rows=rows: ["font-weight: bold" if i in rows else "" for i in s.index], subset=[col])
    return sty


def to_latex(df: pd.DataFrame, best: Mapping[str, str] | None = None, fmt: str = "{:.1f}", caption: str | None = None,
             label: str | None = None, exclude: Mapping[str, set[Any]] | None = None) -> str:
    """A booktabs LaTeX table through the Styler (bold best as \\bfseries)."""
    sty = styler(df, best, fmt, "--", exclude).format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return sty.to_latex(hrules=True, convert_css=True, caption=caption, label=label, position_float="centering")


def to_markdown(df: pd.DataFrame, best: Mapping[str, str] | None = None, fmt: str = "{:.1f}", na: str = "–",
                exclude: Mapping[str, set[Any]] | None = None) -> str:
    """A GitHub Markdown table (index as the first column), best values in **bold**."""
    bold = _bold(df, dict(best or {}), fmt, exclude)

    def cell(col: Any, i: Any, v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return na
        text = fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
        return f"**{text}**" if i in bold.get(col, ()) else text.replace("|", "\\|")

    head = [str(df.index.name or ""), *map(str, df.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"]
    for i, row in df.iterrows():
        lines.append("| " + " | ".join([str(i).replace("|", "\\|"), *(cell(c, i, row[c]) for c in df.columns)]) + " |")
    return "\n".join(lines) + "\n"
