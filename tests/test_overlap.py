"""`vopd-bench overlap`: perceptual-hash near-duplicates between training and evaluation images (real
photographs, edited copies), the report, `--drop` marking the kept prompts as checked, and the trainer's
summary of that mark."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vopd_bench.cli import main

pytest.importorskip("imagehash")


def _cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def train_and_eval(tmp_path: Path) -> tuple[Path, Path]:
    skimage = pytest.importorskip("skimage")
    data = Path(skimage.__file__).parent / "data"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "coffee.png", "rocket.jpg"):
        shutil.copyfile(data / name, photos / name)
    rows = [{"id": f"p{k}", "image": f"../photos/{n}", "question": "What colour is it?", "answer": "",
             "boxes": [[10, 10, 60, 60]], "meta": {"provenance": {"source": {"name": "images"}}}}
            for k, n in enumerate(["astronaut.png", "coffee.png", "rocket.jpg", "coffee.png"])]
    train = tmp_path / "p" / "prompts.jsonl"
    train.parent.mkdir()
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ev = tmp_path / "eval"
    ev.mkdir()
    im = Image.open(photos / "coffee.png")  # a near-duplicate: 4% cropped, halved, JPEG quality 70
    im.crop((12, 8, im.width - 12, im.height - 8)).resize((288, 192)).save(ev / "coffee_small.jpg", quality=70)
    shutil.copyfile(data / "camera.png", ev / "camera.png")  # unrelated
    (ev / "broken.png").write_bytes(b"not an image")
    return train, ev


def test_finds_near_duplicates_and_drop_marks_the_rest(train_and_eval: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    train, ev = train_and_eval
    report, out = tmp_path / "overlap.json", tmp_path / "checked" / "prompts.jsonl"
    code, stdout, err = _cli(["overlap", str(train), str(ev), "--report", str(report), "--drop", str(out)], capsys)
    assert code == 0, err
    rep = json.loads(report.read_text())
    assert sorted(m["train_id"] for m in rep["matches"]) == ["p1", "p3"]  # both rows of coffee.png
    assert all(m["eval_id"] == "coffee_small.jpg" and m["distance"] <= 10 for m in rep["matches"])
    assert rep["n_train"] == 4 and rep["n_eval"] == 3 and len(rep["unreadable"]) == 1  # broken.png reported
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in kept] == ["p0", "p2"]
    ov = kept[0]["meta"]["provenance"]["overlap"]
    assert ov["checked"] is True and ov["eval"] == [str(ev)] and ov["n_dropped"] == 2 and ov["nearest_distance"] > 10
    assert kept[0]["meta"]["provenance"]["source"] == {"name": "images"}  # earlier provenance kept
    # the kept file trains as is (image paths rewritten relative to its folder), and the run can say so
    from vopd_bench.train.data import prompts_provenance, train_spec_for_file

    items = train_spec_for_file(str(out)).load_items(out)
    assert items[0].load_image().size == (512, 512)
    prov = prompts_provenance(items)
    assert prov["overlap_checked_all"] is True and prov["overlap_against"] == [str(ev)]
    from vopd_bench.trainsets.provenance import sentence

    assert sentence(prov) == f"2 training prompts (images: 2); train/eval image overlap checked against {ev}"
    unchecked = prompts_provenance(train_spec_for_file(str(train)).load_items(train))
    assert sentence(unchecked).endswith("train/eval image overlap not checked")
    # a tighter threshold finds nothing: the match was the edited copy, at a distance > 0
    code, stdout, _ = _cli(["overlap", str(train), str(ev), "--threshold", "0"], capsys)
    assert code == 0 and stdout.startswith("0 of 4 training images")


def test_task_source_and_bad_arguments(train_and_eval: tuple[Path, Path], synth_small: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    train, _ = train_and_eval
    code, stdout, err = _cli(["overlap", str(train), f"synth={synth_small}"], capsys)
    assert code == 0, err
    assert "0 of 4 training images" in stdout and "24 evaluation images (synth)" in stdout
    code, _, err = _cli(["overlap", str(train), "no_such_task"], capsys)
    assert code == 2 and "unknown task 'no_such_task'" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(["overlap", str(train), str(train), "--hash", "md5"], capsys)
    assert code == 2 and "--hash must be one of" in err
    code, _, err = _cli(["overlap", str(train), str(train), "--drop", str(train)], capsys)
    assert code == 2 and "write to another file than TRAIN" in err


def test_vision_opd_folder_checked_file_loads_with_its_mark(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Dropping from Vision-OPD-6K's train.jsonl keeps its layout; the loader carries the overlap mark."""
    from test_visionopd_loader import _released

    from vopd_bench.tasks import get_task
    from vopd_bench.train.data import prompts_provenance

    root = _released(tmp_path / "Vision-OPD-6K")
    ev = tmp_path / "eval"
    ev.mkdir()
    shutil.copyfile(root / "images" / "sa" / "sa_1.png", ev / "copy.png")
    out = tmp_path / "checked" / "train.jsonl"
    code, stdout, err = _cli(["overlap", str(root), str(ev), "--threshold", "0", "--drop", str(out)], capsys)
    assert code == 0, err
    assert "1 of 3 training images" in stdout
    items = get_task("vision_opd_6k").load_items(out)
    assert [it.question for it in items] == ["What is the colour of the umbrella?", "What does the sign say?"]
    assert Path(items[1].crop_image).resolve() == (root / "teacher_images" / "sa_2_bbox.png").resolve()
    assert prompts_provenance(items)["overlap_checked_all"] is True
