"""The Vision-OPD-6K loader on fixtures written in the released layouts (train.jsonl + images/ +
teacher_images/, and the verl train.parquet of the released converter), and the trainer taking the
teacher image as given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vopd_bench.errors import UserError
from vopd_bench.loaders.visionopd import HINT
from vopd_bench.tasks import get_task

PROBLEMS = [
    f"<image>What is the colour of the umbrella?\n\n{HINT}",
    "<image>How many birds are on the wire?",
    f"<image>What does the sign say? {HINT}",
]


def _released(root: Path) -> Path:
    (root / "images" / "sa").mkdir(parents=True)
    (root / "teacher_images").mkdir()
    rows = []
    for k, problem in enumerate(PROBLEMS):
        rng = np.random.default_rng(k)  # textured, so each image has its own perceptual hash
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(root / "images" / "sa" / f"sa_{k}.png")
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "teacher_images" / f"sa_{k}_bbox.png")
        rows.append({"problem": problem, "images": [f"images/sa/sa_{k}.png"],
                     "teacher_images": [f"teacher_images/sa_{k}_bbox.png"], "answer": ["red", "3", "STOP"][k],
                     "extra_info": {"source": "zwz", "k": k}})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_released_jsonl_layout(tmp_path: Path) -> None:
    root = _released(tmp_path / "Vision-OPD-6K")
    spec = get_task("vision_opd_6k")
    items = spec.load_items(root)
    assert [it.question for it in items] == ["What is the colour of the umbrella?", "How many birds are on the wire?",
                                             "What does the sign say?"]
    assert [it.answer for it in items] == ["red", "3", "STOP"]
    assert items[0].crop_image == str(root / "teacher_images" / "sa_0_bbox.png") and not items[0].boxes
    assert items[2].meta["provenance"]["extra_info"] == {"source": "zwz", "k": 2}
    spec.options["hint"] = "keep"
    kept = spec.load_items(root)
    assert kept[0].question == f"What is the colour of the umbrella?\n\n{HINT}"
    spec.options["hint"] = "drop"
    with pytest.raises(UserError, match="option 'hint' must be one of strip, keep"):
        spec.load_items(root)


def test_verl_parquet_with_paths_of_another_machine(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    root = _released(tmp_path / "data")
    rows = [json.loads(x) for x in (root / "train.jsonl").read_text().splitlines()]
    old = "/mnt/somewhere/Vision-OPD/data"  # the converter writes absolute paths of the machine it ran on
    records = [{
        "data_source": "zwz_rl_vqa_bbox_teacher",
        "prompt": [{"role": "user", "content": r["problem"]}],
        "images": [{"path": f"{old}/{r['images'][0]}"}],
        "bbox_images": [{"path": f"{old}/{r['teacher_images'][0]}"}],
        "ability": "visual_question_answering",
        "reward_model": {"style": "none", "ground_truth": r["answer"]},
        "extra_info": {"answer": r["answer"], "question": "x", "source_extra_info": r["extra_info"]},
    } for r in rows]
    pd.DataFrame(records).to_parquet(root / "train.parquet")
    items = get_task("vision_opd_6k").load_items(root / "train.parquet")
    assert [it.question for it in items][0] == "What is the colour of the umbrella?"
    assert items[1].answer == "3" and items[1].image == str(root / "images" / "sa" / "sa_1.png")
    assert items[1].crop_image == str(root / "teacher_images" / "sa_1_bbox.png")
    (root / "teacher_images" / "sa_2_bbox.png").unlink()
    with pytest.raises(UserError, match=r"row 2: bbox_images image .*sa_2_bbox.png not found"):
        get_task("vision_opd_6k").load_items(root / "train.parquet")


def test_bad_layout_is_one_line(tmp_path: Path) -> None:
    root = _released(tmp_path / "d")
    (root / "teacher_images" / "sa_1_bbox.png").unlink()
    with pytest.raises(UserError, match=r"train.jsonl:2: teacher_images image teacher_images/sa_1_bbox.png not found"):
        get_task("vision_opd_6k").load_items(root)
    with pytest.raises(UserError, match="no train.jsonl or train.parquet"):
        get_task("vision_opd_6k").load_items(tmp_path)
    with pytest.raises(UserError, match="pass the downloaded, extracted folder"):
        get_task("vision_opd_6k").load_items(None)


def test_trainer_takes_the_teacher_image_as_given(tmp_path: Path) -> None:
    from vopd_bench.train.config import OPDConfig
    from vopd_bench.train.data import load_prompts, prompts_provenance, render_prompt

    root = _released(tmp_path / "d")
    cfg = OPDConfig(train_task="vision_opd_6k", train_data=str(root), system_prompt="Look closely.")
    spec, items = load_prompts(cfg)
    p = render_prompt(items[1], spec)
    teacher = Image.open(root / "teacher_images" / "sa_1_bbox.png").convert("RGB")
    assert p.crop.size == (64, 48) and np.array_equal(np.asarray(p.crop), np.asarray(teacher))
    assert p.full.size == (120, 90) and p.text == "How many birds are on the wire?" and p.system == "Look closely."
    # an item with both boxes and a teacher image: the teacher image wins
    from dataclasses import replace

    both = replace(items[1], boxes=[[0.0, 0.0, 10.0, 10.0]])
    assert render_prompt(both, spec).crop.size == (64, 48)
    prov = prompts_provenance(items)
    assert prov["n_prompts"] == 3 and prov["sources"] == {"Vision-OPD-6K": 3}
    assert prov["overlap_checked"] == 0 and prov["overlap_checked_all"] is False
