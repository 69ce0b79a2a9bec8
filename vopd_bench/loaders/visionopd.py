"""Vision-OPD-6K (`yuanqianhao/Vision-OPD-6K`), the paper's released training set, in either layout:

- as released: a folder with `train.jsonl`, whose rows hold `problem` (the question; it may carry
  `<image>` and the sentence "Only focus on the objects inside the red bounding box in the image to
  answer this question."), `images` (a list with the student image's path relative to the folder),
  `teacher_images` (a list with the teacher image's relative path), `answer` and `extra_info`; the
  images under `images/` and `teacher_images/`;
- converted by the released `scripts/prepare_data.py` for verl: `train.parquet` with `prompt` (chat
  messages whose user content is the problem), `images: [{path}]`, `bbox_images: [{path}]` (the teacher
  image), `reward_model.ground_truth` and `extra_info` (its `question` is the cleaned problem).

The teacher image is taken as given (`Item.crop_image`): whether it is a tight crop or the full image
with a drawn box is not documented, and the trainer uses it as the teacher's view instead of computing a
crop. Option `hint`: `strip` (default; as the converter's cleaned `question`) removes `<image>` and the
red-box sentence from the question, `keep` keeps the problem text as released (verl's training prompt
is the unstripped `problem`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.loaders._tabular import check_unique, is_missing, read_table, source

LAYOUT = "Vision-OPD-6K (train.jsonl: problem, images, teacher_images, answer; or the verl train.parquet)"
HINT = "Only focus on the objects inside the red bounding box in the image to answer this question."
HINT_MODES = ("strip", "keep")


def clean_problem(problem: str, hint: str = "strip") -> str:
    """The question text of a problem: `<image>` removed, and with `hint: strip` the red-box sentence (as the
    released converter's `clean_question`)."""
    text = (problem or "").replace("<image>", "").strip()
    if hint == "strip":
        text = text.replace(f"\n\n{HINT}", "").replace(HINT, "")
    return text.strip()


def load(spec: Any, data: Path | None) -> list[Item]:
    hint = spec.options.get("hint", "strip")
    if hint not in HINT_MODES:
        raise UserError(f"task {spec.name}: option 'hint' must be one of {', '.join(HINT_MODES)}, got {hint!r}")
    if data is None:  # the Hub copy ships its images as split tar archives: they must be extracted first
        raise UserError(f"task {spec.name}: pass the downloaded, extracted folder (train.jsonl, images/, "
                        "teacher_images/) or its verl train.parquet: --data DIR / train_data=DIR "
                        f"(huggingface-cli download --repo-type dataset {spec.hub_id}, then untar the images)")
    path = _find(source(spec, data, []))
    items = _from_parquet(spec.name, path, hint) if path.suffix == ".parquet" else _from_jsonl(spec.name, path, hint)
    check_unique((it.id for it in items), path)
    return items


def _find(root: Path) -> Path:
    if root.is_file():
        if root.suffix not in (".jsonl", ".parquet"):
            raise UserError(f"{root}: want train.jsonl or train.parquet ({LAYOUT})")
        return root
    for name in ("train.jsonl", "train.parquet"):
        if (root / name).is_file():
            return root / name
    raise UserError(f"{root}: no train.jsonl or train.parquet (expected the {LAYOUT} layout)")


def _from_jsonl(task: str, path: Path, hint: str) -> list[Item]:
    table = read_table(path)
    table.require(("problem", "images", "teacher_images"), LAYOUT)
    out = []
    for n, row in enumerate(table.rows):
        where = f"{path}:{n + 1}"
        image = _existing(path.parent, _first_path(row.get("images"), "images", where), where, "images")
        teacher = _existing(path.parent, _first_path(row.get("teacher_images"), "teacher_images", where), where,
                            "teacher_images")
        out.append(_item(task, row, n, row.get("problem"), row.get("answer"), image, teacher, hint,
                         row.get("extra_info")))
    return out


def _from_parquet(task: str, path: Path, hint: str) -> list[Item]:
    table = read_table(path)
    table.require(("prompt", "images", "bbox_images"), LAYOUT)
    out = []
    for n, row in enumerate(table.rows):
        where = f"{path} row {n}"
        prompt = row["prompt"]
        users = [m.get("content") for m in (prompt if isinstance(prompt, list) else []) if isinstance(m, dict)
                 and m.get("role") == "user"]
        if not users or not isinstance(users[0], str):
            raise UserError(f"{where}: column 'prompt' must be chat messages with a user turn of text")
        image = _existing(path.parent, _first_path(row["images"], "images", where), where, "images")
        teacher = _existing(path.parent, _first_path(row["bbox_images"], "bbox_images", where), where, "bbox_images")
        rm = row.get("reward_model") if isinstance(row.get("reward_model"), dict) else {}
        extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
        answer = rm.get("ground_truth", extra.get("answer"))
        out.append(_item(task, row, n, users[0], answer, image, teacher, hint, extra.get("source_extra_info", extra)))
    return out


def _item(task: str, row: dict[str, Any], n: int, problem: Any, answer: Any, image: str, teacher: str, hint: str,
          extra: Any) -> Item:
    iid = row.get("id")
    prov = {"source": {"name": "Vision-OPD-6K", "row": n}, "box_source": {"kind": "released teacher image"},
            "image": image, "extra_info": extra if isinstance(extra, dict) else None}
    checked = ((row.get("meta") or {}).get("provenance") or {}).get("overlap")  # `vopd-bench overlap --drop`
    if checked:
        prov["overlap"] = checked
    return Item(
        id=str(iid) if not is_missing(iid) else str(n),
        task=task,
        image=image,
        question=clean_problem(str(problem or ""), hint),
        answer="" if is_missing(answer) else str(answer).strip(),
        crop_image=teacher,
        meta={"provenance": prov},
    )


def _first_path(v: Any, field: str, where: str) -> str:
    """The first image path of a list cell ([path] or [{path}]); numpy arrays from parquet are lists too."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, list) and v:
        first = v[0]
        if isinstance(first, dict):
            first = first.get("path")
        if isinstance(first, str) and first:
            return first
    raise UserError(f"{where}: field '{field}' must be a non-empty list of image paths")


def _existing(root: Path, p: str, where: str, field: str) -> str:
    """An image path as given when it exists, else relative to `root`; the converter writes absolute paths of
    the machine it ran on, so a moved folder is found by the path's trailing parts under `root`."""
    cand = Path(p)
    if not cand.is_absolute():
        cand = root / cand
    if cand.is_file():
        return str(cand)
    parts = Path(p).parts
    for k in range(1, len(parts)):
        alt = root.joinpath(*parts[k:])
        if alt.is_file():
            return str(alt)
    raise UserError(f"{where}: {field} image {p} not found (looked under {root})")
