"""`vopd-bench prompts`: the whole pipeline offline on real photographs (scikit-image's) with a hand-written
COCO file, a JSONL box file with a broken and a missing image, a tiny randomly initialised OWLv2 built
from its config, the region filter on hand-made boxes, the self-consistency filter with the reference
tiny model, resume after an interruption, and 2 training steps on the written prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vopd_bench.cli import main
from vopd_bench.errors import UserError
from vopd_bench.tasks import TaskSpec
from vopd_bench.trainsets.consistency import agreement
from vopd_bench.trainsets.regions import Region, RegionFilter

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "examples" / "skimage_coco.json"


def _cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    skimage = pytest.importorskip("skimage")
    d = tmp_path_factory.mktemp("photos")
    for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"):
        shutil.copyfile(Path(skimage.__file__).parent / "data" / name, d / name)
    return d


# ----------------------------------------------------------------------------- region filter, questions
def test_region_filter_on_hand_made_boxes() -> None:
    regs = [
        Region([0, 0, 50, 50], "a"),           # 2500 / 40000 = 0.0625: kept
        Region([0, 0, 100, 100], "b"),         # 0.25: too large
        Region([10, 10, 14, 60], "c"),         # side 4 < 8
        Region([150, 150, 260, 260], "d"),     # clipped to 50 x 50: kept
        Region([300, 300, 400, 400], "e"),     # outside the 200 x 200 image
        Region([60, 60, 62, 62], "f"),         # 4 / 40000 = 0.0001 < min ratio
        Region([20, 100, 60, 140], "g"),       # kept
    ]
    kept, dropped = RegionFilter(min_area_ratio=0.001, max_area_ratio=0.1, min_side=8, max_regions=2).apply(
        regs, 200, 200)
    assert [r.label for r in kept] == ["a", "d"]
    assert kept[1].box == [150.0, 150.0, 200.0, 200.0]
    assert dropped == {"area ratio above max": 1, "side below min_side": 1, "outside the image": 1,
                       "area ratio below min": 1, "over max_regions": 1}
    scored = [Region([0, 0, 20, 20], "x", 0.3), Region([0, 0, 20, 20], "y", 0.9), Region([0, 0, 20, 20], "z", 0.05)]
    kept, dropped = RegionFilter(min_score=0.1, max_regions=0).apply(scored, 200, 200)
    assert [r.label for r in kept] == ["y", "x"] and dropped == {"score below min_score": 1}
    with pytest.raises(UserError, match="min_area_ratio <= max_area_ratio"):
        RegionFilter(min_area_ratio=0.5, max_area_ratio=0.1)


def test_agreement_counts_the_majority_share() -> None:
    a = agreement(["Answer: B", "B", "the answer is B.", "A"], ["red", "blue"])
    assert (a.share, a.majority, a.answers) == (0.75, "B", ["B", "B", "B", "A"])
    b = agreement(["Red.", "red", "a red", "", "blue"], None)
    assert (b.share, b.majority) == (0.6, "red")
    assert agreement(["", "??"], None).share == 0.0


# ----------------------------------------------------------------------------- annotation file on real photos
def test_coco_file_on_real_photos_makes_trainer_prompts(photos: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p" / "prompts.jsonl"
    code, stdout, err = _cli(["prompts", str(photos), "--boxes", str(COCO), "--out", str(out)], capsys)
    assert code == 0, err
    rows = _rows(out)
    by_q = {(r["id"].split("#")[0], r["question"]): r for r in rows}
    labels = {r["meta"]["provenance"]["region"]["label"] for r in rows}
    # the large boxes (space shuttle 0.115, helmet, flag, cup, tower) fail max_area_ratio 0.1
    assert labels == {"patch", "name tag", "face", "spoon", "handle", "eye", "nose", "rocket", "light"}
    assert by_q[("chelsea.png", "How many eyes are there in the image?")]["answer"] == "2"
    assert len(by_q[("chelsea.png", "How many eyes are there in the image?")]["boxes"]) == 2
    assert ("chelsea.png", "What colour is the eye?") not in by_q  # two eyes: "the eye" names none
    pos = by_q[("astronaut.png", "Is the patch to the left or to the right of the face?")]
    assert (pos["options"], pos["answer"]) == (["left", "right"], "A")  # patch centre x 173 < face 225
    prov = pos["meta"]["provenance"]
    assert prov["box_source"]["kind"] == "annotations" and prov["region"]["annotation_id"] == 1
    assert prov["filters"]["region"]["max_area_ratio"] == 0.1
    summary = json.loads((tmp_path / "p" / "prompts.summary.json").read_text())
    assert summary["n_prompts"] == len(rows) and summary["regions_dropped"]["area ratio above max"] == 5
    # the trainer reads the file as written (train_task=null train_data=OUT), images included
    from vopd_bench.train.data import render_prompt, train_spec_for_file

    spec = train_spec_for_file(str(out))
    items = spec.load_items(out)
    assert [it.id for it in items] == [r["id"] for r in rows]
    p = render_prompt(items[0], spec)
    assert p.full.size == (512, 512) and p.crop.size != p.full.size
    assert "Answer the question using a single word or phrase." in p.text  # open question: open instruction
    # re-running with the same settings does nothing; other settings need --overwrite
    code, stdout, _ = _cli(["prompts", str(photos), "--boxes", str(COCO), "--out", str(out)], capsys)
    assert code == 0 and _rows(out) == rows
    code, _, err = _cli(["prompts", str(photos), "--boxes", str(COCO), "--out", str(out), "--min-side", "20"], capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON (line 1"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [1, 2]}]}',
     "annotations[0]: 'bbox' must be [x, y, width, height]"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 7, "bbox": [1, 2, 3, 4]}]}',
     "annotations[0]: image_id 7 is not in 'images'"),
    ('[1, 2]', "not a COCO/LVIS annotation file"),
])
def test_bad_annotation_file_is_one_line(tmp_path: Path, content: str, message: str,
                                         capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "imgs").mkdir()
    bad = tmp_path / "ann.json"
    bad.write_text(content)
    out = tmp_path / "o.jsonl"
    code, _, err = _cli(["prompts", str(tmp_path / "imgs"), "--boxes", str(bad), "--out", str(out)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


# ----------------------------------------------------------------------------- JSONL boxes, skips, resume
def _scene(path: Path, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> None:
    im = Image.new("RGB", (200, 160), (128, 128, 128))
    im.paste(colour, box)
    im.save(path)


@pytest.fixture
def boxed_folder(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "imgs"
    d.mkdir()
    rows = []
    for k in range(4):
        _scene(d / f"s{k}.png", (200, 30 * k, 40), (20 + 30 * k, 30, 60 + 30 * k, 70))
        rows.append({"image": f"s{k}.png", "boxes": [[20 + 30 * k, 30, 60 + 30 * k, 70]], "labels": ["square"]})
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows.insert(2, {"image": "broken.png", "box": [0, 0, 30, 30], "label": "square"})
    rows.append({"image": "missing.png", "box": [0, 0, 30, 30], "label": "square"})
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d, boxes


def test_jsonl_boxes_record_bad_images_as_skips(boxed_folder: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    d, boxes = boxed_folder
    out = tmp_path / "o.jsonl"
    code, stdout, err = _cli(["prompts", str(d), "--boxes", str(boxes), "--out", str(out), "--templates", "attribute",
                              "--question", "Is there a {label} in the image?"], capsys)
    assert code == 0, err
    rows = _rows(out)
    assert sorted({r["meta"]["provenance"]["image"] for r in rows}) == ["s0.png", "s1.png", "s2.png", "s3.png"]
    assert {r["question"] for r in rows} == {"What colour is the square?", "Is there a square in the image?"}
    skips = {s["image"]: s["reason"] for s in _rows(tmp_path / "o.skipped.jsonl")}
    assert skips == {"broken.png": "cannot decode", "missing.png": "file not found"}
    assert "2 skip record(s)" in stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "s0.png", "boxes": [[1, 2, 3]]}\n')
    code, _, err = _cli(["prompts", str(d), "--boxes", str(bad), "--out", str(tmp_path / "x.jsonl")], capsys)
    assert code == 2 and f"{bad}:1: field 'boxes'" in err and len(err.strip().splitlines()) == 1


def test_interrupted_run_resumes_without_losing_or_repeating(boxed_folder: tuple[Path, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from vopd_bench.trainsets import pipeline
    from vopd_bench.trainsets.sources import open_boxes

    d, boxes = boxed_folder

    def cfg(out: Path) -> pipeline.PromptsConfig:
        return pipeline.PromptsConfig(images_dir=d, out=out, source=open_boxes(boxes), templates=["attribute"])

    fresh = pipeline.run(cfg(tmp_path / "fresh.jsonl"))
    real = pipeline._one_image
    calls = []

    def dies_on_third(c, name, *a):
        calls.append(name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(c, name, *a)

    monkeypatch.setattr(pipeline, "_one_image", dies_on_third)
    out = tmp_path / "o.jsonl"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg(out))
    partial = tmp_path / "o.jsonl.partial"
    # sorted: broken.png and missing.png (skips), s0.png (a prompt), then the interruption
    assert not out.exists() and len(_rows(partial)) == 1  # what was written is kept
    assert len(_rows(tmp_path / "o.skipped.jsonl")) == 2
    monkeypatch.setattr(pipeline, "_one_image", real)
    summary = pipeline.run(cfg(out))
    assert not partial.exists()
    assert [r["id"] for r in _rows(out)] == [r["id"] for r in _rows(tmp_path / "fresh.jsonl")]
    assert summary["n_prompts"] == fresh["n_prompts"] == 4


# ----------------------------------------------------------------------------- detector
@pytest.fixture(scope="module")
def tiny_owlv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised OWLv2 (1 layer, hidden 32, 64 px input) with a byte-level CLIP tokenizer."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    vocab: dict[str, int] = {}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    small = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    cfg = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=16, bos_token_id=len(vocab) - 2,
                         eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1, **small),
        vision_config=dict(image_size=64, patch_size=16, **small), projection_dim=32)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("owlv2")
    Owlv2ForObjectDetection(cfg).save_pretrained(d)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok).save_pretrained(d)
    return d


def test_tiny_detector_runs_the_detector_path(tiny_owlv2: Path, boxed_folder: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    d, _ = boxed_folder
    out = tmp_path / "det.jsonl"
    code, stdout, err = _cli(["prompts", str(d), "--detector", str(tiny_owlv2), "--objects", "square, circle",
                              "--detector-threshold", "0.0", "--max-area-ratio", "1.0", "--min-side", "1",
                              "--templates", "attribute", "--question", "Is the {label} dark?", "--out", str(out)],
                             capsys)
    assert code == 0, err
    rows, skips = _rows(out), _rows(tmp_path / "det.skipped.jsonl")
    done = {r["meta"]["provenance"]["image"] for r in rows} | {s["image"] for s in skips}
    assert done == {"s0.png", "s1.png", "s2.png", "s3.png", "broken.png"}  # every image: prompts or a skip
    assert any(s["image"] == "broken.png" and s["reason"] == "cannot decode" for s in skips)
    assert rows, "the random detector found nothing at threshold 0"
    for r in rows:
        prov = r["meta"]["provenance"]
        assert prov["box_source"]["kind"] == "detector" and prov["box_source"]["model_type"] == "owlv2"
        assert prov["region"]["label"] in ("square", "circle") and prov["region"]["score"] is not None
        x1, y1, x2, y2 = r["boxes"][0]
        assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 160  # clipped to the image


@pytest.mark.parametrize("args, message", [
    (["--detector", "/nonexistent/owl", "--objects", "cat"], "--detector /nonexistent/owl: not a detector checkpoint"),
    (["--detector", "./owl"], "--detector needs --objects"),
    ([], "give exactly one box source"),
])
def test_detector_errors_are_one_line(tmp_path: Path, args: list[str], message: str,
                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o.jsonl"
    code, _, err = _cli(["prompts", str(tmp_path), "--out", str(out), *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ----------------------------------------------------------------------------- self-consistency, training
def test_consistency_filter_with_the_tiny_model(tiny_model: str, synth_small: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    items = [json.loads(x) for x in (synth_small / "items.jsonl").read_text().splitlines()[:4]]
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text("".join(json.dumps({"image": it["image"], "boxes": it["boxes"], "labels": ["object"]}) + "\n"
                             for it in items))
    out = tmp_path / "c.jsonl"
    question = "What colour is the {label}?\nA. red\nB. green\nC. blue\nD. yellow"
    code, _, err = _cli(["prompts", str(synth_small), "--boxes", str(boxes), "--out", str(out), "--templates", "",
                         "--question", question, "--max-area-ratio", "1", "--consistency-model", tiny_model,
                         "--consistency-n", "4", "--consistency-threshold", "1.0", "--consistency-temperature", "1.5",
                         "--consistency-max-new-tokens", "6"], capsys)
    assert code == 0, err
    kept = _rows(out)
    rejected = [s for s in _rows(tmp_path / "c.skipped.jsonl") if s["kind"] == "prompt"]
    assert kept and rejected and len(kept) + len(rejected) == 4  # hot sampling: some prompts disagree
    for r in kept:
        c = r["meta"]["provenance"]["filters"]["consistency"]
        assert c["n"] == 4 and len(c["answers"]) == 4 and c["share"] == 1.0 and c["model"] == tiny_model
        assert c["answers"].count(c["majority"]) / 4 == c["share"] and r["answer"] == c["majority"]
    for s in rejected:
        assert s["consistency"]["share"] < 1.0 and s["consistency"]["answers"].count(s["consistency"]["majority"]) < 4
    code, _, err = _cli(["prompts", str(synth_small), "--boxes", str(boxes), "--out", str(tmp_path / "m.jsonl"),
                         "--consistency-model", str(tmp_path / "no-model")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "m.jsonl").exists()


@pytest.mark.slow
def test_train_two_steps_on_written_prompts(tiny_model: str, synth_small: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    items = [json.loads(x) for x in (synth_small / "items.jsonl").read_text().splitlines()[:4]]
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text("".join(json.dumps({"image": it["image"], "boxes": it["boxes"], "labels": ["target"]}) + "\n"
                             for it in items))
    out = tmp_path / "prompts.jsonl"
    code, _, err = _cli(["prompts", str(synth_small), "--boxes", str(boxes), "--out", str(out),
                         "--templates", "attribute", "--max-area-ratio", "1"], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    settings = {"model": tiny_model, "train_task": None, "train_data": str(out), "eval_tasks": ["synth"],
                "holdout_tasks": [], "eval_data": {"synth": str(synth_small)}, "eval_limit": 2,
                "eval_max_new_tokens": 4, "steps": 2, "eval_every": 2, "prompts_per_step": 2,
                "rollouts_per_prompt": 2, "max_new_tokens": 6, "micro_batch_size": 2, "lr": 1e-3, "warmup_steps": 0,
                "top_k": 20, "threads": 1, "progress": False, "system_prompt": "You look closely."}
    code, _, err = _cli(["train", "--out", str(run), *[f"{k}={json.dumps(v)}" for k, v in settings.items()]], capsys)
    assert code == 0, err
    curve = [json.loads(x) for x in (run / "curve.jsonl").read_text().splitlines() if x.strip()]
    assert [c["step"] for c in curve] == [0, 2]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train_task"]["n_prompts"] == 4 and cfg["config"]["system_prompt"] == "You look closely."


def test_spec_of_prompt_file_is_generic() -> None:
    from vopd_bench.train.data import USER_JSONL, train_spec_for_file

    spec = train_spec_for_file("x.jsonl")
    assert isinstance(spec, TaskSpec) and spec.name == USER_JSONL and spec.loader == "jsonl"


@pytest.mark.slow
def test_tiny_grounding_dino_runs_the_detector_path(tmp_path: Path, boxed_folder: tuple[Path, Path],
                                                    capsys: pytest.CaptureFixture) -> None:
    """A randomly initialised Grounding DINO (Swin and BERT of one layer each) through the same command."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    det = tmp_path / "gdino"
    det.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "square", "circle", *"abcdefghijklmnopqrstuvwxyz"]
    (det / "vocab.txt").write_text("\n".join(words) + "\n")
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 1, 1], window_size=4, out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=37, decoder_ffn_dim=37, num_queries=10, encoder_n_points=2, decoder_n_points=2,
        max_text_len=32, use_timm_backbone=False, use_pretrained_backbone=False)
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(cfg).save_pretrained(det)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
                           tokenizer=BertTokenizer(str(det / "vocab.txt"))).save_pretrained(det)
    d, _ = boxed_folder
    out = tmp_path / "gd.jsonl"
    code, _, err = _cli(["prompts", str(d), "--detector", str(det), "--objects", "square,circle",
                         "--detector-threshold", "0.0", "--max-area-ratio", "1.0", "--min-side", "1",
                         "--templates", "", "--question", "Is anything here?", "--out", str(out)], capsys)
    assert code == 0, err
    rows = _rows(out)
    assert rows and all(r["meta"]["provenance"]["box_source"]["model_type"] == "grounding-dino" for r in rows)
    assert all("[SEP]" not in r["meta"]["provenance"]["region"]["label"] for r in rows)


def test_lvis_style_file_names_images_by_coco_url(tmp_path: Path) -> None:
    from vopd_bench.trainsets.sources import CocoBoxes

    ann = tmp_path / "lvis.json"
    ann.write_text(json.dumps({
        "images": [{"id": 9, "coco_url": "http://images.cocodataset.org/val2017/000000000139.jpg",
                    "not_exhaustive_category_ids": [], "neg_category_ids": []}],
        "annotations": [{"id": 1, "image_id": 9, "category_id": 3, "bbox": [10, 20, 30, 40]},
                        {"id": 2, "image_id": 9, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1}],
        "categories": [{"id": 3, "name": "teapot", "synonyms": ["teapot"]}],
    }))
    src = CocoBoxes(ann)
    assert src.images(tmp_path) == ["000000000139.jpg"]
    regs = src.regions("000000000139.jpg", Image.new("RGB", (100, 100)))
    assert [(r.box, r.label) for r in regs] == [([10.0, 20.0, 40.0, 60.0], "teapot")]  # the crowd box is skipped
