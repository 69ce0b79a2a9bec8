"""The Python API: what the CLI runs, callable from a notebook, with the run record as typed objects and
pandas DataFrames.

    run = vopd_bench.evaluate(model="vopd-tiny", tasks=["synth"], limit=20, out="runs/nb")   # = vopd-bench eval
    run = vopd_bench.load_run("runs/nb")        # an eval run, a training run's evals/step-N, an lmms-eval import
    run.config, run.results, run.samples, run.gap("synth")
    curve = vopd_bench.load_curve("runs/opd-demo")                                        # a training run's curve
    tr = vopd_bench.train("demo", steps=2, eval_limit=8, out="runs/opd-nb")                 # = vopd-bench train

Each function is a thin layer: `evaluate` builds the same `EvalConfig` as `vopd-bench eval` and calls
`evaluate.evaluate` (so a finished run answers from results.json, an interrupted one resumes); `train` builds
the same `OPDConfig` as `vopd-bench train` (`train.config.load_config`) and calls `run_training`; `load_run`
and `load_curve` read through `RunDir` and `TrainRun`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vopd_bench.errors import IncompleteRun, UserError
from vopd_bench.rundir import RunDir
from vopd_bench.schema import GapStats, Results, RunConfig, TrainRunConfig, ViewStats

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Run", "TrainingRun", "evaluate", "load_curve", "load_run", "train"]
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- an eval run


@dataclass
class Run:
    """An eval run directory: `config` (config.json), `results` (results.json), `samples` (a DataFrame, one row
    per item × view). Written by `vopd-bench eval`, by a training run's re-scoring (`evals/step-N/`) or by the
    lmms-eval importer (`vopd-bench gap --from-lmms-eval`): all three hold the same files."""

    path: Path
    config: RunConfig
    results: Results

    @property
    def tasks(self) -> list[str]:
        return list(self.results.tasks)

    @property
    def model(self) -> str | None:
        return self.results.model

    def views(self, task: str) -> list[str]:
        return list(self.results.views.get(task) or self._task(task).views)

    @cached_property
    def samples(self) -> pd.DataFrame:
        """One row per item × view: every `SampleRecord` field as a column, plus `image` (the item's image file
        where the task's data are local files, else None). Read once, then cached on this object."""
        from vopd_bench.frames import samples_frame

        return samples_frame(self.path, config=self.config, results=self.results)

    @cached_property
    def table(self) -> pd.DataFrame:
        """results.json as a DataFrame: one row per task × view (and per category), see `frames.results_frame`."""
        from vopd_bench.frames import results_frame

        return results_frame(self.results)

    def gap(self, task: str) -> GapStats:
        """The task's gap as results.json records it: value (crop − full, points), 95% CI, McNemar p, n_pairs."""
        g = self._task(task).gap
        if g is None:
            raise UserError(f"{self.path}: task {task} has no gap (it was scored on {', '.join(self.views(task))} only)")
        return g

    def accuracy(self, task: str, view: str = "full") -> ViewStats:
        """The task's stats on one view (accuracy as a fraction, its CI, n, parse failures)."""
        s = self._task(task).views.get(view)
        if s is None:
            raise UserError(f"{self.path}: task {task} has no {view!r} view (it has {', '.join(self.views(task))})")
        return s

    def _task(self, task: str) -> Any:
        t = self.results.tasks.get(task)
        if t is None:
            raise UserError(f"{self.path}: no task {task!r} in results.json (it has {', '.join(self.tasks)})")
        return t

    def __repr__(self) -> str:
        parts = []
        for name, t in self.results.tasks.items():
            accs = ", ".join(f"{v} {100 * s.accuracy:.1f}" for v, s in t.views.items() if s.accuracy is not None)
            gap = f", gap {t.gap.value:+.1f}" if t.gap is not None and t.gap.value is not None else ""
            parts.append(f"{name}: {accs}{gap}")
        return f"Run({str(self.path)!r}, model={self.model!r}; {'; '.join(parts)})"


# ----------------------------------------------------------------------------- a training run


@dataclass
class TrainingRun:
    """A training run directory: `config` (the resolved trainer config as recorded), `curve` (a DataFrame, one row
    per scored checkpoint × task × view), `run(step)` (that checkpoint's eval run)."""

    path: Path
    config: TrainRunConfig | None = field(default=None, repr=False)
    _curve: Any = field(default=None, repr=False)

    @property
    def curve(self) -> pd.DataFrame:
        if self._curve is None:
            self._curve = load_curve(self.path)
        return self._curve

    @property
    def steps(self) -> list[int]:
        from vopd_bench.train.rundir import TrainRun

        return [p.step for p in TrainRun(self.path).curve()]

    def run(self, step: int | None = None) -> Run:
        """The eval run of checkpoint `step` (default: the last scored one)."""
        return _training_eval(self.path, step)


# ----------------------------------------------------------------------------- loading


def load_run(path: str | Path, step: int | None = None) -> Run:
    """An eval run directory as a `Run`. A training run's directory gives the eval run of checkpoint `step`
    (default: the last scored one). A missing or unreadable file is a one-line `UserError` naming it."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such run directory")
    if step is not None or (not (p / "results.json").is_file() and (p / "curve.jsonl").is_file()):
        return _training_eval(p, step)
    run = RunDir(p)
    results = run.read_results()
    if results is None:
        raise UserError(f"{run.results_path}: missing (not a finished eval run; re-run its command to finish it)")
    config = run.read_config()
    if config is None:
        raise UserError(f"{run.config_path}: missing (not an eval run directory)")
    return Run(p, config, results)


def _training_eval(path: Path, step: int | None) -> Run:
    from vopd_bench.train.rundir import TrainRun

    tr = TrainRun(path)
    if not tr.curve_path.is_file():
        raise UserError(f"{path}: no curve.jsonl (step= needs a training run directory)")
    points = tr.curve()
    if not points:
        raise UserError(f"{tr.curve_path}: no scored checkpoint yet")
    if step is None:
        point = points[-1]
    else:
        point = next((p for p in points if p.step == step), None)
        if point is None:
            raise UserError(f"{tr.curve_path}: no step {step} (scored steps: {', '.join(str(p.step) for p in points)})")
    d = tr.eval_dir(point)
    if d is None:
        raise UserError(f"{tr.curve_path}: the eval run of step {point.step} ({point.eval_dir}) is not on disk")
    return load_run(d)


def load_curve(path: str | Path) -> pd.DataFrame:
    """A training run's curve.jsonl as a DataFrame (`frames.curve_frame`): one row per step × task × view."""
    from vopd_bench.frames import curve_frame

    return curve_frame(path)


def load_training(path: str | Path) -> TrainingRun:
    """A training run directory as a `TrainingRun`."""
    from vopd_bench.train.rundir import TrainRun

    p = Path(path)
    if not (p / "curve.jsonl").is_file():
        raise UserError(f"{p}: no curve.jsonl (not a training run directory)")
    return TrainingRun(p, TrainRun(p).read_config())


# ----------------------------------------------------------------------------- running


def backend_options(name: str, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A backend's own settings given by their CLI parameter names (e.g. vllm `tensor_parallel`, openai `base_url`)
    turned into its `(options, extra)` exactly as the CLI does; an unknown name is a `UserError`."""
    from vopd_bench.backends import backend_spec

    spec = backend_spec(name)
    known = {o.name: o.default for o in spec.cli_options}
    unknown = set(options) - set(known)
    if unknown:
        raise UserError(f"backend {name}: unknown option(s) {', '.join(sorted(unknown))}; "
                        f"it takes {', '.join(sorted(known)) or 'none'}")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in {**known, **options}.items()}
    return spec.configure(values)


def evaluate(
    model: str = "vopd-tiny",
    tasks: Sequence[str] = ("synth",),
    views: Sequence[str] | None = None,
    out: str | Path | None = None,
    *,
    backend: str = "auto",
    data: Mapping[str, str] | str | None = None,
    boxes: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    dtype: str = "auto",
    device: str = "auto",
    revision: str | None = None,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
    crop: Mapping[str, float] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    allow_errors: bool = False,
    **options: Any,
) -> Run:
    """`vopd-bench eval` as a function: score `model` on `tasks` (full + crop where the task has boxes, or `views`),
    write the run directory `out` (default runs/<model>-<backend>) and return it as a `Run`.

    Re-calling resumes / answers from results.json as the CLI does. `data`: a path (one task) or task → path.
    `crop`: overrides of the crop view (margin, upscale, ...). Other keywords: any further `EvalConfig` field
    (e.g. `protocol`, `system_prompt`, `prefetch`), else a backend's own setting by its CLI parameter name
    (`tensor_parallel=2`, `base_url=...`). Requests that still failed after retries raise `IncompleteRun` (what
    succeeded is kept) unless `allow_errors`."""
    from dataclasses import fields

    from vopd_bench.backends import BackendConfig, backend_spec, resolve_backend
    from vopd_bench.commands.eval import default_out
    from vopd_bench.evaluate import EvalConfig, request_failures
    from vopd_bench.evaluate import evaluate as run_evaluation

    if isinstance(tasks, str):
        tasks = [tasks]
    eval_fields = {f.name for f in fields(EvalConfig)} - {"tasks", "backend"}
    eval_options = {k: v for k, v in options.items() if k in eval_fields}
    name, why = resolve_backend(backend)
    opts, extra = backend_options(name, {k: v for k, v in options.items() if k not in eval_fields})
    spec = backend_spec(name)
    try:
        bcfg = BackendConfig(
            backend=name, model=str(model), revision=revision, dtype=dtype, device=device, max_pixels=max_pixels,
            min_pixels=min_pixels, batch_size=spec.default_batch_size(opts) if batch_size is None else batch_size,
            trust_remote_code=trust_remote_code, chat_template_kwargs=dict(chat_template_kwargs or {}),
            options=opts, extra=extra, chosen_by=why,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    if isinstance(data, (str, Path)):
        if len(tasks) != 1:
            raise UserError("data: with several tasks give a mapping task → path")
        data = {tasks[0]: str(data)}
    cfg = EvalConfig(
        tasks=list(tasks), backend=bcfg, out=str(out) if out is not None else default_out(str(model), name),
        views=list(views) if views is not None else None, data={k: str(v) for k, v in (data or {}).items()},
        boxes=boxes, limit=limit, seed=seed, max_new_tokens=max_new_tokens, crop=dict(crop or {}),
        overwrite=overwrite, progress=progress, **eval_options,
    )
    results, names, _ = run_evaluation(cfg)
    failed, total = request_failures(results["tasks"], names)
    if failed and not allow_errors:
        raise IncompleteRun(f"{failed} of {total} requests failed — call again to retry them ({cfg.out})")
    return load_run(cfg.out)


def train(recipe: str | None = None, *, out: str | Path | None = None, **overrides: Any) -> TrainingRun:
    """`vopd-bench train` as a function: the recipe (a path or a shipped name such as "demo") with `overrides` as
    config keys (`steps=2, eval_limit=8, report_to=["tensorboard"]`), trained (or resumed) in `out`; returns the
    training run. Keys and values are validated as on the command line (`vopd-bench train --options`)."""
    from vopd_bench.train.config import load_config
    from vopd_bench.train.trainer import run_training

    if recipe is None and not overrides:
        raise UserError("give a recipe (e.g. train('demo')) or config keys")
    cfg = load_config(recipe, [], str(out) if out is not None else None)
    if overrides:
        cfg = _with_overrides(cfg, overrides)
    path = run_training(cfg)
    return load_training(path)


def _with_overrides(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """`cfg` with config keys replaced (checked like a recipe's keys; the whole config validated again)."""
    from dataclasses import replace

    from vopd_bench.train.config import _check_keys

    _check_keys(list(overrides), "train()")
    return replace(cfg, **overrides)
