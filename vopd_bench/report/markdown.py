"""report.md: the protocol line, the figures and the tables, stitched together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vopd_bench.report.closure import closure_text, pair_closures, pct
from vopd_bench.report.load import ModelResult, TrainingRun, size
from vopd_bench.report.tables import DAGGER, Table, collapse_note, gap_points, task_order
from vopd_bench.schema import Closure
from vopd_bench.trainsets.provenance import sentence


@dataclass
class Section:
    """A figure (relative PNG/PDF paths) with its caption, optionally followed by tables."""

    title: str
    png: str | None = None
    pdf: str | None = None
    caption: str = ""
    lines: list[str] = field(default_factory=list)
    tables: list[tuple[Table, str]] = field(default_factory=list)  # (table, relative stem)


def _int(n: Any) -> str:
    return f"{int(n):,}" if isinstance(n, (int, float)) else str(n)


def _budget_text(b: dict[str, Any] | None) -> str:
    if not b:
        return "default"
    lo, hi = b.get("min_pixels"), b.get("max_pixels")
    if lo is None and hi is None:
        return "model default"
    return f"{_int(lo) if lo is not None else '?'}–{_int(hi) if hi is not None else '?'} px"


def _crop_text(c: dict[str, Any] | None) -> str:
    if not c:
        return "not recorded"
    parts = [f"margin {c.get('margin')}", f"min side {c.get('min_side')} px", f"upscale {c.get('upscale')}×"]
    if c.get("resize_to"):
        parts.append(f"resized to {c['resize_to']}")
    return ", ".join(parts)


def _distinct(pairs: list[tuple[str, str]]) -> str:
    """'X' when every model agrees, else 'A: X; B: Y'."""
    vals = list(dict.fromkeys(v for _, v in pairs))
    if len(vals) == 1:
        return vals[0]
    return "; ".join(f"{k}: {v}" for k, v in pairs)


def protocol_line(models: list[ModelResult]) -> str:
    """One line: image budget, crop parameters, n per task, parse-failure rate."""
    configured = [m for m in models if m.config is not None]
    budget = _distinct([(m.label, _budget_text(m.image_budget)) for m in configured]) if configured else "not recorded"
    tasks = task_order(models)
    crops = []
    for t in tasks:
        pairs = [(m.label, _crop_text(m.crop_params(t))) for m in configured if t in m.tasks and "crop" in m.tasks[t].views]
        if pairs:
            crops.append((t, _distinct(pairs)))
    if crops and len({c for _, c in crops}) == 1:
        crop = crops[0][1]
    else:
        crop = "; ".join(f"{t}: {c}" for t, c in crops) or "no crop view"
    ns = []
    for t in tasks:
        vals = sorted({size(m.tasks[t]) for m in models if t in m.tasks})
        ns.append(f"{t} {vals[0]}" if len(vals) == 1 else f"{t} {vals[0]}–{vals[-1]}")
    pf: dict[str, list[int]] = {}
    for m in configured:  # read from results.json (curve.jsonl records no parse-failure count)
        for t in m.tasks.values():
            for v, s in t.views.items():
                if s.parse_failures is None:
                    continue
                acc = pf.setdefault(v, [0, 0])
                acc[0] += s.parse_failures
                acc[1] += s.n
    pf_text = ", ".join(f"{v} {100 * a / n:.1f}%" for v, (a, n) in pf.items() if n) or "not recorded"
    scoring = _distinct([(m.label, _scoring_text(m)) for m in configured]) if configured else "not recorded"
    extra = _view_sums(configured)
    return (f"**Protocol.** Image budget {budget}; crop of the decisive region: {crop}; "
            f"n per task: {', '.join(ns)}; parse-failure rate: {pf_text}{extra}; scoring protocol: {scoring}.")


def _scoring_text(m: ModelResult) -> str:
    """The scoring protocol of a run, with its --system-prompt where one was given."""
    p = m.config.protocol if m.config is not None else None
    name = (p or {}).get("name") or "vopd-bench"
    sp = m.config.system_prompt if m.config is not None else None
    return name + (f" (system prompt {sp!r})" if sp else "")


def _view_sums(models: list[ModelResult]) -> str:
    """"; cut off inside the reasoning by the token limit: …; mean visual tokens: …" where recorded."""
    cut: dict[str, list[int]] = {}
    vt: dict[str, list[float]] = {}
    for m in models:
        for t in m.tasks.values():
            for v, s in t.views.items():
                if s.truncated is not None:
                    c = cut.setdefault(v, [0, 0])
                    c[0] += s.truncated
                    c[1] += s.n
                if s.visual_tokens is not None:
                    vt.setdefault(v, []).append(s.visual_tokens)
    out = ""
    if any(a for a, _ in cut.values()):
        out += "; cut off inside the reasoning by the token limit (apart from parse failures): " + ", ".join(
            f"{v} {a} of {n}" for v, (a, n) in cut.items())
    if vt:
        out += "; mean visual tokens per image: " + ", ".join(f"{v} {sum(x) / len(x):.0f}" for v, x in vt.items())
    return out


def pair_line(before: ModelResult, after: ModelResult, closures: dict[str, Closure | None] | None = None) -> str:
    """Per task: the gap before → after, its relative reduction and the share of the base gap closed by the full
    view (with its CI; `closures` as `load_inputs` computed them, else computed here); a collapsed `after` gets a
    dagger and the footnote."""
    closures = pair_closures(before, after) if closures is None else closures
    parts = []
    mark = DAGGER if after.collapse else ""
    for t in task_order([before, after]):
        g0, g1 = gap_points(before.tasks.get(t)), gap_points(after.tasks.get(t))
        if g0 is None or g1 is None:
            continue
        c = closures.get(t)
        r = None if c is None else c.gap_reduction
        parts.append(f"{t} {g0:+.1f} → {g1:+.1f} pts{mark} (reduction {pct(r, plus=False)}; "
                     f"gap closed {closure_text(c)})")
    note = collapse_note([after])
    return (f"{before.label} → {after.label}: gap " + ("; ".join(parts) if parts else "n/a") + "."
            + (f" {note}" if note else ""))


def curve_line(run: TrainingRun, data: dict[str, Any]) -> str:
    steps = [p.step for p in run.curve]
    bits = [f"{len(steps)} scored checkpoint(s), steps {steps[0]}–{steps[-1]}"]
    mark = DAGGER if steps[-1] in data.get("collapsed", {}) else ""
    for t, d in data.get("tasks", {}).items():
        r = d["reduction"]
        g0 = "n/a" if d["gap0"] is None else f"{d['gap0']:+.1f}"
        gn = "n/a" if d["gapN"] is None else f"{d['gapN']:+.1f}"
        bit = (f"{t} gap {g0} → {gn} pts{mark} (relative reduction {pct(r, plus=False)}; "
               f"gap closed {closure_text(d.get('closure'))})")
        fc, cc = d.get("full_change"), d.get("crop_change")
        if fc is not None and cc is not None:
            bit += f", full {fc:+.1f} pts, crop {cc:+.1f} pts"
        bits.append(bit)
    for h, tr in data.get("holdout", {}).items():
        acc = [a for a in tr["acc"] if a == a]
        if acc:
            bits.append(f"{h} accuracy {acc[0]:.1f} → {acc[-1]:.1f}%")
    note = data.get("footnote")
    cfg = run.dir.read_config()
    prompts = sentence((cfg.train_task or {}).get("provenance")) if cfg is not None else None
    return (f"`{run.path}`: " + "; ".join(bits) + "." + (f" {note}" if note else "")
            + (f" Prompts: {prompts}." if prompts else ""))


def render(inputs: list[str], protocol: str, sections: list[Section]) -> str:
    out = ["# vopd-bench report", "", "Runs: " + "; ".join(inputs) + ".", "", protocol, ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.png:
            out += [f"![{s.title}]({s.png})", ""]
        if s.caption:
            out += [s.caption + (f" ([PDF]({s.pdf}))" if s.pdf else ""), ""]
        for line in s.lines:
            out += [line, ""]
        for table, stem in s.tables:
            out += [table.to_markdown().rstrip("\n"), "",
                    f"LaTeX: [{stem}.tex]({stem}.tex) · CSV: [{stem}.csv]({stem}.csv)", ""]
    return "\n".join(out).rstrip("\n") + "\n"
