"""`vopd-bench tasks`: every task with its source, size and which views it supports.

Task names are what a user copies into `--task`, so they are never cut: the name column is as wide as the
longest name, and the other columns wrap (long words folded, never shortened with an ellipsis)."""

from __future__ import annotations

import click


@click.command("tasks")
def command() -> None:
    """List the tasks: source, size, box source and views."""
    from rich.console import Console
    from rich.table import Table

    from vopd_bench.tasks import all_specs

    specs = all_specs()
    table = Table(title="Tasks", padding=(0, 1))
    width = max((len(name) for name in specs), default=4)
    table.add_column("task", no_wrap=True, min_width=width, overflow="ignore")
    for col in ("source", "size", "boxes / region", "views", "scorer"):
        table.add_column(col, overflow="fold")
    for name, s in specs.items():
        table.add_row(name, s.hub_id or s.source, str(s.size or "?"), s.box_source, ",".join(s.views), s.scorer)
    Console().print(table)
