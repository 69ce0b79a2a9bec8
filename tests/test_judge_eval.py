"""`vopd-bench eval --judge`: the protocols' judge hook asked through a real local judge server, cached, recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import records, run_cli
from judge_server import MODEL, JudgeState, serve

pytest.importorskip("mathruler")


@pytest.fixture()
def judge_url():
    state = JudgeState()
    with serve(state) as url:
        yield url, state


def _eval(model: str, data: Path, out: Path, url: str, *extra: str) -> int:
    return run_cli(["eval", "--model", model, "--task", "synth", "--data", str(data), "--limit", "6", "--out", str(out),
                    "--protocol", "vision-opd", "--judge", MODEL, "--judge-base-url", url, "--quiet", *extra])


def test_vision_opd_undecided_verdicts_go_to_the_judge_once(tiny_model: str, synth_small: Path, tmp_path: Path,
                                                             judge_url) -> None:
    url, state = judge_url
    out = tmp_path / "run"
    assert _eval(tiny_model, synth_small, out, url) == 0
    recs = records(out, "synth", "full") + records(out, "synth", "crop")
    judged = [r for r in recs if "judge" in r]
    assert judged, "the tiny model's wrong answers are left to the judge by the vision-opd rules"
    for r in judged:
        j = r["judge"]
        assert j["protocol"] == "vision-opd" and j["reply"] in ("Yes", "No") and r["verdicts"]["vision-opd"] == (
            j["reply"] == "Yes")
    asked = state.total
    assert 0 < asked <= len(judged)  # identical prompts asked once
    cfg = (out / "config.json").read_text()
    assert MODEL in cfg and '"judge"' in cfg
    # a re-run with --overwrite regenerates, but every judge prompt comes from the cache
    assert _eval(tiny_model, synth_small, out, url, "--overwrite") == 0
    assert state.total == asked


def test_bad_judge_input_is_one_line_and_writes_nothing(tiny_model: str, synth_small: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--data", str(synth_small), "--out", str(out),
                    "--judge", MODEL, "--judge-base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "never consults a judge" in capsys.readouterr().err
    assert _eval(tiny_model, synth_small, out, "http://127.0.0.1:9/v1") == 2
    err = capsys.readouterr().err
    assert "connection refused" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_results_and_summary_say_how_often_the_judge_decided(tiny_model: str, synth_small: Path, tmp_path: Path,
                                                             judge_url, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    url, _ = judge_url
    out = tmp_path / "run"
    assert _eval(tiny_model, synth_small, out, url) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())["tasks"]["synth"]["views"]
    for view in ("full", "crop"):
        recs = [r for r in records(out, "synth", view) if "judge" in r]
        if not recs:
            assert "judged" not in res[view]
            continue
        assert res[view]["judged"] == len(recs)
        same = [r["verdicts"]["vopd-bench"] == r["correct"] for r in recs if r["verdicts"].get("vopd-bench") is not None]
        assert res[view]["judge_agreement"] == pytest.approx(sum(same) / len(same))
        assert f"judge: synth/{view}: {len(recs)} of " in printed


def test_report_says_how_often_the_judge_decided(tiny_model: str, synth_small: Path, tmp_path: Path, judge_url) -> None:
    import json

    url, _ = judge_url
    out = tmp_path / "run"
    assert _eval(tiny_model, synth_small, out, url) == 0
    assert run_cli(["report", str(out), "--out", str(tmp_path / "rep"), "--examples", "0"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    views = json.loads((out / "results.json").read_text())["tasks"]["synth"]["views"]
    judged = {v: s["judged"] for v, s in views.items() if s.get("judged")}
    assert judged
    for view, k in judged.items():
        assert f"· synth · {view}): {k} of {views[view]['n']} verdicts" in md
