"""Whether a run directory already holds all that an eval invocation asks for, decided without loading
the model (nor importing torch): re-running a finished command then costs well under a second.

When an invocation finishes with no failed request, the harness records its *invocation key* in
`results.json` (`complete`). The key hashes everything that could make the same command produce other
records: the requested backend settings, the model's content fingerprint (or a pinned Hub commit), each
task's recorded settings (prompt, options, crop, generation) and the size and modification time of its
data files, views, limit, seed, package versions and the visible GPU devices. Anything unknown (a Hub id
without a pinned commit, a data tree too large to stat quickly) means no key: the ordinary resume runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vopd_bench import __version__
from vopd_bench.errors import UserError
from vopd_bench.rundir import RunDir
from vopd_bench.runtime import package_versions
from vopd_bench.schema import Results

if TYPE_CHECKING:
    from vopd_bench.evaluate import EvalConfig

log = logging.getLogger(__name__)
MAX_FILES = 200_000  # a data tree larger than this is not stat-ed: no fast path
KEEP_KEYS = 32  # invocation keys remembered per run directory


def path_signature(path: str | None) -> Any:
    """Size and mtime of a file, or of every file under a folder (None: no path; raises _TooLarge)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_file():
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]
    if not p.is_dir():
        return [str(p), "missing"]
    h, n = hashlib.sha256(), 0
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for f in sorted(files):
            n += 1
            if n > MAX_FILES:
                raise _TooLarge(path)
            st = os.stat(os.path.join(root, f))
            h.update(f"{os.path.relpath(os.path.join(root, f), p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return [str(p.resolve()), h.hexdigest()]


class _TooLarge(Exception):
    pass


def model_signature(backend: str, model: str, revision: str | None, base_url: str | None) -> Any:
    """What identifies the weights without loading them; None when that cannot be known cheaply."""
    from vopd_bench.models import fingerprint, resolve_model

    if backend == "openai":
        return [base_url, model]  # the server's model: the same name on the same server
    path = resolve_model(model)
    if Path(path).is_dir():
        return [path, fingerprint(path)]
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return [model, revision]  # a pinned Hub commit
    return None  # a Hub id on a moving branch: only loading it tells what it is


def device_signature() -> list[Any]:
    """Which GPUs are visible (dtype and device `auto` depend on them), without importing torch."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return [os.environ.get("CUDA_VISIBLE_DEVICES"), sorted(p.name for p in gpus.iterdir()) if gpus.is_dir() else []]


def invocation_key(cfg: EvalConfig) -> str | None:
    """Hash of everything that could change what this invocation writes (None: not decidable cheaply)."""
    from vopd_bench.protocol import gen_kwargs, load_spec, task_record
    from vopd_bench.views import STAGED_VIEWS

    b = cfg.backend
    try:
        model = model_signature(b.backend, b.model, b.revision, getattr(b.options, "base_url", None))
        if model is None:
            return None
        tasks = []
        protocol = getattr(cfg, "protocol", "vopd-bench")
        system_prompt = getattr(cfg, "system_prompt", None)
        for name in cfg.tasks:
            spec = load_spec(name, cfg.crop, protocol, system_prompt)
            data = cfg.data.get(name, cfg.data.get(spec.name))
            rec = task_record(spec, data, gen_kwargs(spec, cfg.seed, cfg.max_new_tokens), cfg.boxes)
            tasks.append([spec.name, rec, path_signature(data)])
        parts = {
            "vopd_bench": __version__,
            "backend": b.settings(),  # without the speed-only settings (batch size, concurrency, retries)
            "model": model,
            "tasks": tasks,
            "views": cfg.views,
            "boxes": path_signature(cfg.boxes),
            "limit": cfg.limit,
            "seed": cfg.seed,
            "versions": package_versions(),
            "devices": device_signature(),
            "world_size": os.environ.get("WORLD_SIZE", "1"),
        }
        if protocol != "vopd-bench" or system_prompt is not None:  # absent by default: earlier runs' keys hold
            parts["protocol"] = [protocol, system_prompt]
        if getattr(cfg, "judge", None) is not None:
            parts["judge"] = cfg.judge
        if getattr(cfg, "circular", False):
            parts["circular"] = True
        if any(v in STAGED_VIEWS for v in cfg.views or ()):  # the first stage's settings
            parts["self_zoom"] = [cfg.grounding_format, cfg.locate_max_new_tokens]
    except (_TooLarge, OSError, UserError) as e:  # a real problem is reported by the ordinary path
        log.debug("no invocation key: %s", e)
        return None
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def sample_signature(run: RunDir, views: dict[str, list[str]]) -> dict[str, list[int]] | None:
    """Size and mtime of each task/view sample file (None when one is missing)."""
    out = {}
    for task, vs in views.items():
        for view in vs:
            p = run.samples_path(task, view)
            if not p.is_file():
                return None
            st = p.stat()
            out[f"{task}/{view}"] = [st.st_size, st.st_mtime_ns]
    return out


def remember(results: Results, old: Results | None, key: str | None, run: RunDir,
             views: dict[str, list[str]] | None) -> None:
    """Set `results.complete`, the run directory's finished invocations: `old`'s, plus this one's key with the
    signature of its sample files when `views` (task → views it ran) is given, i.e. when it finished without failure."""
    done = {k: v for k, v in (old.complete if old is not None else {}).items() if k != key}
    if key and views is not None and (sig := sample_signature(run, views)) is not None:
        done[key] = {"samples": sig, "results": _digest(results, views)}
    results.complete = dict(list(done.items())[-KEEP_KEYS:])


def _digest(results: Results, tasks: Any) -> str:
    """Hash of the named tasks' blocks as results.json holds them."""
    blocks = {t: results.tasks[t].to_dict() if t in results.tasks else None for t in tasks}
    return hashlib.sha256(json.dumps(_nan_to_null(blocks), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _nan_to_null(x: Any) -> Any:
    """NaN (an empty view, in memory) is null once read back from results.json: hash both alike."""
    if isinstance(x, dict):
        return {k: _nan_to_null(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_null(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def finished_results(cfg: EvalConfig) -> tuple[Results, list[str]] | None:
    """(results, the invocation's task names) when the run directory already finished this exact
    invocation and its sample files are as they were then; None when there is anything to do or check."""
    if cfg.overwrite:
        return None
    run = RunDir(cfg.out)
    try:
        results = run.read_results()
    except (OSError, UserError):  # the ordinary path recomputes it
        return None
    done = results.complete if results is not None else None
    if not done:
        return None
    key = invocation_key(cfg)
    if key is None or not isinstance(done.get(key), dict):
        return None
    from vopd_bench.protocol import load_spec

    names = [load_spec(t, cfg.crop).name for t in cfg.tasks]
    recorded = done[key].get("samples") or {}
    views: dict[str, list[str]] = {}
    for k in recorded:
        task, view = k.rsplit("/", 1)
        views.setdefault(task, []).append(view)
    if set(views) != set(names) or any(n not in results.tasks for n in names):
        return None
    if sample_signature(run, views) != recorded:
        return None  # a sample file changed (or went) since the run finished
    if _digest(results, views) != done[key].get("results"):
        return None  # another invocation rewrote these tasks' results (e.g. another --limit)
    return results, names
