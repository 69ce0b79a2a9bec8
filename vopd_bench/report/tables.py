r"""Tables as Markdown, LaTeX (booktabs) and CSV: Table 1 (full-view accuracy), Table 2 (crop
accuracy and gap) and the per-category breakdown. Numbers are in percent / points.

`Table.to_frame()` gives each table as a pandas DataFrame (the numbers with their CI / collapse companions,
one row per model) for notebooks; `vopd_bench.frames` builds the run-level DataFrames. The Markdown and LaTeX
text keeps its own renderer rather than pandas' Styler: these tables put a dagger on a collapsed model's cell
and exclude it from bold-best, show a dash for a missing value, and group columns under `\cmidrule`d
headers; Styler.to_latex (pandas 3.1) writes no `\cmidrule` under a column MultiIndex and would need the same
per-cell rules as formatter callbacks, so it would move this logic, not remove it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vopd_bench.report.load import ModelResult, acc
from vopd_bench.schema import TaskResult

if TYPE_CHECKING:
    import pandas as pd

DASH_MD = "–"
DASH_TEX = "--"
DAGGER = "†"  # marks the gap of a collapsed model (see `collapse_note`)


@dataclass
class Column:
    """One displayed column; `extra` holds CSV-only companions (e.g. CI bounds)."""

    header: str
    key: str
    values: list[float | None]
    fmt: str = "{:.1f}"
    best: str | None = "max"  # "max", "absmin" (closest to zero) or None
    group: str | None = None
    extra: dict[str, list[float | int | None]] = field(default_factory=dict)
    flagged: set[int] | None = None  # rows marked with a dagger, never best; a set: CSV gets `<key>_collapse`

    def text(self, i: int) -> str | None:
        v = self.values[i]
        return None if v is None else self.fmt.format(v)

    def shown(self, i: int) -> str | None:
        """The cell's text, with the dagger on a flagged row."""
        t = self.text(i)
        return None if t is None else t + (DAGGER if self.flagged and i in self.flagged else "")

    def best_rows(self) -> set[int]:
        """Rows holding the best displayed value (ties all win), flagged rows excluded; empty when < 2 values."""
        shown = {i: float(t) for i in range(len(self.values))
                 if (t := self.text(i)) is not None and i not in (self.flagged or ())}
        if len(shown) < 2 or self.best is None:
            return set()
        key = abs if self.best == "absmin" else (lambda x: -x)
        top = min(key(v) for v in shown.values())
        return {i for i, v in shown.items() if key(v) == top}


@dataclass
class Table:
    caption: str
    label: str  # LaTeX label and file stem
    rows: list[str]
    columns: list[Column]
    row_header: str = "Model"
    notes: list[str] = field(default_factory=list)  # footnotes, printed below the table

    def to_markdown(self) -> str:
        heads = [self.row_header] + [f"{c.group} {c.header}" if c.group else c.header for c in self.columns]
        lines = [f"**{self.caption}**", "", "| " + " | ".join(_md_escape(h) for h in heads) + " |",
                 "|:--" + "|--:" * len(self.columns) + "|"]
        bold = [c.best_rows() for c in self.columns]
        for i, row in enumerate(self.rows):
            cells = [_md_escape(row)]
            for c, b in zip(self.columns, bold, strict=True):
                t = c.shown(i)
                cells.append(DASH_MD if t is None else (f"**{t}**" if i in b else t))
            lines.append("| " + " | ".join(cells) + " |")
        lines += [line for note in self.notes for line in ("", _md_escape(note))]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        spec = "l" + "r" * len(self.columns)
        out = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex_escape(self.caption)}}}",
               f"\\label{{tab:{self.label}}}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
        if any(c.group for c in self.columns):
            spans: list[tuple[str, int, int]] = []  # (group, first col, last col), 1-based after the row header
            for j, c in enumerate(self.columns, 2):
                g = c.group or ""
                if spans and spans[-1][0] == g and g:
                    spans[-1] = (g, spans[-1][1], j)
                else:
                    spans.append((g, j, j))
            cells = [""] + [f"\\multicolumn{{{b - a + 1}}}{{c}}{{{_tex_escape(g)}}}" if g else "" for g, a, b in spans]
            out.append(" & ".join(cells) + " \\\\")
            out.append("".join(f"\\cmidrule(lr){{{a}-{b}}}" for g, a, b in spans if g))
        out.append(" & ".join([_tex_escape(self.row_header)] + [_tex_escape(c.header) for c in self.columns]) + " \\\\")
        out.append("\\midrule")
        bold = [c.best_rows() for c in self.columns]
        for i, row in enumerate(self.rows):
            cells = [_tex_escape(row)]
            for c, b in zip(self.columns, bold, strict=True):
                t = c.shown(i)
                t = DASH_TEX if t is None else t.replace("-", "$-$").replace(DAGGER, _TEX[DAGGER])
                cells.append(f"\\textbf{{{t}}}" if i in b else t)
            out.append(" & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        out += [f"\\par\\smallskip{{\\footnotesize {_tex_escape(note)}}}" for note in self.notes]
        out.append("\\end{table}")
        return "\n".join(out) + "\n"

    def to_frame(self) -> pd.DataFrame:
        """The table's numbers as a DataFrame: one row per model (index named by the row header), a column per
        value and per CSV companion (CI bounds, p-values, `<key>_collapse`)."""
        import pandas as pd

        data: dict[str, list[float | int | None]] = {}
        for c in self.columns:
            data[c.key] = list(c.values)
            data.update({f"{c.key}_{k}": list(v) for k, v in c.extra.items()})
            if c.flagged is not None:
                data[f"{c.key}_collapse"] = [None if v is None else int(i in c.flagged) for i, v in enumerate(c.values)]
        return pd.DataFrame(data, index=pd.Index(self.rows, name=self.row_header.lower()))

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        heads = [self.row_header.lower()]
        for c in self.columns:
            heads += [c.key] + [f"{c.key}_{k}" for k in c.extra] + ([f"{c.key}_collapse"] if c.flagged is not None else [])
        w.writerow(heads)
        for i, row in enumerate(self.rows):
            cells: list[str] = [row]
            for c in self.columns:
                cells += [_csv_num(c.values[i])] + [_csv_num(v[i], k) for k, v in c.extra.items()]
                if c.flagged is not None:
                    cells.append("" if c.values[i] is None else str(int(i in c.flagged)))
            w.writerow(cells)
        return buf.getvalue()

    def write(self, out_dir: Path) -> list[Path]:
        """Write `<label>.md`, `.tex` and `.csv` into out_dir."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for ext, text in (("md", self.to_markdown()), ("tex", self.to_latex()), ("csv", self.to_csv())):
            p = out_dir / f"{self.label}.{ext}"
            p.write_text(text, encoding="utf-8")
            paths.append(p)
        return paths


def _csv_num(v: float | int | None, key: str = "") -> str:
    """Percent / points to 2 decimals, counts as integers, p-values to 3 significant digits."""
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    return f"{v:.3g}" if key == "p_value" else f"{v:.2f}"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DAGGER: r"$^\dagger$",
        "→": r"$\rightarrow$", "—": "---"}


def _tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s).replace("−", "$-$").replace("–", "--")


# ---- numbers ---------------------------------------------------------------------------------

def pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def gap_points(t: TaskResult | None) -> float | None:
    """The task's gap in points (the paired value; crop − full accuracy if the gap block is missing)."""
    if t is None:
        return None
    if t.gap is not None and t.gap.value is not None:
        return t.gap.value
    f, c = acc(t, "full"), acc(t, "crop")
    return None if f is None or c is None else 100.0 * (c - f)


def task_order(models: list[ModelResult]) -> list[str]:
    """Tasks in order of first appearance, holdout-like tasks (full view only) last."""
    seen: dict[str, bool] = {}
    for m in models:
        for name, t in m.tasks.items():
            seen[name] = seen.get(name, False) or ("crop" in t.views)
    return [t for t in seen if seen[t]] + [t for t in seen if not seen[t]]


def gap_tasks(models: list[ModelResult]) -> list[str]:
    """Tasks with both a full and a crop view in some model."""
    return [t for t in task_order(models) if any({"full", "crop"} <= set(m.tasks.get(t, TaskResult({})).views)
                                                 for m in models)]


def _mean_if_all(vals: list[float | None]) -> float | None:
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)  # type: ignore[arg-type]


def _view_col(models: list[ModelResult], task: str, view: str, header: str, group: str | None = None) -> Column:
    stats = [m.tasks[task].views.get(view) if task in m.tasks else None for m in models]
    return Column(
        header=header, key=f"{task}_{view}" if group else task, group=group,
        values=[pct(s.accuracy) if s else None for s in stats],
        extra={"ci_low": [pct(s.ci_low) if s else None for s in stats],
               "ci_high": [pct(s.ci_high) if s else None for s in stats],
               "n": [s.n if s else None for s in stats]},
    )


def table_full(models: list[ModelResult]) -> Table:
    """Table 1: rows = models, columns = tasks + average, full-view accuracy; best per column in bold."""
    tasks = [t for t in task_order(models) if any("full" in m.tasks.get(t, TaskResult({})).views for m in models)]
    cols = [_view_col(models, t, "full", t) for t in tasks]
    avg = [_mean_if_all([c.values[i] for c in cols]) for i in range(len(models))]
    cols.append(Column(header="Average", key="average", values=avg))
    return Table(
        caption="Accuracy (%) on the full image. Best per column in bold; the average is over the "
                "columns, left blank when a model lacks a task.",
        label="table1_full", rows=[m.label for m in models], columns=cols,
    )


def collapse_note(models: list[ModelResult], short: bool = False) -> str | None:
    """The footnote for the daggers: which models collapsed and how (`short`: for a figure), or None."""
    flagged = [m for m in models if m.collapse]
    if not flagged:
        return None
    which = "; ".join(f"{m.label}: {', '.join(m.collapse)}" for m in flagged)
    limits = {m.collapse_threshold for m in flagged}
    limit = f"{limits.pop():g} points" if len(limits) == 1 and None not in limits else "the collapse threshold"
    if short:
        return f"{DAGGER} Collapse (crop or holdout more than {limit} below the base) — {which}."
    return (f"{DAGGER} Collapse: crop or holdout accuracy fell more than {limit} below the base — {which}. "
            "The gap narrowed because the model got worse, not because the full view caught up; it is never "
            "marked best.")


def table_crop_gap(models: list[ModelResult]) -> Table:
    """Table 2: crop accuracy (best = highest) and gap in points (best = closest to zero, a collapsed model's
    never: it carries a dagger and the table a footnote) per task."""
    flagged = {i for i, m in enumerate(models) if m.collapse}
    cols: list[Column] = []
    crops: list[list[float | None]] = []
    gaps: list[list[float | None]] = []
    for t in gap_tasks(models):
        c = _view_col(models, t, "crop", "Crop", group=t)
        g = [gap_points(m.tasks.get(t)) for m in models]
        gb = [m.tasks[t].gap if t in m.tasks else None for m in models]
        cols += [c, Column(header="Gap", key=f"{t}_gap", group=t, values=g, fmt="{:+.1f}", best="absmin",
                           flagged=flagged,
                           extra={"ci_low": [b.ci_low if b else None for b in gb],
                                  "ci_high": [b.ci_high if b else None for b in gb],
                                  "p_value": [b.p_value if b else None for b in gb]})]
        crops.append(c.values)
        gaps.append(g)
    n = len(models)
    cols += [Column(header="Crop", key="average_crop", group="Average",
                    values=[_mean_if_all([c[i] for c in crops]) for i in range(n)]),
             Column(header="Gap", key="average_gap", group="Average", fmt="{:+.1f}", best="absmin", flagged=flagged,
                    values=[_mean_if_all([g[i] for g in gaps]) for i in range(n)])]
    note = collapse_note(models)
    return Table(
        caption="Accuracy (%) on the crop of the decisive region, and the regional-to-global gap "
                "(crop − full, points). Bold: highest crop accuracy; gap closest to zero.",
        label="table2_crop_gap", rows=[m.label for m in models], columns=cols, notes=[note] if note else [],
    )


def table_categories(models: list[ModelResult], task: str) -> Table:
    """Per-category breakdown of one task: rows = categories, per model full / crop / gap."""
    cats: list[str] = []
    for m in models:
        for c in (m.tasks[task].categories or {} if task in m.tasks else {}):
            if c not in cats:
                cats.append(c)
    cols: list[Column] = []
    for m in models:
        blocks = [(m.tasks[task].categories or {}).get(c) if task in m.tasks else None for c in cats]
        for view in ("full", "crop"):
            if any(b is not None and view in b.views for b in blocks):
                cols.append(Column(header=view.capitalize(), key=f"{m.label}_{view}", group=m.label, best=None,
                                   values=[pct(acc(b, view)) if b else None for b in blocks],
                                   extra={"n": [b.views[view].n if b and view in b.views else None
                                                for b in blocks]}))
        if any(b is not None and b.gap is not None for b in blocks):
            cols.append(Column(header="Gap", key=f"{m.label}_gap", group=m.label, fmt="{:+.1f}", best=None,
                               values=[gap_points(TaskResult(b.views, b.gap)) if b else None for b in blocks],
                               flagged=set(range(len(cats))) if m.collapse else set()))
    note = collapse_note([m for m in models if task in m.tasks and m.tasks[task].categories and m.tasks[task].gap])
    return Table(
        caption=f"{task}: accuracy (%) per category on the full image and the crop, and the gap (points).",
        label=f"categories_{slug(task)}", rows=cats, columns=cols, row_header="Category", notes=[note] if note else [],
    )


def slug(s: str) -> str:
    """A file-name stem: runs of other characters become one "_" (none at either end)."""
    import re

    return re.sub(r"[^\w.-]+", "_", s).strip("_") or "_"


def table_protocols(models: list[ModelResult]) -> Table | None:
    """The same responses scored under every protocol their records carry verdicts of: rows = model · task ·
    view, columns = protocols (accuracy over the verdicts each protocol's rules decided; CSV adds the
    undecided count and the bounds with those all wrong / all right). A dagger: that protocol would have
    asked with another prompt, so its column re-scores these responses rather than reproducing its run.
    None when no model has protocol blocks (runs before protocols)."""
    names: list[str] = []
    rows: list[tuple[str, dict[str, dict]]] = []
    for m in models:
        for task, t in m.tasks.items():
            blocks = t.protocols or {}
            for n in blocks:
                if n not in names:
                    names.append(n)
            for view in t.views:
                if blocks:
                    rows.append((f"{m.label} · {task} · {view}",
                                 {n: {**((b.get("views") or {}).get(view) or {}), "same_prompt": b.get("same_prompt")}
                                  for n, b in blocks.items()}))
    if not rows:
        return None
    names.sort(key=lambda n: (n != "vopd-bench", n))
    cols = []
    for n in names:
        cells = [r.get(n) or {} for _, r in rows]
        cols.append(Column(
            header=n, key=slug(n), best=None, values=[pct(c.get("accuracy")) for c in cells],
            flagged={i for i, c in enumerate(cells) if c.get("same_prompt") is False},
            extra={"undecided": [c.get("undecided") for c in cells], "n": [c.get("n") for c in cells],
                   "low": [pct(c.get("accuracy_low")) for c in cells],
                   "high": [pct(c.get("accuracy_high")) for c in cells]},
        ))
    undecided = sum(int(c.get("undecided") or 0) for _, r in rows for c in r.values())
    notes = [f"{DAGGER} This protocol would have asked with another prompt: its number re-scores these responses, "
             "it does not reproduce a run under that protocol."]
    if undecided:
        notes.append(f"{undecided} verdict(s) are left to a judge by their protocol's rules (no judge was run): "
                     "the accuracy is over the decided ones; tables/table_protocols.csv gives the bounds.")
    for m in models:  # where an LLM judge decided: how often, and how often our own rules agree with it
        for task, t in m.tasks.items():
            for view, st in t.views.items():
                if st.judged:
                    agree = ("" if st.judge_agreement is None
                             else f"; the vopd-bench rules agree on {100 * st.judge_agreement:.0f}% of them")
                    notes.append(f"Judge ({m.label} · {task} · {view}): {st.judged} of {st.n} verdicts{agree}.")
    return Table(
        caption="Accuracy (%) of the same responses under each scoring protocol (docs/protocols.md).",
        label="table_protocols", rows=[r for r, _ in rows], columns=cols, row_header="Model · task · view",
        notes=notes,
    )
