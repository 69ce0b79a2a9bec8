"""Scoring protocols: presets, `--protocol` / `--system-prompt` end to end (recorded, every protocol's verdict
per sample, aggregates in results.json, the summary and the report), bad input, truncation, the judge hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import records, run_cli

from vopd_bench import presets
from vopd_bench.errors import UserError
from vopd_bench.grading import ItemFacts
from vopd_bench.items import Item
from vopd_bench.protocol import Rendered, apply_judge, load_spec, make_record
from vopd_bench.results import task_result, view_stats
from vopd_bench.schema import SampleRecord


def test_shipped_presets_load_and_change_what_they_say():
    assert presets.names()[0] == "vopd-bench"
    assert set(presets.names()) == {"vopd-bench", "vision-opd", "lmms-eval", "vlmevalkit"}
    vo = load_spec("hrbench4k", protocol="vision-opd")
    assert vo.prompt.system is None and vo.generation["temperature"] == 0 and vo.generation["max_new_tokens"] == 4096
    it = Item(id="1", task="hrbench4k", image=None, question="What colour?", answer="A", options=["red", "blue"])
    assert vo.prompt.render(it) == "What colour? Select from the following choices.\n(A) red\n(B) blue"
    lm = load_spec("pope", protocol="lmms-eval")
    assert lm.generation["max_new_tokens"] == 128
    vk = load_spec("hrbench4k", protocol="vlmevalkit")
    assert vk.prompt.render(it).startswith("Question: What colour?\nOptions:\nA. red\nB. blue\nPlease select")
    # the default changes nothing; --system-prompt overrides the task's and the protocol's
    assert load_spec("vstar", protocol="vopd-bench").prompt == load_spec("vstar").prompt
    assert load_spec("vstar", protocol="vision-opd", system_prompt="Be brief.").prompt.system == "Be brief."
    assert load_spec("vstar", protocol="vision-opd").prompt == load_spec("vstar").prompt  # V*: the same question
    assert load_spec("hrbench4k", protocol="vision-opd").prompt.hash() != load_spec("hrbench4k").prompt.hash()


def test_bad_presets_are_one_line_errors(tmp_path: Path):
    with pytest.raises(UserError, match="unknown protocol 'nope'; known protocols: vopd-bench, "):
        presets.load("nope")
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nextractor: vopd_bench\naggregation: vopd_bench\njudge: sometimes\n")
    with pytest.raises(UserError, match=r"p.yaml: judge must be one of never, undecided, always"):
        presets.load(str(bad))
    bad.write_text("name: x\nextractor: regex\naggregation: vopd_bench\n")
    with pytest.raises(UserError, match="unknown extractor 'regex'"):
        presets.load(str(bad))
    bad.write_text("name: x\nextractor: vopd_bench\naggregation: vopd_bench\ntasks: {vstar: {prompt: {tmpl: x}}}\n")
    with pytest.raises(UserError, match=r"tasks.vstar.prompt"):
        presets.load(str(bad))


def test_unknown_protocol_exits_2_and_writes_nothing(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert run_cli(["eval", "--task", "synth", "--protocol", "lmms", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown protocol 'lmms'" in err[0] and "lmms-eval" in err[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def lmms_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Path:
    out = tmp_path_factory.mktemp("proto") / "run"
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--limit", "4", "--protocol", "lmms-eval",
                    "--system-prompt", "Answer briefly.", "--out", str(out), "-q"]) == 0
    return out


def test_protocol_and_system_prompt_are_recorded(lmms_run: Path):
    cfg = json.loads((lmms_run / "config.json").read_text())
    assert cfg["protocol"]["name"] == "lmms-eval" and cfg["protocol"]["judge"] == "undecided"
    assert cfg["system_prompt"] == "Answer briefly."
    assert cfg["identity"]["protocol"] == "lmms-eval" and cfg["identity"]["system_prompt"] == "Answer briefly."
    assert cfg["tasks"]["synth"]["prompt"]["system"] == "Answer briefly."
    assert cfg["tasks"]["synth"]["generation"]["temperature"] == 0.0
    res = json.loads((lmms_run / "results.json").read_text())
    assert res["protocol"] == "lmms-eval"
    blocks = res["tasks"]["synth"]["protocols"]
    assert set(blocks) == set(presets.names())
    for view in ("full", "crop"):
        assert blocks["lmms-eval"]["views"][view]["n"] == 4
        assert blocks["lmms-eval"]["views"][view]["accuracy"] == res["tasks"]["synth"]["views"][view]["accuracy"]
    assert blocks["lmms-eval"]["same_prompt"] is False  # --system-prompt: not lmms-eval's own prompt any more
    for r in records(lmms_run, "synth", "full"):
        assert r["protocol"] == "lmms-eval" and set(r["verdicts"]) == set(presets.names())
        assert r["correct"] == bool(r["verdicts"]["lmms-eval"])


def test_another_protocol_on_the_same_run_directory_is_refused(lmms_run: Path, tiny_model: str, capsys):
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--limit", "4", "--out", str(lmms_run), "-q"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_summary_and_report_show_the_protocols(lmms_run: Path, tmp_path: Path, capsys):
    from vopd_bench.rundir import RunDir
    from vopd_bench.summary import print_results

    print_results(RunDir(lmms_run).read_results())
    out = capsys.readouterr().out
    assert out.startswith("protocol: lmms-eval") and "each protocol's scoring" in out and "visual tok" in out
    assert run_cli(["report", str(lmms_run), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "scoring protocol: lmms-eval (system prompt 'Answer briefly.')" in md
    assert "## Scoring protocols" in md and "| vopd-bench | lmms-eval | vision-opd | vlmevalkit |" in md
    assert "mean visual tokens per image: full" in md
    csv = (tmp_path / "rep" / "tables" / "table_protocols.csv").read_text()
    assert "lmms_eval" in csv.splitlines()[0] or "lmms-eval" in csv.splitlines()[0]


SPEC = load_spec("vstar")
ITEM = Item(id="7", task="vstar", image=None, question="What colour is the cup?", answer="B",
            options=["red", "blue", "green", "white"], category="direct_attributes")


def _rec(resp: str, **kw) -> SampleRecord:
    return make_record(SPEC, ITEM, "full", Rendered(None, None), resp, **kw)


def test_verdicts_of_every_protocol_are_kept_where_they_disagree():
    r = _rec("Answer: B")  # lmms-eval's V* and Vision-OPD's first-letter rule both read the "A" of "Answer"
    assert r.verdicts["vopd-bench"] is True and r.verdicts["lmms-eval"] is False and r.verdicts["vision-opd"] is None
    assert r.parsed == "B" and r.parsed_by["lmms-eval"] == "A"
    assert r.judge_requests and "The answer is: B" in r.judge_requests["vision-opd"]
    r = _rec("Cannot determine")  # lmms-eval: the first capital C; ours: no answer
    assert r.parsed is None and r.verdicts["vopd-bench"] is False and r.parsed_by["lmms-eval"] == "C"


def test_truncated_reasoning_is_counted_apart_from_parse_failures():
    cut = _rec("<think>Option A looks red, option B is", n_tokens=16)
    done = _rec("<think>It is blue.</think>B", n_tokens=10)
    stalled = _rec("<think>hmm", n_tokens=3)  # unclosed but short of the limit: a parse failure, not a cut
    assert cut.truncated and cut.parsed is None and not cut.correct
    assert not done.truncated and done.correct
    assert not stalled.truncated
    assert _rec("<think>x", n_tokens=3, finish_reason="length").truncated  # the backend's reason wins
    s = view_stats([cut, done, stalled])
    assert (s.truncated, s.parse_failures, s.n) == (1, 1, 3)


def test_mean_visual_tokens_per_view():
    a, b = _rec("B", visual_tokens=100), _rec("B", visual_tokens=300)
    assert view_stats([a, b]).visual_tokens == 200
    assert view_stats([_rec("B")]).visual_tokens is None


def _recs(task: str, rows: list[tuple[str, str, dict]], scorer: str = "choice") -> list[SampleRecord]:
    out = []
    for k, (answer, resp, meta) in enumerate(rows):
        spec = load_spec(task)
        opts = None if scorer == "yesno" else ["x", "y", "z", "w"][: 2 if task == "mmvp" else 4]
        it = Item(id=str(k), task=task, image=None, question="q", answer=answer, options=opts,
                  category=meta.pop("category", None), group=meta.pop("group", None), meta=meta)
        out.append(make_record(spec, it, "full", Rendered(None, None), resp))
    return out


def test_benchmark_aggregations_stored_per_protocol():
    # MMVP: 2 pairs, one with both right -> pair accuracy 0.5, accuracy 0.75
    mmvp = _recs("mmvp", [("A", "A", {"group": "pair0"}), ("B", "B", {"group": "pair0"}),
                          ("A", "A", {"group": "pair1"}), ("B", "A", {"group": "pair1"})])
    m = task_result({"full": mmvp}, task="mmvp").protocols["vopd-bench"]["views"]["full"]["metrics"]
    assert m == {"accuracy": 0.75, "pair_accuracy": 0.5}
    # POPE: tp 1, fp 1, fn 1, tn 1
    pope = _recs("pope", [("yes", "Yes", {}), ("no", "Yes", {}), ("yes", "No", {}), ("no", "No", {})], scorer="yesno")
    m = task_result({"full": pope}, task="pope").protocols["vopd-bench"]["views"]["full"]["metrics"]
    assert m == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5}
    # HR-Bench: single = mean over cycles (1.0 and 0.0), cross = 1.0
    hr = _recs("hrbench4k", [("A", "A", {"category": "single", "cycle": "c1"}),
                             ("A", "B", {"category": "single", "cycle": "c2"}),
                             ("B", "B", {"category": "cross", "cycle": "c1"})])
    m = task_result({"full": hr}, task="hrbench4k").protocols["vopd-bench"]["views"]["full"]["metrics"]
    assert m["single"] == 0.5 and m["cross"] == 1.0 and m["average"] == pytest.approx((1.0 + 0.0) / 2)
    # CV-Bench: 2D 1/1, 3D 0/2 -> 2D/3D mean 0.5, accuracy 1/3
    cv = _recs("cvbench", [("A", "A", {"type": "2D"}), ("A", "B", {"type": "3D"}), ("B", "A", {"type": "3D"})])
    m = task_result({"full": cv}, task="cvbench").protocols["vopd-bench"]["views"]["full"]["metrics"]
    assert m["2d_3d_mean"] == 0.5 and m["accuracy"] == pytest.approx(1 / 3)
    # MMStar: l2 means 1.0 and 0.0 -> 0.5, though 2 of 3 items are right
    ms = _recs("mmstar", [("A", "A", {"l2_category": "p"}), ("A", "A", {"l2_category": "p"}),
                          ("A", "B", {"l2_category": "q"})])
    m = task_result({"full": ms}, task="mmstar").protocols["vopd-bench"]["views"]["full"]["metrics"]
    assert m["l2_category_mean"] == 0.5
    m = task_result({"full": ms}, task="mmstar").protocols["lmms-eval"]["views"]["full"]["metrics"]
    assert m == {"average": 0.5}


def test_judge_hook():
    proto = presets.load("vision-opd")
    spec = load_spec("vstar", protocol=proto)
    asked: list[str] = []

    def judge(prompt: str) -> str:
        asked.append(prompt)
        return "Yes"

    r = make_record(spec, ITEM, "full", Rendered(None, None), "The answer is B", protocol=proto, judge=judge)
    assert len(asked) == 1 and r.correct is True and r.verdicts["vision-opd"] is True
    assert r.extra["judge"]["reply"] == "Yes" and r.extra["judge"]["prompt"] == asked[0]
    # rules decide: no judge call
    make_record(spec, ITEM, "full", Rendered(None, None), "(B)", protocol=proto, judge=judge)
    assert len(asked) == 1

    def broken(prompt: str) -> str:
        raise TimeoutError("judge timed out")

    r = make_record(spec, ITEM, "full", Rendered(None, None), "The answer is B", protocol=proto, judge=broken)
    assert r.error.startswith("judge: TimeoutError") and r.retryable and not r.correct
    r = make_record(spec, ITEM, "full", Rendered(None, None), "The answer is B", protocol=proto)  # judge later
    apply_judge(r, spec, ITEM, proto, lambda p: "No")
    assert r.correct is False and r.verdicts["vision-opd"] is False
    # lmms-eval HR-Bench: the judge's reply is read with can_infer and compared with the gold letter
    lm = presets.load("lmms-eval")
    facts = ItemFacts(id="1", answer="B", options=("red", "blue"), question="q")
    assert presets.judge_decision(lm, "hrbench4k", "B", facts) == ("B", True)
    assert presets.judge_decision(lm, "hrbench4k", "Z", facts) == ("Z", False)


def test_visualprobe_loader_and_the_vision_opd_mean_over_levels(tmp_path: Path):
    from PIL import Image

    for level, answers in (("Easy", ["red", "two"]), ("Medium", ["blue"])):
        d = tmp_path / f"VisualProbe_{level}"
        d.mkdir()
        recs = []
        for k, a in enumerate(answers):
            Image.new("RGB", (64, 48), "gray").save(d / f"{k}.jpg")
            recs.append({"images": [f"VisualProbe_{level}/{k}.jpg"], "problem": "<image>\nWhat colour is the sign?",
                         "solution": a})
        (d / "val.json").write_text(json.dumps(recs))
    spec = load_spec("visualprobe")
    items = spec.load_items(tmp_path)
    assert [(it.id, it.category, it.answer) for it in items] == [
        ("Easy-0", "Easy", "red"), ("Easy-1", "Easy", "two"), ("Medium-0", "Medium", "blue")]
    assert items[0].question == "What colour is the sign?" and items[0].load_image().size == (64, 48)
    recs = [make_record(spec, it, "full", Rendered(None, None), resp)
            for it, resp in zip(items, ["Red", "three", "blue"], strict=True)]
    assert [r.correct for r in recs] == [True, False, True]  # vopd-bench: exact match after normalisation
    pytest.importorskip("mathruler")
    block = task_result({"full": recs}, task="visualprobe").protocols["vision-opd"]["views"]["full"]
    # vision-opd: "Red" and "blue" pass mathruler ("Red." would not); "three" goes to the judge (left out); Easy 1/1, Medium 1/1, Hard 0
    assert block["undecided"] == 1 and block["metrics"]["accuracy"] == pytest.approx((1 + 1 + 0) / 3)
    with pytest.raises(UserError, match="VisualProbe_Easy"):
        spec.load_items(None)
