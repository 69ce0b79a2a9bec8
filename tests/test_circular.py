"""Circular evaluation: rotations move the gold letter with its option; a question counts only if all are right."""

from __future__ import annotations

from vopd_bench.circular import base_id, circular_accuracy, circular_scores, expand, rotate
from vopd_bench.items import Item


def _item(i: str = "q1", answer: str = "C") -> Item:
    return Item(id=i, task="t", image=None, question="What?", answer=answer, options=["red", "blue", "green", "white"])


def test_rotations_keep_the_gold_option() -> None:
    it = _item()
    rots = expand([it, Item(id="free", task="t", image=None, question="?", answer="cat")])
    assert [r.id for r in rots] == ["q1@c0", "q1@c1", "q1@c2", "q1@c3", "free"]
    for r in rots[:4]:
        assert r.options[ord(r.answer) - 65] == "green"  # the gold option text stays gold
        assert r.group == "q1" and base_id(r.id) == "q1"
    assert rotate(it, 1).options == ["blue", "green", "white", "red"] and rotate(it, 1).answer == "B"
    assert sorted(r.answer for r in rots[:4]) == ["A", "B", "C", "D"]  # the gold visits every letter
    assert base_id("free") == "free" and base_id("a@cb") == "a@cb"


def test_a_question_is_right_only_if_every_rotation_is() -> None:
    recs = [{"id": f"q1@c{k}", "correct": True} for k in range(4)]
    recs += [{"id": f"q2@c{k}", "correct": k != 2} for k in range(4)]
    recs += [{"id": "q3@c0", "correct": True}, {"id": "q3@c1", "error": "timeout"}]  # undecided
    recs += [{"id": "q4@c0", "correct": False}, {"id": "q4@c1", "error": "timeout"}]  # wrong already
    assert circular_scores(recs) == {"q1": True, "q2": False, "q3": None, "q4": False}
    assert circular_accuracy(recs) == (1 / 3, 3)
    # a letter-biased model ("always A") is right on 1 of 4 rotations: plain 25%, circular 0%
    biased = [{"id": r.id, "correct": r.answer == "A"} for r in expand([_item()])]
    assert sum(r["correct"] for r in biased) == 1 and circular_accuracy(biased) == (0.0, 1)


def test_eval_circular_end_to_end(tiny_model, synth_small, tmp_path, capsys) -> None:
    import json

    from helpers import records, run_cli

    out = tmp_path / "run"
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--data", str(synth_small), "--limit", "3",
                    "--circular", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())["tasks"]["synth"]["views"]
    for view in ("full", "crop"):
        recs = records(out, "synth", view)
        assert len(recs) == 12 and {base_id(r["id"]) for r in recs} == {r["id"].split("@c")[0] for r in recs}
        assert len({base_id(r["id"]) for r in recs}) == 3
        acc, n = circular_accuracy(recs)
        assert res[view]["circular_accuracy"] == acc and res[view]["circular_n"] == n == 3
        assert f"circular: synth/{view}: " in printed
    assert json.loads((out / "config.json").read_text())["identity"]["circular"] is True
