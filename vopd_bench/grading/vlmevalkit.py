"""VLMEvalKit's rule-based (no judge, `exact_matching`) scoring, transcribed from open-compass/VLMEvalKit
(commit e8e78f0): multiple choice by `can_infer` (`vlmeval/utils/matching_util.py`: an option letter
standing alone near the end, "the answer is X", else exactly one option text contained); what it cannot
read is "Z", scored wrong (`extract_answer_from_item` with no judge model); yes/no by `YOrN_Extraction`
(`vlmeval/dataset/utils/yorn.py`); MME-RealWorld by its own `extract_characters_regex` after an
`<answer>` block (`vlmeval/dataset/image_mcq.py` MMERealWorld.evaluate). Aggregation: plain accuracy;
MMVP also the share of pairs with both right (`report_acc_MMVP`); POPE F1/precision/recall
(`POPE_rating`)."""

from __future__ import annotations

import copy as cp
import re
import string
from collections import defaultdict
from typing import Any

from vopd_bench.grading import ItemFacts, Verdict
from vopd_bench.grading.lmms_eval import mme_letter
from vopd_bench.items import LETTERS

_VERBOSE_ANSWER_RE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def can_infer_option(answer: str, choices: dict[str, str]) -> str | bool:
    if "Failed to obtain answer via API" in answer:
        return False
    for err in ["Sorry, I can't help with images of people yet.", "I can't process this file.",
                "I'm sorry, but without the image provided", "Cannot determine the answer"]:
        if err in answer:
            return "Z"

    def count_choice(splits: list[str], choices: Any, prefix: str = "", suffix: str = "") -> int:
        return sum(1 for c in choices if prefix + c + suffix in splits)

    answer_mod = cp.copy(answer)
    for c in ".()[],:;!*#{}":
        answer_mod = answer_mod.replace(c, " ")
    splits = [x.strip() for x in answer_mod.split()]
    count = count_choice(splits, choices)
    if count == 1:
        for ch in choices:
            if ch in splits and splits.index(ch) > (len(splits) - 5):
                return ch
    elif count == 0 and count_choice(splits, {"Z", ""}) == 1:
        return "Z"
    match = _VERBOSE_ANSWER_RE.search(answer or "")
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return False


def can_infer_text(answer: str, choices: dict[str, str]) -> str | bool:
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return False
    choices = {k: str(v).lower() for k, v in choices.items() if k in string.ascii_uppercase}
    cands = [k for k in choices if choices[k] in answer]
    return cands[0] if len(cands) == 1 else False


def can_infer(answer: Any, choices: dict[str, str]) -> str | bool:
    answer = str(answer)
    copt = can_infer_option(answer, choices)
    return copt if copt else can_infer_text(answer, choices)


def process_punctuation(in_text: str) -> str:
    """vlmeval/smp/misc.py process_punctuation."""
    out = in_text
    comma_strip = re.compile(r"(\d)(,)(\d)")
    period_strip = re.compile(r"(?<!\d)\.(?!\d)")
    for p in [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]:
        if (p + " " in in_text or " " + p in in_text) or (re.search(comma_strip, in_text) is not None):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return period_strip.sub("", out, re.UNICODE)


def yorn_extraction(output: str) -> str:
    words = process_punctuation(output.lower()).split()
    if "yes" in words and "no" not in words:
        return "Yes"
    if "yes" not in words and "no" in words:
        return "No"
    return "Unknown"


def grade(kind: str | None, response: str, item: ItemFacts) -> Verdict:
    gold = item.answer.strip()
    if item.scorer == "yesno" or kind == "pope":
        p = yorn_extraction(response or "")
        return Verdict(None if p == "Unknown" else p.lower(), p.lower() == gold.lower(), facets={"prediction": p.lower()})
    if kind in ("mme_realworld", "mme_realworld_cn"):
        m = re.search(r"<answer>(.*?)</answer>", response or "", re.DOTALL)
        pred = m.group(1).strip().upper() if m else (response or "")
        p = mme_letter(pred)
        return Verdict(p or None, p == gold.upper())
    if item.options:
        ret = can_infer(response or "", {LETTERS[i]: t for i, t in enumerate(item.options)})
        opt = str(ret) if ret else "Z"
        return Verdict(None if opt == "Z" else opt, opt == gold.upper())
    from vopd_bench.grading import vopd_bench

    return vopd_bench.grade(kind, response, item)


def aggregate(kind: str | None, rows: list[dict[str, Any]]) -> dict[str, float]:
    rows = [r for r in rows if r.get("correct") is not None]
    if not rows:
        return {}
    hit = [bool(r["correct"]) for r in rows]
    out = {"accuracy": sum(hit) / len(hit)}
    if kind == "mmvp":
        pairs: dict[Any, list[bool]] = defaultdict(list)
        for r, h in zip(rows, hit):
            pairs[r.get("pair")].append(h)
        both = [all(v) for v in pairs.values() if len(v) == 2]
        out["pair_accuracy"] = sum(both) / len(both) if both else 0.0
    if kind == "pope":
        y_true = [str(r["answer"]).lower() == "yes" for r in rows]
        y_pred = [r.get("prediction") == "yes" for r in rows]
        tp = sum(t and p for t, p in zip(y_true, y_pred))
        fp = sum((not t) and p for t, p in zip(y_true, y_pred))
        fn = sum(t and not p for t, p in zip(y_true, y_pred))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        out.update(precision=precision, recall=recall,
                   f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return out
