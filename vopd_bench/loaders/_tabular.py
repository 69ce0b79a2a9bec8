"""Shared reading for the benchmark loaders: where the published files are (`--data` or a Hub
snapshot), reading TSV/CSV/parquet/JSON/JSONL, column checks, option columns, box strings and lazy
images. Every problem with the input is a one-line UserError naming the file, row and column."""

from __future__ import annotations

import ast
import base64
import csv
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.items import LETTERS, Box
from vopd_bench.runtime import iter_jsonl

Row = dict[str, Any]
_MISSING = ("", "nan", "none", "null")


# ---------------------------------------------------------------- where the files are


def source(spec: Any, data: Path | None, patterns: Sequence[str]) -> Path:
    """`data` when given (it must exist), else a snapshot of the task's Hub dataset repo restricted to
    `patterns` (the benchmark's published files)."""
    if data is not None:
        if not data.exists():
            raise UserError(f"task {spec.name}: --data {data} does not exist")
        return data
    return hub_snapshot(spec, patterns)


def hub_snapshot(spec: Any, patterns: Sequence[str]) -> Path:
    """Download (or reuse the cached) published files of `spec.hub_id`; UserError when impossible."""
    hint = "or pass --data PATH with the benchmark's published files"
    if not spec.hub_id:
        raise UserError(f"task {spec.name}: no Hub copy to download ({spec.source}); pass --data PATH with its published files")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"task {spec.name}: downloading {spec.hub_id} needs huggingface_hub "
                        f"(pip install 'vopd-bench[hub]'), {hint}") from None
    try:
        path = snapshot_download(spec.hub_id, repo_type="dataset", allow_patterns=list(patterns),
                                 revision=spec.options.get("revision"))
    except Exception as e:  # offline, gated, not found, ...: all mean "use --data"
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise UserError(f"task {spec.name}: cannot download {spec.hub_id} from the Hub ({type(e).__name__}: {msg}); {hint}") from None
    return Path(path)


def parquet_tables(spec: Any, data: Path | None, published: Sequence[str], patterns: Sequence[str], layout: str,
                   lazy: Sequence[str] = ()) -> list[Table]:
    """A benchmark published as Parquet, one `Table` per file.

    Without `data`, the `published` files of `spec.hub_id` load through `datasets.load_dataset` (its cache,
    `revision` pinning from the spec's options, `HF_DATASETS_OFFLINE`/`HF_HUB_OFFLINE` honoured); a folder given as
    `data` (a clone or snapshot of the Hub repo) loads the files matching `patterns` the same way; a single file
    keeps the plain reader (`read_table`). Either `datasets` route records what was read in
    `spec.options["dataset"]` (path, files, requested and resolved revision, fingerprint per file), which the
    task's record in config.json carries: a re-uploaded benchmark shows as another revision/fingerprint."""
    if data is not None and not data.exists():
        raise UserError(f"task {spec.name}: --data {data} does not exist")
    if data is not None and data.is_file():
        return [read_table(data, lazy)]
    if data is not None:
        files = [str(f) for f in find_files(data, patterns, layout)]
        return _dataset_tables(spec, None, files, str(data), lazy)
    if not spec.hub_id:
        raise UserError(f"task {spec.name}: no Hub copy to download ({spec.source}); pass --data PATH with its "
                        "published files")
    return _dataset_tables(spec, spec.hub_id, list(published), spec.hub_id, lazy)


def _dataset_tables(spec: Any, hub_id: str | None, files: list[str], where: str, lazy: Sequence[str]) -> list[Table]:
    hint = "or pass --data PATH with the benchmark's published files"
    try:
        import datasets
    except ImportError:
        raise UserError(f"task {spec.name}: reading {where} needs the datasets package (pip install datasets), "
                        f"{hint}") from None
    splits = {f"file{i}": f for i, f in enumerate(files)}
    requested = spec.options.get("revision")
    try:
        builder = datasets.load_dataset_builder(hub_id or "parquet", data_files=splits,
                                                revision=requested if hub_id else None)
        builder.download_and_prepare()
        sets = {k: builder.as_dataset(split=k) for k in splits}
    except Exception as e:  # offline without a cached copy, gated, not found, unreadable Parquet: all one line
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise UserError(f"task {spec.name}: cannot load {where} through datasets ({type(e).__name__}: {msg}); "
                        f"{hint}") from None
    spec.options["dataset"] = {
        "via": "datasets",
        "path": where,
        "files": files,
        "requested_revision": requested if hub_id else None,
        "revision": builder.hash if hub_id else None,  # the Hub commit the files came from
        "fingerprints": {f: sets[k]._fingerprint for k, f in splits.items()},
    }
    tables = []
    for key, f in splits.items():
        ds = sets[key]
        cols = list(ds.column_names)
        lazy_cols = [c for c in lazy if c in cols]
        for c in lazy_cols:
            if isinstance(ds.features[c], datasets.Image):
                ds = ds.cast_column(c, datasets.Image(decode=False))
        rows = ds.remove_columns(lazy_cols).to_list() if lazy_cols else ds.to_list()
        if lazy_cols:
            cells = ds.select_columns(lazy_cols)
            for i, row in enumerate(rows):
                for c in lazy_cols:
                    row[c] = DatasetCell(cells, i, c)
        path = Path(f) if hub_id is None else Path(f"{hub_id}@{builder.hash or requested or 'main'}") / f
        tables.append(Table(path, cols, rows))
    return tables


def find_files(root: Path, patterns: Sequence[str], layout: str) -> list[Path]:
    """`root` itself when it is a file, else every match of the first pattern that matches under `root`."""
    if root.is_file():
        return [root]
    for pat in patterns:
        hits = sorted(p for p in root.glob(pat) if p.is_file())
        if hits:
            return hits
    raise UserError(f"{root}: no {' or '.join(patterns)} found (expected the {layout} layout)")


# ---------------------------------------------------------------- tables


@dataclass
class Table:
    """Rows of one published file; `columns` are the names the file declares."""

    path: Path
    columns: list[str]
    rows: list[Row] = field(default_factory=list)

    def require(self, names: Iterable[str], layout: str) -> None:
        for n in names:
            if n not in self.columns:
                have = ", ".join(self.columns[:12])
                raise UserError(f"{self.path}: missing column '{n}' (expected the {layout} layout; found: {have})")

    def first(self, names: Sequence[str], layout: str) -> str:
        """The first of `names` that is a column (for layouts that renamed a column across releases)."""
        for n in names:
            if n in self.columns:
                return n
        raise UserError(f"{self.path}: missing column '{names[0]}' (or {', '.join(repr(n) for n in names[1:])}; "
                        f"expected the {layout} layout)")


def read_table(path: Path, lazy: Sequence[str] = ()) -> Table:
    """Read a .tsv/.csv/.parquet/.jsonl/.json file. Parquet columns named in `lazy` are not read now:
    each cell becomes a ParquetCell that reads it on first use (large image columns)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".tsv", ".csv"):
            return _read_delimited(path, "\t" if suffix == ".tsv" else ",")
        if suffix == ".parquet":
            return _read_parquet(path, lazy)
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            return _read_json(path)
    except UserError:
        raise
    except (OSError, ValueError, csv.Error) as e:
        raise UserError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    raise UserError(f"{path}: unsupported file type {suffix!r} (want .tsv, .csv, .parquet, .jsonl or .json)")


def _read_delimited(path: Path, delimiter: str) -> Table:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images are long fields
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        cols = list(reader.fieldnames or [])
        return Table(path, cols, list(reader))


def _read_parquet(path: Path, lazy: Sequence[str]) -> Table:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    cols = list(pf.schema_arrow.names)
    lazy_cols = [c for c in lazy if c in cols]
    eager = [c for c in cols if c not in lazy_cols]
    rows: list[Row] = []
    for rg in range(pf.num_row_groups):
        for off, row in enumerate(pf.read_row_group(rg, columns=eager).to_pylist()):
            for c in lazy_cols:
                row[c] = ParquetCell(str(path), rg, off, c)
            rows.append(row)
    return Table(path, cols, rows)


def _read_jsonl(path: Path) -> Table:
    rows: list[Row] = []
    for ln, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{ln}: each line must be a JSON object")
        rows.append(row)
    return Table(path, list(rows[0]) if rows else [], rows)


def _read_json(path: Path) -> Table:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one object per line under a .json name (e.g. POPE)
            return _read_jsonl(path)
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: expected a JSON list of objects")
    return Table(path, list(data[0]) if data else [], data)


def require_fields(row: Row, names: Iterable[str], where: str, layout: str) -> None:
    """Per-row check for JSON/JSONL layouts, whose rows may differ."""
    for n in names:
        if n not in row:
            raise UserError(f"{where}: missing field '{n}' (expected the {layout} layout)")


def is_missing(v: Any) -> bool:
    """Empty cells: None, NaN, '' (and 'nan'/'none'/'null' as pandas writes them)."""
    if v is None:
        return True
    if isinstance(v, float):
        return v != v
    return isinstance(v, str) and v.strip().lower() in _MISSING


# ---------------------------------------------------------------- options and answers

_LINE_OPTION = re.compile(r"^\s*\(?([A-J])[\).:]\s*(.*)$")
_PREFIX = re.compile(r"^\s*(?:\([A-J]\)|[A-J][\.\):])\s*")  # "(A) ", "A. ", "A) ", "A: " (not the article "A ")


def letter_columns(row: Row, max_options: int = len(LETTERS)) -> list[str]:
    """Option texts from columns A, B, C, ... (VLMEvalKit TSV layout), stopping at the first empty one."""
    out: list[str] = []
    for letter in LETTERS[:max_options]:
        v = row.get(letter)
        if is_missing(v):
            break
        out.append(str(v).strip())
    return out


def lettered_lines(text: str) -> list[str]:
    """Options from 'A. text' / '(A) text' / 'A: text' lines, in letter order A, B, ... (gaps end the list)."""
    found: dict[str, str] = {}
    for line in str(text).splitlines():
        m = _LINE_OPTION.match(line)
        if m and m.group(1) not in found:
            found[m.group(1)] = m.group(2).strip()
    out = []
    for letter in LETTERS:
        if letter not in found:
            break
        out.append(found[letter])
    return out


def split_sequential(text: str, first: str, then: str | None = None) -> tuple[str, list[str]]:
    """Split 'stem (A) x (B) y' into ('stem', ['x', 'y']) by finding the tags for A, B, ... in order
    (`first`/`then` are format strings for the first and later tags, e.g. '({})' or 'A: ' / ', {}: ').
    Fewer than two tags found: (text, [])."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, letter in enumerate(LETTERS):
        tag = (first if i == 0 else (then or first)).format(letter)
        k = text.find(tag, pos)
        if k < 0:
            break
        spans.append((k, k + len(tag)))
        pos = k + len(tag)
    if len(spans) < 2:
        return text.strip(), []
    ends = [s for s, _ in spans[1:]] + [len(text)]
    return text[: spans[0][0]].strip(), [text[e:end].strip() for (_, e), end in zip(spans, ends, strict=True)]


def strip_letter(option: str) -> str:
    """'(A) red' / 'A. red' / 'A: red' -> 'red' (an option list whose texts carry their own letters)."""
    s = str(option).strip()
    m = _PREFIX.match(s)
    return s[m.end():].strip() if m else s


def answer_letter(v: Any, n_options: int, where: str) -> str:
    """A gold answer written as 'B', '(B)' or 'B.' -> 'B'; UserError when it is not a valid letter."""
    s = str(v).strip().strip("().:").strip().upper()
    if len(s) != 1 or s not in LETTERS[: max(n_options, 1)]:
        raise UserError(f"{where}: answer {str(v)[:40]!r} is not an option letter A-{LETTERS[max(n_options, 1) - 1]}")
    return s


def parse_literal(text: Any) -> Any:
    """A JSON or Python literal (never `eval`): for list-valued cells stored as strings."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text.strip())


def parse_list(value: Any, where: str, column: str, min_len: int = 2) -> list[str]:
    """A list-valued cell (a list, or its JSON/Python text) of at least `min_len` strings."""
    try:
        raw = parse_literal(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raw = None
    if not isinstance(raw, (list, tuple)) or len(raw) < min_len:
        raise UserError(f"{where}: column '{column}' must be a list of at least {min_len} options, got {str(value)[:80]!r}")
    return [str(v) for v in raw]


# ---------------------------------------------------------------- boxes


def parse_boxes(value: Any, where: str, column: str, fmt: str = "xyxy") -> list[Box]:
    """A list of boxes (or one box) from a cell, as [x1, y1, x2, y2] pixels; `fmt` 'xywh' converts.
    Empty cells mean no box; anything else that is not numbers in fours is a UserError."""
    if is_missing(value) or (isinstance(value, list) and not value):
        return []
    try:
        raw = parse_literal(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UserError(f"{where}: column '{column}' does not parse as a list of boxes: {str(value)[:80]!r}") from None
    if isinstance(raw, (list, tuple)) and len(raw) == 4 and all(_is_num(v) for v in raw):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(
        isinstance(b, (list, tuple)) and len(b) == 4 and all(_is_num(v) for v in b) for b in raw
    ):
        raise UserError(f"{where}: column '{column}' must be a list of [x1, y1, x2, y2] boxes, got {str(value)[:80]!r}")
    boxes = [[float(v) for v in b] for b in raw]
    if fmt == "xywh":
        boxes = [[x, y, x + w, y + h] for x, y, w, h in boxes]
    return boxes


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------- lazy images


@dataclass(frozen=True)
class Base64Image:
    """A base64-encoded image kept as text until it is needed (decoded bytes on call)."""

    text: str

    def __call__(self) -> bytes:
        return base64.b64decode(self.text)

    def __repr__(self) -> str:
        return f"Base64Image({len(self.text)} chars)"


@dataclass(frozen=True)
class ParquetCell:
    """One image cell of a parquet file, read on call (one row group's column cached at a time)."""

    path: str
    row_group: int
    offset: int
    column: str

    def __call__(self) -> Any:
        return image_source(_row_group_column(self.path, self.row_group, self.column)[self.offset].as_py())


@dataclass(frozen=True, eq=False)
class DatasetCell:
    """One image cell of a `datasets` table, read on call (Arrow memory-maps the cached files)."""

    dataset: Any
    row: int
    column: str

    def __call__(self) -> Any:
        return image_source(self.dataset[self.row][self.column])

    def __repr__(self) -> str:
        return f"DatasetCell(row {self.row}, {self.column!r})"


@lru_cache(maxsize=2)
def _row_group_column(path: str, row_group: int, column: str) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(row_group, columns=[column]).column(0)


def image_source(v: Any, root: Path | None = None) -> Any:
    """A cell as something `Item.load_image` decodes lazily: base64 text becomes a Base64Image, a
    relative path is resolved against `root`, bytes and {'bytes', 'path'} structs pass through."""
    if isinstance(v, str):
        s = v.strip()
        if len(s) < 1024 and Path(s).suffix:  # base64 text never contains '.'
            return str(root / s) if root is not None else s
        return Base64Image(s)
    if isinstance(v, dict) and v.get("bytes") is None and v.get("path") and root is not None:
        return str(root / v["path"])
    return v


def check_unique(ids: Iterable[str], where: Path | str) -> None:
    """Item ids key resumed runs and user box files: a duplicate is a UserError."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise UserError(f"{where}: duplicate item id {i!r}")
        seen.add(i)


def resolve_image_refs(rows: list[Row], image: str = "image", index: str = "index") -> None:
    """VLMEvalKit TSVs store a repeated image once: other rows hold that row's `index` instead of the
    base64 text. Replace such references by the text (in place)."""
    by_index = {str(r.get(index)): r.get(image) for r in rows if isinstance(r.get(image), str) and len(r[image]) > 64}
    for r in rows:
        v = r.get(image)
        if isinstance(v, str) and len(v) <= 64 and v.strip() in by_index:
            r[image] = by_index[v.strip()]
