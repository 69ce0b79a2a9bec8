"""The qualitative figure (the paper's Figure 2 / Table 7): for a few items, the full image with the decisive
region outlined, the zoomed crop, the question, and each run's answer per view marked right (✓) or wrong (✗).

Items are picked from the records: given ids, or automatically — items a later run fixed on the full view
(when two runs are given), else items whose full view is wrong and crop right (the gap itself). The images
are re-rendered from the task's data as the run recorded it (config.json: loader, data path, crop params),
so the panel shows exactly what the model saw.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from vopd_bench.analysis import load_items
from vopd_bench.items import Item
from vopd_bench.report.figures import new_figure, paper_style, save
from vopd_bench.rundir import RunDir
from vopd_bench.views import render_view

MARK = {True: "✓", False: "✗"}
RIGHT, WRONG = "#009E73", "#D55E00"


def pick_examples(runs: list[Path], task: str, n: int) -> list[str]:
    """Up to `n` item ids: fixed on the full view between the first and the last run (when several), then
    full wrong + crop right in the first run, in item order."""
    first = RunDir(runs[0])
    full0 = first.load_records(task, "full")
    crop0 = first.load_records(task, "crop")
    picked: list[str] = []
    if len(runs) > 1:
        last = RunDir(runs[-1]).load_records(task, "full")
        picked = [k for k, r in full0.items() if _ok(r) is False and _ok(last.get(k)) is True]
    picked += [k for k, r in full0.items()
               if k not in picked and _ok(r) is False and _ok(crop0.get(k)) is True]
    return picked[:n]


def _ok(rec: dict[str, Any] | None) -> bool | None:
    """A record's verdict; None when it is missing or an error."""
    if rec is None or rec.get("error"):
        return None
    return bool(rec.get("correct"))


def plot_examples(runs: list[tuple[str, Path]], task: str, ids: list[str]) -> tuple[Any, list[dict[str, Any]]]:
    """One row per item: full image (region outlined), crop, and the text column. Returns the figure and, per
    item, the verdicts it shows ({label/view: (parsed, correct)}) for checks."""
    items = load_items(runs[0][1], task, ids)
    records = [(label, {v: RunDir(p).load_records(task, v) for v in ("full", "crop")}) for label, p in runs]
    shown: list[dict[str, Any]] = []
    with paper_style():
        fig = new_figure(7.0, 2.3 * len(ids))
        grid = fig.add_gridspec(len(ids), 3, width_ratios=[1.25, 1.0, 1.5])
        for row, item_id in enumerate(ids):
            item, crop_params = items[item_id]
            full_img = item.load_image()
            boxed, _ = render_view(replace(item, image=full_img), "red_box", crop_params, image=full_img)
            crop_img, _ = render_view(replace(item, image=full_img), "crop", crop_params, image=full_img)
            for col, (img, title) in enumerate([(boxed, "Full image (region outlined)"), (crop_img, "Zoomed crop")]):
                ax = fig.add_subplot(grid[row, col])
                ax.imshow(_thumb(img))
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(title, fontsize=8)
            ax = fig.add_subplot(grid[row, 2])
            ax.axis("off")
            verdicts = _text_column(ax, item, records)
            shown.append({"id": item_id, **verdicts})
    return fig, shown


def _thumb(img: Image.Image, side: int = 512) -> Image.Image:
    """A display copy at most `side` pixels on its longer side (a readable PDF of bounded size)."""
    if max(img.size) <= side:
        return img
    out = img.copy()
    out.thumbnail((side, side))
    return out


def _text_column(ax: Any, item: Item, records: list[tuple[str, dict[str, dict[str, dict[str, Any]]]]]) -> dict[str, Any]:
    lines = textwrap.wrap(item.question, 44)[:4]
    if item.options:
        lines += textwrap.wrap("  ".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(item.options)), 44)[:3]
    lines.append(f"Gold: {item.answer}")
    y = 1.0
    for ln in lines:
        ax.text(0, y, ln, fontsize=7, va="top", transform=ax.transAxes)
        y -= 0.09
    verdicts: dict[str, Any] = {}
    for label, views in records:
        for view, recs in views.items():
            rec = recs.get(item.id)
            ok = _ok(rec)
            if ok is None:
                continue
            parsed = rec.get("parsed") if rec else None
            verdicts[f"{label}/{view}"] = (parsed, ok)
            ax.text(0, y, f"{label} · {view}: {parsed if parsed is not None else '(no answer)'} {MARK[ok]}",
                    fontsize=7, va="top", color=RIGHT if ok else WRONG, transform=ax.transAxes)
            y -= 0.09
    return verdicts


def draw_examples(runs: list[tuple[str, Path]], task: str, out_stem: Path, n: int = 3,
                  ids: list[str] | None = None) -> tuple[list[Path], list[dict[str, Any]]]:
    """Pick (or take `ids`), plot and save `out_stem`.png/.pdf; returns the files and what each row shows.
    No files when no item qualifies."""
    chosen = list(ids) if ids else pick_examples([p for _, p in runs], task, n)
    if not chosen:
        return [], []
    fig, shown = plot_examples(runs, task, chosen)
    with paper_style():
        return save(fig, out_stem), shown
