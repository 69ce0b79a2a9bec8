"""Writers of each benchmark's published file layout, in miniature, for the loader tests.

Every image is a grey 320x240 scene with one target square (TARGET colour) at a known box and one
distractor square (DISTRACTOR colour) far from it, so a test can tell which region a view shows.
Each writer returns the folder to pass as --data (plus what the test needs to check)."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

W, H = 320, 240
TARGET = (230, 40, 40)
DISTRACTOR = (40, 60, 230)
DISTRACTOR_BOX = [20, 180, 44, 204]


def target_box(i: int) -> list[int]:
    """The xyxy pixel box of item i's target (top right quadrant, moving with i)."""
    x, y = 200 + 8 * (i % 4), 30 + 6 * (i % 5)
    return [x, y, x + 28, y + 24]


def scene(i: int, boxes: list[list[int]] | None = None) -> Image.Image:
    arr = np.full((H, W, 3), 128, np.uint8)
    for x1, y1, x2, y2 in boxes or [target_box(i)]:
        arr[y1:y2, x1:x2] = TARGET
    x1, y1, x2, y2 = DISTRACTOR_BOX
    arr[y1:y2, x1:x2] = DISTRACTOR
    return Image.fromarray(arr)


def encode(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def b64(im: Image.Image) -> str:
    return base64.b64encode(encode(im)).decode()


def write_tsv(path: Path, rows: list[dict]) -> Path:
    """A VLMEvalKit-style TSV (tab separated, minimal quoting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=3)
    return path


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def image_cell(im: Image.Image, name: str) -> dict:
    return {"bytes": encode(im), "path": name}


# ------------------------------------------------------------------ V*


VSTAR_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def vstar(root: Path, with_label: bool = True) -> Path:
    """4 direct_attributes (one box; the last has an empty bbox list) + 2 relative_position (two
    boxes). Item i's gold letter is VSTAR_GOLD[i]; as in V*, each image JSON lists the correct option
    first. Without `with_label` the rows have no 'label' (older releases)."""
    lines = []
    for i in range(6):
        cat = "direct_attributes" if i < 4 else "relative_position"
        stem = f"sa_{100 + i}"
        (root / cat).mkdir(parents=True, exist_ok=True)
        boxes = [target_box(i)] if i < 4 else [target_box(i), [60, 40, 90, 70]]
        scene(i, boxes).save(root / cat / f"{stem}.jpg", quality=95)
        xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes]
        if i == 3:
            xywh = []
        opts = ["red", "blue", "green", "white"] if i < 4 else ["left", "right"]
        gold = "ABCD".index(VSTAR_GOLD[i])
        (root / cat / f"{stem}.json").write_text(json.dumps(
            {"target_object": ["cup"] if i < 4 else ["cup", "plate"], "bbox": xywh, "question": "q",
             "options": [opts[gold]] + [o for k, o in enumerate(opts) if k != gold]}))
        letters = "ABCD"[: len(opts)]
        text = "What is the colour of the cup?\n" if i < 4 else "Is the cup on the left or right side of the plate?\n"
        text += "\n".join(f"({c}) {o}" for c, o in zip(letters, opts, strict=True)) + "\n" + VSTAR_INSTRUCTION
        row = {"question_id": i, "image": f"{cat}/{stem}.jpg", "text": text, "category": cat}
        if with_label:
            row["label"] = VSTAR_GOLD[i]
        lines.append(row)
    (root / "test_questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root


VSTAR_GOLD = ["A", "C", "D", "B", "B", "A"]


# ------------------------------------------------------------------ TreeBench


def treebench(root: Path, bad_boxes: str | None = None, bad_image: bool = False, outside: bool = False,
              letter_columns: bool = True) -> Path:
    """TreeBench.tsv: 6 rows, row 1 has five options (answer E); `bad_boxes` replaces row 0's
    target_instances, `bad_image` row 2's image, `outside` makes row 0's box leave the image, and
    without `letter_columns` the options are only in the 'multi-choice options' text."""
    rows = []
    for i in range(6):
        box = target_box(i)
        if outside and i == 0:
            box = [300, 220, 360, 300]
        five = i == 1
        opts = ["a cup", "a bowl", "a plate", "a vase"] + (["a jar"] if five else [])
        row = {"index": 1000 + i, "image": b64(scene(i, [box])),
               "question": "What is the red object?", "answer": "E" if five else "ABCD"[i % 4],
               "category": "Perception/Attributes" if i % 2 else "Reasoning/Ordering", "l2-category": "",
               "target_instances": json.dumps([box]),
               "multi-choice options": "\n".join(f"{c}. {o}" for c, o in zip("ABCDE", opts, strict=False))}
        if letter_columns:
            row.update({c: (opts[k] if k < len(opts) else "") for k, c in enumerate("ABCDE")})
        rows.append(row)
    if bad_boxes is not None:
        rows[0]["target_instances"] = bad_boxes
    if bad_image:
        rows[2]["image"] = base64.b64encode(b"definitely not an image" * 50).decode()
    write_tsv(root / "TreeBench.tsv", rows)
    return root


# ------------------------------------------------------------------ Visual-CoT


def viscot(root: Path, subset: str = "textvqa") -> Path:
    """viscot_benchmark/{benchmark_det,benchmark}/<subset> + images cot/<subset>/ under `root`."""
    bench = root / "viscot_benchmark"
    (bench / "benchmark_det").mkdir(parents=True, exist_ok=True)
    (bench / "benchmark").mkdir(parents=True, exist_ok=True)
    (root / "cot" / subset).mkdir(parents=True, exist_ok=True)
    det, qa = [], []
    for i in range(5):
        name = f"cot/{subset}/{i:04x}abc.jpg"
        scene(i).save(root / name, quality=95)
        x1, y1, x2, y2 = target_box(i)
        box = [x1 + 0.25, y1 + 0.5, x2 - 0.25, y2 + 0.0]  # float pixels, as textvqa ships them
        det.append({"img_path": name, "expression": f"what is written on sign {i}?", "bbox": box,
                    "height": H, "width": W, "question_id": i, "split": "val"})
        qa.append({"dataset": subset, "split": "val", "question_id": i, "image": [name, f"{name}###{box}"],
                   "conversations": [
                       {"from": "human", "value": f"<image>\nwhat is written on sign {i}? Please provide the bounding box coordinate of the region that can help you answer the question better."},
                       {"from": "gpt", "value": "[0.1, 0.2, 0.3, 0.4]"},
                       {"from": "human", "value": "<image>"},
                       {"from": "gpt", "value": f"Stop {i}"}]})
    (bench / "benchmark_det" / f"{subset}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in det))
    (bench / "benchmark" / f"{subset}.json").write_text(json.dumps(qa, indent=1))
    return root


# ------------------------------------------------------------------ ZoomBench


def zoombench(root: Path, names: tuple[str, str] = ("prompt", "answer")) -> Path:
    """data/test.parquet: 4 rows, the last without a crop image; crops are the target region."""
    q, a = names
    rows = []
    for i in range(4):
        im = scene(i)
        crop = im.crop(tuple(target_box(i))).resize((112, 96)) if i < 3 else None
        rows.append({"id": f"zb{i}", "image": image_cell(im, f"{i}.png"),
                     "crop_image": image_cell(crop, f"{i}_crop.png") if crop else None,
                     q: f"<image>How many red squares are there? ({i})", a: "1" if i % 2 else "one",
                     "category": "Fine-Grained Counting"})
    schema = pa.schema([("id", pa.string()), ("image", IMAGE_STRUCT), ("crop_image", IMAGE_STRUCT),
                        (q, pa.string()), (a, pa.string()), ("category", pa.string())])
    write_parquet(root / "data" / "test.parquet", rows, schema)
    return root


# ------------------------------------------------------------------ HR-Bench


HR_ANSWERS = ["A", "B", "C", "D"]


def hrbench(root: Path, n_questions: int = 3, name: str = "hr_bench_4k.tsv") -> Path:
    """n_questions x 4 cycles; in cycle c the correct option sits at letter HR_ANSWERS[(c + q) % 4]."""
    rows = []
    for qi in range(n_questions):
        img = b64(scene(qi))
        base = ["red", "blue", "green", "white"]
        for c in range(4):
            gold = HR_ANSWERS[(c + qi) % 4]
            opts = [o for o in base if o != "red"]
            opts.insert("ABCD".index(gold), "red")
            rows.append({"index": qi * 4 + c, "question": f"What colour is square {qi}?", "answer": gold,
                         "category": "single" if qi % 2 == 0 else "cross", "A": opts[0], "B": opts[1],
                         "C": opts[2], "D": opts[3], "cycle_category": f"cycle{c}", "image": img})
    write_tsv(root / name, rows)
    return root


# ------------------------------------------------------------------ MME-RealWorld


def mme_realworld(root: Path) -> Path:
    """lmms-eval parquet: 5 rows with 5 '(A) ...' options; row 4's answer is E."""
    rows = []
    for i in range(5):
        opts = ["(A) red", "(B) blue", "(C) green", "(D) white", "(E) The image does not feature the object"]
        rows.append({"index": 50 + i, "question": f"What colour is the car {i}?", "multi-choice options": opts,
                     "answer": "ABCDE"[i], "category": "Perception/Monitoring" if i < 3 else "Reasoning/Remote Sensing",
                     "l2-category": "attribute/color", "bytes": b64(scene(i))})
    write_parquet(root / "data" / "train-00000-of-00001.parquet", rows)
    return root


# ------------------------------------------------------------------ holdouts


def mmvp(root: Path) -> Path:
    """Questions.csv + 'MMVP Images/<Index>.jpg' for Index 1, 2, 99, 100 (99/100 have corrected labels)."""
    (root / "MMVP Images").mkdir(parents=True, exist_ok=True)
    with (root / "Questions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Index", "Question", "Options", "Correct Answer"])
        for k, idx in enumerate((1, 2, 99, 100)):
            scene(k).save(root / "MMVP Images" / f"{idx}.jpg", quality=95)
            w.writerow([idx, "Are the elephant's tusks long or short?", "(a) Long tusks (b) Short tusks",
                        "(a)" if idx in (1, 99) else "(b)"])
    return root


def cvbench(root: Path) -> Path:
    rows2d, rows3d = [], []
    for i in range(4):
        rows = rows2d if i < 2 else rows3d
        kind = "2D" if i < 2 else "3D"
        rows.append({"idx": i, "type": kind, "task": "Count" if kind == "2D" else "Depth",
                     "image": image_cell(scene(i), f"img/{kind}/{i}.png"),
                     "question": "How many red squares are in the image?", "choices": ["1", "2", "3", "0"],
                     "answer": "(A)" if i % 2 == 0 else "(B)", "prompt": "ignored",
                     "source": ["ADE20K", "COCO", "Omni3D", "Omni3D"][i]})
    for name, rows in (("test_2d.parquet", rows2d), ("test_3d.parquet", rows3d)):
        schema = pa.schema([("idx", pa.int64()), ("type", pa.string()), ("task", pa.string()), ("image", IMAGE_STRUCT),
                            ("question", pa.string()), ("choices", pa.list_(pa.string())), ("answer", pa.string()),
                            ("prompt", pa.string()), ("source", pa.string())])
        write_parquet(root / name, rows, schema)
    return root


def mmstar(root: Path) -> Path:
    rows = []
    for i in range(4):
        rows.append({"index": i, "question": "Which object is red?\nOptions: A: a cup, B: a car, a bike, C: a dog, D: none",
                     "image": image_cell(scene(i), f"{i}.png"), "answer": "ABCD"[i],
                     "category": "fine-grained perception", "l2_category": "object attribute", "meta_info": "{}"})
    schema = pa.schema([("index", pa.int64()), ("question", pa.string()), ("image", IMAGE_STRUCT),
                        ("answer", pa.string()), ("category", pa.string()), ("l2_category", pa.string()),
                        ("meta_info", pa.string())])
    write_parquet(root / "mmstar.parquet", rows, schema)
    return root


def pope(root: Path) -> Path:
    rows = []
    for i, cat in enumerate(["adversarial", "popular", "random", "random"]):
        rows.append({"id": str(i), "question_id": str(i % 3 + 1), "question": "Is there a red square in the image?",
                     "answer": "yes" if i % 2 == 0 else "no", "image_source": f"COCO_{i}",
                     "image": image_cell(scene(i), f"{i}.jpg"), "category": cat})
    schema = pa.schema([("id", pa.string()), ("question_id", pa.string()), ("question", pa.string()),
                        ("answer", pa.string()), ("image_source", pa.string()), ("image", IMAGE_STRUCT),
                        ("category", pa.string())])
    write_parquet(root / "data" / "test-00000-of-00001.parquet", rows, schema)
    return root


def pope_original(root: Path) -> Path:
    """The original release: coco_pope_<category>.json (one object per line) + val2014/ images."""
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    for cat in ("adversarial", "random"):
        lines = []
        for i in range(2):
            name = f"COCO_val2014_{cat}_{i}.jpg"
            scene(i).save(root / "val2014" / name, quality=95)
            lines.append({"question_id": i + 1, "image": name, "text": "Is there a red square in the image?",
                          "label": "yes" if i == 0 else "no"})
        (root / f"coco_pope_{cat}.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root


WRITERS = {
    "vstar": vstar,
    "treebench": treebench,
    "viscot_textvqa": viscot,
    "viscot_docvqa": lambda root: viscot(root, "docvqa"),
    "viscot_sroie": lambda root: viscot(root, "sroie"),
    "zoombench": zoombench,
    "hrbench4k": hrbench,
    "hrbench8k": lambda root: hrbench(root, name="hr_bench_8k.tsv"),
    "mme_realworld": mme_realworld,
    "mme_realworld_cn": mme_realworld,
    "mme_realworld_lite": mme_realworld,
    "mmvp": mmvp,
    "cvbench": cvbench,
    "mmstar": mmstar,
    "pope": pope,
}
