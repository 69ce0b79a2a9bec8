"""`vopd-bench tasks`: every task with its source, size and which views it supports."""

from __future__ import annotations

import click


@click.command("tasks")
def command() -> None:
    """List the tasks: source, size, box source and views."""
    from rich.console import Console
    from rich.table import Table

    from vopd_bench.tasks import all_specs

    table = Table(title="Tasks")
    for col in ("task", "source", "size", "boxes / region", "views", "scorer"):
        table.add_column(col)
    for name, s in all_specs().items():
        table.add_row(name, s.hub_id or s.source, str(s.size or "?"), s.box_source, ",".join(s.views), s.scorer)
    Console().print(table)
