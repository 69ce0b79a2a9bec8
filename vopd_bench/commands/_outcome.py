"""What every scoring command does at its end: say how many requests failed and exit with the
incomplete-run code (3, `errors.EXIT_INCOMPLETE`) unless `--allow-errors`."""

from __future__ import annotations

import click

from vopd_bench.errors import IncompleteRun

allow_errors_option = click.option(
    "--allow-errors", is_flag=True,
    help="Exit 0 even when some requests still failed after retries (default: exit 3, an incomplete run).",
)
RETRY_HINT = "re-run the same command to retry them"


def finish(failed: int, total: int, allow_errors: bool, hint: str = RETRY_HINT) -> None:
    """Raise `IncompleteRun` (exit 3) when `failed` of `total` requests failed; with `allow_errors`, warn only."""
    if not failed:
        return
    msg = f"{failed} of {total} requests failed — {hint}"
    if allow_errors:
        click.echo(f"warning: {msg} (--allow-errors: exit 0)", err=True)
        return
    raise IncompleteRun(msg)
