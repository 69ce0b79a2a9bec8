"""The report: figures (gap across models, before/after, gap-reduction curve, per category), tables
(Markdown, LaTeX, CSV) and report.md, from run directories only.

`build_report` makes the whole report; `vopd_bench.report.curve.draw_curve` redraws a training curve.
"""

from __future__ import annotations

from vopd_bench.report.build import build_report
from vopd_bench.report.curve import draw_curve

__all__ = ["build_report", "draw_curve"]
