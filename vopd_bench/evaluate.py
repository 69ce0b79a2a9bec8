"""The gap evaluation: items → views → requests → backend → scorer → per-sample records → results.

`run_eval(cfg)` is what `vopd-bench eval` calls; the trainer calls it on every checkpoint.
Under torchrun/accelerate (WORLD_SIZE > 1) each rank takes items[rank::world] and rank 0 merges.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from vopd_bench import __version__, presets
from vopd_bench.backends import (
    Backend,
    BackendConfig,
    GenerationKwargs,
    PreparingBackend,
    Request,
    make_backend,
)
from vopd_bench.errors import UserError
from vopd_bench.grounding import FORMATS
from vopd_bench.items import ImageCache, Item
from vopd_bench.presets import JudgeFn
from vopd_bench.protocol import Rendered, gen_kwargs, has_region, load_spec, make_record, render, task_record
from vopd_bench.results import build_results, task_result
from vopd_bench.resume import finished_results, invocation_key, remember
from vopd_bench.rundir import RunDir
from vopd_bench.runtime import barrier, local_world_size, package_versions, rank, world_size
from vopd_bench.schema import Results, RunConfig, SampleRecord, TaskResult
from vopd_bench.tasks import TaskSpec
from vopd_bench.views import STAGED_VIEWS, NoBoxError, view_names

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class EvalConfig:
    """One evaluation: a model on some tasks and views (everything that changes a number is recorded)."""

    tasks: list[str]
    backend: BackendConfig = field(default_factory=BackendConfig)
    out: str = "runs/eval"
    views: list[str] | None = None  # None: full + crop where the task has boxes, else full
    data: dict[str, str] = field(default_factory=dict)  # task → local path
    boxes: str | None = None  # user box file (JSONL: id, boxes) turning any task into a gap task
    limit: int | None = None
    seed: int = 0
    max_new_tokens: int | None = None  # overrides the task spec's
    crop: dict[str, Any] = field(default_factory=dict)  # overrides of the task's crop params
    protocol: str = "vopd-bench"  # scoring protocol preset (presets.names()) or a preset YAML path
    system_prompt: str | None = None  # overrides the task's and the protocol's system prompt
    judge: dict[str, Any] | None = None  # the LLM judge's recorded settings (`JudgeConfig.record()`), None: no judge
    circular: bool = False  # ask each multiple-choice question under every rotation of its options (CircularEval)
    grounding_format: str = "auto"  # self_zoom's box format (grounding.FORMATS); auto: the model family's own
    locate_max_new_tokens: int = 64  # self_zoom's first stage (the box) generation length
    overwrite: bool = False
    progress: bool = True
    # speed only (no number depends on these, so they are not recorded):
    # render + preprocess the next batch in a thread while the current one generates; None = auto: on unless
    # the model runs on this machine's CPU with no core to spare beyond torch's threads (there the thread only
    # competes with generate: measured no gain on 2 cores; with a free core it hides the CPU work)
    prefetch: bool | None = None
    image_cache_mb: int = 256  # decoded images kept so the views of an item decode it once (0: off)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UserError("no task given (use --task NAME; `vopd-bench tasks` lists them)")
        if self.views is not None:
            bad = [v for v in self.views if v not in view_names()]
            if bad:
                raise UserError(f"unknown view {bad[0]!r}; choose from {', '.join(view_names())}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be >= 1, got {self.limit}")
        if self.grounding_format != "auto" and self.grounding_format not in FORMATS:
            raise UserError(f"--grounding-format {self.grounding_format!r}: choose from auto, {', '.join(FORMATS)}")
        if self.locate_max_new_tokens < 1:
            raise UserError(f"--locate-max-new-tokens must be >= 1, got {self.locate_max_new_tokens}")
        presets.load(self.protocol).check()  # an unknown protocol (or its missing grader package): one line, nothing written


@dataclass
class Chunk:
    """The pending items of one view consumed up to (and including) the one that fills a backend batch."""

    errors: list[SampleRecord] = field(default_factory=list)  # undecodable images: recorded, never sent
    batch: list[tuple[Item, Rendered, Request]] = field(default_factory=list)
    n_skip: int = 0  # items without a region for this view
    prepared: Any = None  # the backend's `prepare(batch requests)`, where it has one
    failure: Exception | None = None  # raised by rendering the item after these; re-raised once they are written

    @property
    def requests(self) -> list[Request]:
        return [req for _, _, req in self.batch]


def prefetched(make: Callable[[], T | None], enabled: bool = True) -> Iterator[T]:
    """Yield `make()` until it returns None. With `enabled`, the next call runs in one background thread
    while the caller works on the current result; an exception of `make` is raised here, in order."""
    if not enabled:
        while (x := make()) is not None:
            yield x
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vopd-prefetch") as pool:
        fut = pool.submit(make)
        while (x := fut.result()) is not None:
            fut = pool.submit(make)
            yield x


def spare_core() -> bool:
    """Whether this machine has a core beyond those the torch threads of its local ranks keep busy."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores > local_world_size() * torch.get_num_threads()


def load_box_file(path: str) -> dict[str, list[list[float]]]:
    """A user box file: JSONL rows {"id": ..., "boxes": [[x1, y1, x2, y2], ...]} (pixels)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"box file not found: {path}")
    out = {}
    for ln, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            boxes = [[float(v) for v in b] for b in row["boxes"]]
            if any(len(b) != 4 for b in boxes):
                raise ValueError("a box needs 4 numbers")
            out[str(row["id"])] = boxes
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}:{ln}: bad box row ({type(e).__name__}: {e}); want {{\"id\": ..., \"boxes\": [[x1,y1,x2,y2]]}}") from None
    return out


class Evaluator:
    """Runs one EvalConfig; reusable with an already-loaded backend (the trainer re-scores in place)."""

    def __init__(self, cfg: EvalConfig, backend: Backend | None = None, judge: JudgeFn | None = None) -> None:
        self.cfg = cfg
        self.rank, self.world = rank(), world_size()
        self.key = invocation_key(cfg)  # before cfg.data is re-keyed below
        self.protocol = presets.load(cfg.protocol)
        self.judge = judge  # judge(prompt) -> reply, asked where the protocol's judge policy says (protocol.apply_judge)
        self.specs: dict[str, TaskSpec] = {}
        for name in cfg.tasks:
            spec = load_spec(name, cfg.crop, self.protocol, cfg.system_prompt)
            self.specs[spec.name] = spec
            if name in cfg.data and name != spec.name:  # --data keyed by a spec file path
                cfg.data[spec.name] = cfg.data.pop(name)
        unknown_data = set(cfg.data) - set(self.specs)
        if unknown_data:
            raise UserError(f"--data given for task(s) not evaluated: {', '.join(sorted(unknown_data))}")
        self.user_boxes = load_box_file(cfg.boxes) if cfg.boxes else {}
        self.items = {name: self._load_items(spec) for name, spec in self.specs.items()}
        self.views = {name: self._views_for(spec, self.items[name]) for name, spec in self.specs.items()}
        self.run = RunDir(cfg.out)
        self.backend = backend or make_backend(cfg.backend)
        self.images = ImageCache(cfg.image_cache_mb << 20) if cfg.image_cache_mb > 0 else None
        self.zoom = None  # the self_zoom view's first-stage settings, where a task has that view
        if any(v in STAGED_VIEWS for vs in self.views.values() for v in vs):
            from vopd_bench import self_zoom

            self.zoom = self_zoom.settings(self.backend, cfg.backend.model, cfg.grounding_format,
                                           cfg.locate_max_new_tokens)

    @property
    def prefetch(self) -> bool:
        if self.cfg.prefetch is not None:
            return self.cfg.prefetch
        return str(getattr(self.backend, "device", "")) != "cpu" or spare_core()

    def _load_items(self, spec: TaskSpec) -> list[Item]:
        items = spec.load_items(self.cfg.data.get(spec.name))
        if self.user_boxes:
            for it in items:
                if it.id in self.user_boxes:
                    it.boxes = self.user_boxes[it.id]
        if self.cfg.limit:
            items = items[: self.cfg.limit]
        if self.cfg.circular:  # after --limit: N questions, each asked under all its rotations
            from vopd_bench.circular import expand

            items = expand(items)
        return items

    def _views_for(self, spec: TaskSpec, items: list[Item]) -> list[str]:
        regional = any(has_region(it, "crop") for it in items)
        if self.cfg.views is None:
            return ["full", "crop"] if regional else ["full"]
        if not regional and any(v != "full" and v not in STAGED_VIEWS for v in self.cfg.views):
            raise UserError(
                f"task {spec.name} has no boxes, so it has only the full view; supply --boxes FILE "
                "(JSONL of item id → boxes) to make it a gap task"
            )
        return list(self.cfg.views)

    def gen_kwargs(self, spec: TaskSpec) -> GenerationKwargs:
        return gen_kwargs(spec, self.cfg.seed, self.cfg.max_new_tokens)

    def task_record(self, spec: TaskSpec) -> dict[str, Any]:
        return task_record(spec, self.cfg.data.get(spec.name), self.gen_kwargs(spec), self.cfg.boxes)

    def config_record(self) -> RunConfig:
        """config.json of this run: everything that can change a number; `identity` is what a resume must match."""
        b = self.backend.describe()
        tasks = {n: self.task_record(s) for n, s in self.specs.items()}
        if self.zoom is not None:  # the first stage's format, prompt and length change the second's image
            zoom = {k: self.zoom.record()[k] for k in ("format", "max_new_tokens", "prompt_hash")}
            for n in tasks:
                if any(v in STAGED_VIEWS for v in self.views[n]):
                    tasks[n]["self_zoom"] = zoom
        identity = {
            "model": b.get("model"),
            "model_path": b.get("model_path"),
            "fingerprint": b.get("fingerprint"),
            "revision": b.get("revision"),
            "backend": b.get("backend"),
            "dtype": b.get("dtype"),
            "image_budget": b.get("image_budget"),
            "chat_template_hash": b.get("chat_template_hash"),
            "seed": self.cfg.seed,
            "tasks": tasks,
        }
        if self.protocol.name != presets.DEFAULT:  # absent for the default: run directories of earlier releases match
            identity["protocol"] = self.protocol.name
        if self.cfg.system_prompt is not None:
            identity["system_prompt"] = self.cfg.system_prompt
        if self.cfg.circular:
            identity["circular"] = True
        if self.cfg.backend.chat_template_kwargs:  # absent by default: earlier runs match (a server has no template hash)
            identity["chat_template_kwargs"] = dict(self.cfg.backend.chat_template_kwargs)
        if self.cfg.judge is not None:  # the judge's model and prompt change verdicts
            identity["judge"] = {k: self.cfg.judge.get(k) for k in ("model", "prompt", "max_tokens", "temperature")}
        extra: dict[str, Any] = {"judge": self.cfg.judge} if self.cfg.judge is not None else {}
        if self.zoom is not None:
            extra["self_zoom"] = self.zoom.record()
        return RunConfig(
            vopd_bench=__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            backend=b,
            backend_config={k: v for k, v in self.cfg.backend.to_dict().items() if k != "extra"},
            tasks=tasks,
            views=dict(self.views),
            seed=self.cfg.seed,
            limit=self.cfg.limit,
            world_size=self.world,
            versions=package_versions(),
            identity=identity,
            protocol=self.protocol.record(),
            system_prompt=self.cfg.system_prompt,
            extra=extra,
        )

    def _score_batch(self, spec: TaskSpec, view: str, gen: GenerationKwargs, chunk: Chunk) -> list[SampleRecord]:
        if chunk.prepared is not None:
            resps = self.backend.generate_prepared(chunk.prepared, gen)  # type: ignore[union-attr]
        else:
            resps = self.backend.generate(chunk.requests, gen)
        return [
            make_record(spec, it, view, rend, resp.text, resp.error, resp.retryable, resp.latency, resp.n_tokens,
                        resp.visual_tokens, protocol=self.protocol, judge=self.judge,
                        finish_reason=getattr(resp, "finish_reason", None), max_new_tokens=gen.max_new_tokens)
            for (it, rend, _), resp in zip(chunk.batch, resps)
        ]

    def _next_chunk(self, spec: TaskSpec, view: str, items: Iterator[Item]) -> Chunk | None:
        """Render pending items until a batch is full (or they run out); None when none were left.
        Runs in the prefetch thread: it writes nothing, and keeps any rendering exception for the caller."""
        chunk, n = Chunk(), 0
        for it in items:
            n += 1
            try:
                rend = render(spec, self.images.through(it) if self.images is not None else it, view, seed=self.cfg.seed)
                if rend.error:
                    chunk.errors.append(make_record(spec, it, view, rend, None, protocol=self.protocol))
                    continue
                req = Request(it.id, [rend.image], spec.prompt.render(it), spec.prompt.system)
            except NoBoxError:
                chunk.n_skip += 1
                continue
            except Exception as e:
                chunk.failure = e
                break
            chunk.batch.append((it, rend, req))
            if len(chunk.batch) >= self.cfg.backend.batch_size:
                break
        if n == 0:
            return None
        if chunk.batch and chunk.failure is None and isinstance(self.backend, PreparingBackend):
            chunk.prepared = self.backend.prepare(chunk.requests)
        return chunk

    def run_view(self, name: str, view: str) -> None:
        """Answer every pending item of this rank's shard for one view, appending records per batch.

        Records are written in the same order as rendering them one by one would: each chunk's
        undecodable-image records, then its batch's records. The next chunk is rendered (and its inputs
        prepared) in a background thread while the current batch generates."""
        if view in STAGED_VIEWS:
            from vopd_bench import self_zoom

            return self_zoom.run(self, name)
        spec, cfg = self.specs[name], self.cfg
        gen = self.gen_kwargs(spec)
        done = self.run.samples(name, view, repair=True)
        pending = [
            it for it in self.items[name][self.rank :: self.world]
            if it.id not in done or (done[it.id].error and done[it.id].retryable)
        ]
        shard = self.rank if self.world > 1 else None
        n_skip = 0
        todo = iter(pending)
        chunks = prefetched(lambda: self._next_chunk(spec, view, todo), self.prefetch)
        bar = tqdm(total=len(pending), desc=f"{name}/{view}", disable=not cfg.progress or self.rank != 0, leave=False)
        with bar, closing(chunks):
            for chunk in chunks:
                self.run.append_samples(name, view, chunk.errors, shard)
                n_skip += chunk.n_skip
                bar.update(len(chunk.errors) + chunk.n_skip)
                if chunk.failure is not None:
                    raise chunk.failure
                if chunk.batch:
                    self.run.append_samples(name, view, self._score_batch(spec, view, gen, chunk), shard)
                    bar.update(len(chunk.batch))
        if n_skip:
            log.warning("%s/%s: %d item(s) without a region skipped for this view", name, view, n_skip)

    def run_task(self, name: str) -> TaskResult:
        """All views of one task (sharded across ranks), then its results block."""
        try:
            return self._run_task(name)
        finally:
            if self.images is not None:  # decoded images are shared by the views of one task only
                self.images.clear()

    def _run_task(self, name: str) -> TaskResult:
        items = self.items[name]
        order = [it.id for it in items]
        out: dict[str, list[SampleRecord]] = {}
        skipped: dict[str, int] = {}
        for view in self.views[name]:
            self.run_view(name, view)
            if self.world > 1:
                barrier()
                if self.rank == 0:
                    self.run.merge_ranks(name, view, order)
                barrier()
            recs = self.run.samples(name, view)
            out[view] = [recs[i] for i in order if i in recs]
            skipped[view] = len(order) - len(out[view])  # items without a usable region for this view
        return task_result(out, skipped, seed=self.cfg.seed, task=name)

    def run_all(self) -> Results:
        """Run every task; rank 0 writes results.json (keeping other tasks already in the run dir)."""
        config = self.config_record()
        if self.rank == 0:
            self.run.check_or_write_config(config, self.cfg.overwrite)
        if self.world > 1:
            barrier()
        per_task = {name: self.run_task(name) for name in self.specs}
        views = dict(self.views)
        old = self.run.read_results(tolerant=True) if self.rank == 0 else None
        if old is not None:
            per_task = {**old.tasks, **per_task}
            views = {**old.views, **views}
        results = build_results(per_task, config.identity["model"], config.identity["backend"], views, self.cfg.limit,
                                self.protocol.name)
        failed, _ = request_failures(per_task, list(self.specs))
        remember(results, old, self.key, self.run, None if failed else self.views)
        if self.rank == 0:
            self.run.write_results(results)
        return results


def run_eval(cfg: EvalConfig, backend: Backend | None = None) -> dict[str, Any]:
    """Run (or resume) `cfg`; results.json's content as a plain dict (train/curve.py, demo.py read it so).
    Without a `backend`, a run directory that already finished this exact invocation answers from its
    results.json and no model is loaded (see `vopd_bench.resume`)."""
    return evaluate(cfg, backend)[0]


def evaluate(cfg: EvalConfig, backend: Backend | None = None,
             judge: JudgeFn | None = None) -> tuple[dict[str, Any], list[str], bool]:
    """(results as a plain dict, this invocation's task names, whether it was already finished and nothing ran).
    `judge(prompt) -> reply`: the LLM judge, asked where the protocol calls for one (`cfg.judge` records it)."""
    if backend is None and (done := finished_results(cfg)) is not None:
        return done[0].to_dict(), done[1], True
    ev = Evaluator(cfg, backend, judge)
    return ev.run_all().to_dict(), list(ev.specs), False


def request_failures(tasks: Mapping[str, TaskResult | dict[str, Any]], names: list[str]) -> tuple[int, int]:
    """(failed, total) requests of the named tasks' results blocks (typed, or plain dicts as commands/ hold
    them): records with an error (after retries) over all records, every view counted."""
    failed = total = 0
    for name in names:
        t = tasks.get(name)
        if t is None:
            continue
        block = t if isinstance(t, TaskResult) else TaskResult.from_dict(t)
        for s in block.views.values():
            failed += s.errors
            total += s.n + s.errors
    return failed, total
