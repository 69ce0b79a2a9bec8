"""lmms-eval's own scoring, transcribed from lmms-eval 0.7.3 (`lmms_eval/tasks/<task>/utils.py`): each
task's answer extraction from `process_results` and its aggregation functions, rule for rule (their
quirks included: V*'s first-capital fallback, CV-Bench's first character, POPE's exact "yes"/"no",
MME-RealWorld's substring match). HR-Bench sends what `can_infer` cannot read to a GPT judge: here that
verdict is undecided (`correct=None`) with the judge prompt lmms-eval builds. Tasks lmms-eval lacks are
scored by the vopd-bench rules. `tests/test_protocol_fidelity.py` runs lmms-eval's own functions on the
same responses and requires identical verdicts and aggregates."""

from __future__ import annotations

import copy as cp
import re
from collections import defaultdict
from typing import Any

from vopd_bench.grading import ItemFacts, Verdict
from vopd_bench.grading import vopd_bench as fallback
from vopd_bench.items import LETTERS


# --- vstar_bench/utils.py: extract_answer_letter ---
def vstar_letter(response: str) -> str | None:
    response = response.strip().upper()
    patterns = [
        r"^([A-D])\s*[\.)\]]*",
        r"(?:THE\s+)?(?:ANSWER|CHOICE|OPTION)(?:\s+IS)?[\s:]+([A-D])",
        r"\(([A-D])\)",
        r"([A-D])\s*(?:\.|\)|])",
        r"(?:^|\s)([A-D])(?:\s|$)",
    ]
    for pattern in patterns:
        match = re.search(pattern, response, re.IGNORECASE)
        if match:
            return match.group(1).upper()
    letters = re.findall(r"[A-D]", response)
    if len(letters) == 1:
        return letters[0]
    if response and response[0] in "ABCD":
        return response[0]
    return None


# --- _task_utils/mcq_extract.py: extract_mcq_answer (MMStar) ---
_ANSWER_PHRASES = [
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
]
_FORMAT_PRIORITY = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4,
                    "right_paren": 3, "space": 2, "fallback": 0}


def mcq_letter(response: str, choices: list[str] | None = None) -> str:
    if not response or not response.strip():
        return ""
    all_choices = choices or ["A", "B", "C", "D", "E", "F", "G", "H"]
    text = response.strip()
    for char in [",", ".", "!", "?", ";", ":", "'", '"']:
        text = text.strip(char)
    text = " " + text + " "
    candidates: list[tuple[str, int, str]] = []
    for fmt, name in (("({})", "parentheses"), ("{}.", "period"), ("{}:", "colon"), ("{})", "right_paren"),
                      ("{} ", "space")):
        for ch in all_choices:
            if fmt.format(ch) in text:
                candidates.append((ch, text.rfind(fmt.format(ch)), name))
    text_lower = text.lower()
    for phrase in _ANSWER_PHRASES:
        idx = text_lower.find(phrase)
        if idx != -1:
            after = idx + len(phrase)
            for ch in all_choices:
                ch_pos = text.find(ch, after)
                if ch_pos != -1:
                    candidates.append((ch, ch_pos, "phrase"))
    stripped = text.strip()
    for ch in all_choices:
        if stripped.startswith(ch) and (len(stripped) == 1 or not stripped[1].isalpha()):
            candidates.append((ch, 0, "start"))
    for ch in all_choices:
        if stripped.endswith(ch) and (len(stripped) == 1 or not stripped[-2].isalpha()):
            candidates.append((ch, len(text) - 1, "end"))
    if not candidates:
        for ch in all_choices:
            if ch in text:
                candidates.append((ch, text.rfind(ch), "fallback"))
    if not candidates:
        return ""
    candidates.sort(key=lambda x: (_FORMAT_PRIORITY.get(x[2], 0), x[1]), reverse=True)
    return candidates[0][0]


# --- mmvp/utils.py: _extract_answer_letter ---
def mmvp_letter(text: str) -> str:
    text = text.strip()
    patterns = [
        r"^\s*\(?([AB])\)?\.?\s*$", r"^\s*\(?([AB])\)?[\.\s]", r"answer\s+is\s+\(?([AB])\)?",
        r"option\s+\(?([AB])\)?", r"\(?([AB])\)?(?:\s|$)",
    ]
    for pattern in patterns:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            return match.group(1).upper()
    if text and text[0].upper() in ["A", "B"]:
        return text[0].upper()
    return ""


# --- cv_bench/utils.py: _extract_answer_letter ---
def cvbench_letter(text: str) -> str:
    match = re.match(r"[\(\s]*([A-Z])[\)\.\s]*", text.strip(), flags=re.IGNORECASE)
    return match.group(1).upper() if match else ""


# --- mme_realworld/utils.py: extract_characters_regex ---
_MME_PREFIXES = ["The best answer is", "The correct answer is", "The answer is", "The answer", "The best option is",
                 "The correct option is", "Best answer:", "Best option:"]


def mme_letter(s: Any, choices: tuple[str, ...] = ("(A)", "(B)", "(C)", "(D)", "(E)")) -> str:
    if type(s) is dict:
        s = ""
    s = s.strip()
    for prefix in _MME_PREFIXES:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCDE]", s):
        return ""
    matches = re.search(r"[ABCDE]", s)
    if matches is None:
        for choice in choices:
            if s.lower() in choice.lower():
                return choice[1]
        return ""
    return matches[0]


# --- hrbench/hrbench_evals.py: HRBenchEval.can_infer (VLMEvalKit's, as copied there) ---
def hr_can_infer_option(answer: str, choices: dict[str, str]) -> str | bool:
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
            if ch in splits:
                return ch
    elif count == 0 and count_choice(splits, {"Z", ""}) == 1:
        return "Z"
    return False


def hr_can_infer_text(answer: str, choices: dict[str, str]) -> str | bool:
    answer = answer.lower()
    cands = [k for k in choices if str(choices[k]).lower() in answer]
    return cands[0] if len(cands) == 1 else False


def hr_can_infer(answer: str, choices: dict[str, str]) -> str | bool:
    answer = str(answer)
    copt = hr_can_infer_option(answer, choices)
    return copt if copt else hr_can_infer_text(answer, choices)


HR_JUDGE_TEMPLATE = (
    "You are an AI assistant who will help me to match "
    "an answer with several options of a single-choice question. "
    "You are provided with a question, several options, and an answer, "
    "and you need to find which option is most similar to the answer. "
    "If the meaning of all options are significantly different from the answer, output Z. "
    "Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
    "Example 1: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: a cute teddy bear\nYour output: A\n"
    "Example 2: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: Spider\nYour output: Z\n"
    "Example 3: \n"
    "Question: {}\nOptions: {}\nAnswer: {}\nYour output: "
)


def _options(item: ItemFacts) -> dict[str, str]:
    return {LETTERS[i]: t for i, t in enumerate(item.options or ())}


def grade(kind: str | None, response: str, item: ItemFacts) -> Verdict:
    """lmms-eval's verdict on one response (the raw response: its tasks do not strip reasoning)."""
    gold = item.answer.strip()
    if kind == "vstar":
        p = vstar_letter(response)
        return Verdict(p, p == gold.upper())
    if kind == "mmstar":
        p = mcq_letter(response, choices=["A", "B", "C", "D"])
        return Verdict(p or None, p == gold.upper())
    if kind == "mmvp":
        p = mmvp_letter(response)
        return Verdict(p or None, p == gold.upper())
    if kind == "cvbench":
        p = cvbench_letter(response)
        return Verdict(p or None, p == gold.strip("()"))
    if kind == "pope":
        p = response.lower().strip()
        return Verdict(p, p == gold.lower(), facets={"prediction": p})
    if kind in ("mme_realworld", "mme_realworld_cn"):
        p = mme_letter(response)
        return Verdict(p or None, p.lower() == gold.lower() or gold.lower() in p.lower())
    if kind == "hrbench":
        options = _options(item)
        ret = hr_can_infer(response.strip(), dict(options))
        if not ret:
            opts = "".join(f"{k}. {v}\n" for k, v in options.items())  # hrbench_evals.py build_prompt
            return Verdict(None, None, "judge", HR_JUDGE_TEMPLATE.format(item.question, opts, response.strip()))
        return Verdict(str(ret), gold.lower() == str(ret).lower())
    return fallback.grade(kind, response, item)


def aggregate(kind: str | None, rows: list[dict[str, Any]]) -> dict[str, float]:
    """lmms-eval's aggregate metrics of one task (fractions), from rows {correct, answer, facets...}
    (rows whose verdict is undecided are left out)."""
    rows = [r for r in rows if r.get("correct") is not None]
    if not rows:
        return {}
    score = [float(bool(r["correct"])) for r in rows]
    if kind == "mmstar":
        return {"average": _mean_of_groups(rows, "l2_category")}
    if kind == "mmvp":
        pairs: dict[Any, list[bool]] = defaultdict(list)
        for r in rows:
            pairs[r.get("pair")].append(bool(r["correct"]))
        full = [v for v in pairs.values() if len(v) == 2]
        return {"mmvp_accuracy": sum(score) / len(score),
                "mmvp_pair_accuracy": sum(all(v) for v in full) / len(full) if full else 0.0}
    if kind == "hrbench":
        out = {"average": _mean_of_groups(rows, "cycle")}
        for cat in ("single", "cross"):
            sub = [r for r in rows if str(r.get("category")) == cat]
            if sub:
                out[cat] = _mean_of_groups(sub, "cycle")
        return out
    if kind == "pope":
        return pope_metrics([str(r.get("prediction", "")) for r in rows], [str(r["answer"]).lower() for r in rows],
                            score)
    if kind == "vstar":
        return {"vstar_overall_acc": sum(score) / len(score)}
    if kind == "cvbench":
        return {"cv_bench_acc": sum(score) / len(score)}
    if kind in ("mme_realworld", "mme_realworld_cn"):
        return {"mme_realworld_score": sum(score) / len(score)}
    return {}


def _mean_of_groups(rows: list[dict[str, Any]], key: str) -> float:
    groups: dict[Any, list[float]] = defaultdict(list)
    for r in rows:
        groups[r.get(key)].append(float(bool(r["correct"])))
    means = [sum(v) / len(v) for v in groups.values()]
    return sum(means) / len(means)


def pope_metrics(pred: list[str], gold: list[str], score: list[float]) -> dict[str, float]:
    """lmms-eval's POPE aggregates (pope/utils.py): accuracy, precision and recall of "yes" predictions,
    F1, and the yes ratio (of the ground truth, as lmms-eval computes it)."""
    tp = sum(1 for p, g in zip(pred, gold) if g == "yes" and p == "yes")
    fp = sum(1 for p, g in zip(pred, gold) if g == "no" and p == "yes")
    fn = sum(1 for p, g in zip(pred, gold) if g == "yes" and p == "no")
    precision = tp / (tp + fp) if tp + fp else 0
    recall = tp / (tp + fn) if tp + fn else 0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0
    yes, no = gold.count("yes"), gold.count("no")
    return {"pope_accuracy": sum(score) / len(score), "pope_precision": precision, "pope_recall": recall,
            "pope_f1_score": f1, "pope_yes_ratio": yes / (yes + no) if yes + no else 0}
