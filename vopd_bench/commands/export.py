"""`vopd-bench export`: a run's per-sample table (one row per item × view) as Parquet or CSV, for pandas,
spreadsheets and other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True,
              help="File format of the table.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file (default RUN_DIR/samples.<format>).")
@click.option("--step", type=int, default=None,
              help="For a training run directory: the checkpoint whose eval run is exported (default: the last).")
def command(run_dir: Path, fmt: str, out: Path | None, step: int | None) -> None:
    """Write RUN_DIR's per-sample records as one table: one row per item × view, every record field a column,
    plus `image` (the item's image file where the data are local files). RUN_DIR is an eval run, a training run's
    evals/step-N, an lmms-eval import, or a training run (with --step, else its last checkpoint)."""
    from vopd_bench.api import load_run

    run = load_run(run_dir, step=step)
    df = run.samples
    if out is None:
        out = run.path / f"samples.{fmt}"
    df = _encode_nested(df, lists=fmt == "csv")
    if fmt == "csv":
        data = df.to_csv(index=False).encode()
    else:
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    _write(out, data)
    click.echo(f"{len(df)} rows ({df['task'].nunique()} task(s), views {', '.join(sorted(df['view'].unique()))}) "
               f"-> {out}")


def _write(path: Path, data: bytes) -> None:
    """Write via a temp file + rename: a reader (or a kill) never sees half a table."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encode_nested(df: Any, lists: bool) -> Any:
    """Columns holding mappings (and, for CSV, lists such as crop_box) as JSON text: a file format need not know
    their shape (Parquet cannot store an empty struct), and the text reads back unambiguously."""
    import json

    out = df.copy()
    for col in df.columns:
        kinds = {type(v) for v in df[col] if v is not None}
        if dict in kinds or (lists and kinds & {list, tuple}):
            out[col] = df[col].map(lambda v: None if v is None else json.dumps(v, sort_keys=True))
    return out
