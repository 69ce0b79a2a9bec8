"""lmms-eval interop: export a task, run it through lmms-eval with the tiny model, import the sample
logs with `gap --from-lmms-eval`, and get exactly what `vopd-bench eval` gets on the same items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_dataset, records, run_cli

pytestmark = pytest.mark.lmms
IGNORED = {"latency", "visual_tokens"}  # lmms-eval neither times requests per sample nor counts image tokens


def _no_tokens(block):
    """A results block without the visual-token means and the other protocols' re-scoring (neither is known for
    responses imported from lmms-eval: it neither counts image tokens nor keeps every protocol's verdict)."""
    if isinstance(block, dict):
        return {k: _no_tokens(v) for k, v in block.items() if k not in ("visual_tokens", "protocols")}
    return block


def run_lmms_eval(model: str, include: Path, tasks: list[str], out: Path) -> dict:
    """lmms-eval as its CLI runs it (simple_evaluate + EvaluationTracker files), with our `vopd_hf` model."""
    pytest.importorskip("lmms_eval")
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.loggers import EvaluationTracker
    from lmms_eval.tasks import TaskManager

    from vopd_bench.lmms.model import VopdHF

    tracker = EvaluationTracker(output_path=str(out))
    res = simple_evaluate(model=VopdHF(pretrained=model, batch_size=16, device="cpu"), tasks=tasks,
                          task_manager=TaskManager(include_path=str(include), include_defaults=False),
                          log_samples=True, evaluation_tracker=tracker, bootstrap_iters=0)
    samples = res.pop("samples")
    tracker.save_results_aggregated(results=res, samples=samples, datetime_str=res["date"])
    for task in res["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return res


def _strip(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in recs]


def test_lmms_eval_round_trip_matches_eval(tiny_model, synth_small, tmp_path, capsys):
    exp, logs, imported, ours = (tmp_path / d for d in ("export", "lmms", "imported", "ours"))
    assert run_cli(["export-lmms-eval", "--task", "synth", "--data", str(synth_small), "--out", str(exp)]) == 0
    assert {p.name for p in (exp / "vopd_synth").iterdir()} >= {"utils.py", "vopd_synth_full.yaml", "vopd_synth_crop.yaml"}

    res = run_lmms_eval(tiny_model, exp, ["vopd_synth"], logs)
    assert set(res["results"]) >= {"vopd_synth_full", "vopd_synth_crop"}
    files = sorted(logs.rglob("*_samples_*.jsonl"))
    assert len(files) == 2

    full, crop = (next(f for f in files if f.name.endswith(f"_{v}.jsonl")) for v in ("full", "crop"))
    assert run_cli(["gap", "--from-lmms-eval", str(full), str(crop), "--out", str(imported),
                    "--task", "synth", "--data", str(synth_small)]) == 0
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--data", str(synth_small),
                    "--out", str(ours), "-q"]) == 0
    capsys.readouterr()

    for view in ("full", "crop"):
        mine, theirs = records(ours, "synth", view), records(imported, "synth", view)
        assert len(mine) == len(theirs) == 24
        assert [r["response"] for r in theirs] == [r["response"] for r in mine]
        assert [r["correct"] for r in theirs] == [r["correct"] for r in mine]
        assert _strip(theirs) == _strip(mine)
    a = _no_tokens(json.loads((imported / "results.json").read_text())["tasks"]["synth"])
    b = _no_tokens(json.loads((ours / "results.json").read_text())["tasks"]["synth"])
    assert a == b  # accuracies, CIs, the gap with its CI and McNemar p, per category
    accuracy = res["results"]["vopd_synth_crop"]["vopd_accuracy,none"]
    assert accuracy == pytest.approx(b["views"]["crop"]["accuracy"])
    cfg = json.loads((imported / "config.json").read_text())
    assert cfg["backend"]["backend"] == "lmms-eval" and Path(cfg["backend"]["model"]).resolve() == Path(tiny_model).resolve()
    assert cfg["tasks"]["synth"]["crop"] == json.loads((ours / "config.json").read_text())["tasks"]["synth"]["crop"]

    # the output folder works too, and re-importing the same logs is idempotent
    assert run_cli(["gap", "--from-lmms-eval", str(logs), "--out", str(imported)]) == 0
    assert _no_tokens(json.loads((imported / "results.json").read_text())["tasks"]["synth"]) == b


def test_vopd_hf_takes_batch_size_from_model_args_or_the_option(tiny_model, synth_small, tmp_path):
    """`lmms-eval --model_args ...,batch_size=N` and `--batch_size N` both work (docs/lmms_eval.md): the CLI
    always passes its own --batch_size (1 unless set) beside --model_args."""
    pytest.importorskip("lmms_eval")
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from vopd_bench.lmms import register
    from vopd_bench.lmms.model import VopdHF

    cli = {"batch_size": 1, "max_batch_size": None, "device": None}  # what `lmms-eval` passes by default
    assert VopdHF.create_from_arg_string(f"pretrained={tiny_model},batch_size=4", cli).batch_size == 4
    assert VopdHF.create_from_arg_string(f"pretrained={tiny_model}", {**cli, "batch_size": "8"}).batch_size == 8
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 'auto'"):
        VopdHF.create_from_arg_string(f"pretrained={tiny_model}", {**cli, "batch_size": "auto"})

    # the whole path of the CLI: the registered name, model args as a string, lmms-eval's own batch_size
    exp = tmp_path / "export"
    assert run_cli(["export-lmms-eval", "--task", "synth", "--data", str(synth_small), "--limit", "6",
                    "--out", str(exp)]) == 0
    register()
    res = simple_evaluate(model="vopd_hf", model_args=f"pretrained={tiny_model},batch_size=4,device=cpu",
                          batch_size=1, tasks=["vopd_synth"], log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(exp), include_defaults=False))
    assert {t: len(s) for t, s in res["samples"].items()} == {"vopd_synth_full": 6, "vopd_synth_crop": 6}
    assert all(s["resps"][0][0] for s in res["samples"]["vopd_synth_crop"])  # real responses


# ---------------------------------------------------------------------------- bad input (no model)
@pytest.fixture
def fx(tmp_path):
    return make_dataset(tmp_path / "fx", n=4)


def _fake_log(path: Path, ids: list[str], view: str = "full", task: str = "fx") -> Path:
    rows = [{"doc_id": i, "target": "A", "filtered_resps": "Answer: A",
             "vopd_accuracy": {"id": iid, "task": task, "view": view, "answer": "A", "category": None, "group": None,
                               "prompt_hash": "x", "crop_box": None, "response": "Answer: A", "parsed": "A",
                               "correct": True, "error": None, "retryable": False, "latency": None, "score": 1.0}}
            for i, iid in enumerate(ids)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gap_missing_file_is_one_line_error(tmp_path, capsys):
    assert run_cli(["gap", "--from-lmms-eval", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.jsonl" in err


def test_gap_rejects_logs_without_records(tmp_path, capsys):
    bad = tmp_path / "x_samples_other.jsonl"
    bad.write_text(json.dumps({"doc_id": 0, "filtered_resps": "A", "exact_match": 1.0}) + "\n")
    assert run_cli(["gap", "--from-lmms-eval", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "export-lmms-eval" in err


def test_gap_rejects_doc_ids_of_another_task(fx, tmp_path, capsys):
    data, spec = fx
    full = _fake_log(tmp_path / "l" / "d_samples_vopd_fx_full.jsonl", ["fx-1", "fx-0", "fx-2", "fx-3"])
    crop = _fake_log(tmp_path / "l" / "d_samples_vopd_fx_crop.jsonl", ["fx-0", "fx-1", "fx-2", "fx-3"], "crop")
    args = ["gap", "--from-lmms-eval", str(full), str(crop), "--out", str(tmp_path / "o")]
    assert run_cli([*args, "--task", str(spec), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert str(full) in err and "doc_id 0" in err
    assert run_cli(args) == 0  # without --task the records alone are paired by item id
    res = json.loads((tmp_path / "o" / "results.json").read_text())["tasks"]["fx"]
    assert res["gap"]["n_pairs"] == 4 and res["gap"]["value"] == 0.0
    (tmp_path / "l" / "d_samples_mme.jsonl").write_text(json.dumps({"doc_id": 0, "exact_match": 1.0}) + "\n")
    assert run_cli(["gap", "--from-lmms-eval", str(tmp_path / "l"), "--out", str(tmp_path / "o")]) == 0  # others skipped


def test_gap_rejects_duplicate_doc_ids(tmp_path, capsys):
    p = _fake_log(tmp_path / "d_samples_t.jsonl", ["a", "b"])
    p.write_text(p.read_text() + p.read_text().splitlines()[0] + "\n")
    assert run_cli(["gap", "--from-lmms-eval", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "doc_id 0 appears twice" in capsys.readouterr().err


def test_export_skips_boxless_items_and_writes_messages(fx, tmp_path):
    pytest.importorskip("datasets")
    data, spec = fx
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines()]
    rows[1]["boxes"] = []
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "exp"
    assert run_cli(["export-lmms-eval", "--task", str(spec), "--data", str(data), "--out", str(out)]) == 0
    import datasets

    ids = {v: datasets.load_from_disk(str(out / "vopd_fx" / "data" / v))["test"]["id"] for v in ("full", "crop")}
    assert ids == {"full": ["fx-0", "fx-1", "fx-2", "fx-3"], "crop": ["fx-0", "fx-2", "fx-3"]}
    text = (out / "vopd_fx" / "vopd_fx_crop.yaml").read_text()
    assert "vopd_skipped_no_box: 1" in text and "max_new_tokens: 6" in text

    from vopd_bench.lmms.bridge import ExportedTask

    et = ExportedTask(task=str(spec), data=str(data))
    msgs = et.messages({"id": "fx-0"}, "crop")
    assert msgs[-1]["content"][0]["url"].size == (224, 224) and msgs[-1]["content"][1]["text"] == et.text({"id": "fx-0"})
    rec = et.process_results({"id": "fx-0"}, ["Answer: " + rows[0]["answer"]], "crop")["vopd_accuracy"]
    assert rec["correct"] is True and rec["crop_box"] is not None and rec["view"] == "crop"


def test_vopd_hf_model_registers_and_converts_messages():
    pytest.importorskip("lmms_eval")
    from lmms_eval.models import get_model
    from PIL import Image

    from vopd_bench.lmms import register
    from vopd_bench.lmms.model import VopdHF, to_gen_kwargs, to_request

    register()
    assert get_model("vopd_hf") is VopdHF
    im = Image.new("RGB", (8, 8))
    req = to_request("t/0", [{"role": "system", "content": [{"type": "text", "text": "S"}]},
                             {"role": "user", "content": [{"type": "image", "url": im}, {"type": "text", "text": "Q"}]}])
    assert (req.system, req.prompt, req.images) == ("S", "Q", [im])
    g = to_gen_kwargs({"max_new_tokens": 16, "temperature": 0.0, "do_sample": False, "until": []})
    assert g.greedy and g.max_new_tokens == 16
