"""The released evaluation of VisionOPD/Vision-OPD (`eval/infer.py`, `eval/judge_qwenlm.py`,
`eval/cal_acc.py`), transcribed: the answer is the text after the last `</think>`, then the last
`<answer>…</answer>`, else from `Answer:` on (`normalize_model_answer`, then `extract_answer`); rule
grading in its order (POPE's yes/no, MMVP's option, mathruler's `grade_answer`, the first-letter rule
for multiple choice); what the rules do not accept goes to its LLM judge (`PROMPT_TEMPLATE`, Yes/No),
here an undecided verdict with that prompt. Its gold answers are the strings its `prepare_data.py`
writes (a letter; "(A)" for CV-Bench; "(a)" for MMVP; "yes"/"no" for POPE)."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.grading import ItemFacts, Verdict

MCQ = {"hrbench", "vstar", "mme_realworld", "mme_realworld_cn", "mmstar", "cvbench"}
PROMPT_TEMPLATE = (
    "Your task is to judge whether the response expresses the same meaning "
    "as the answer of a question.\n"
    "The question is: {question}\n"
    "The answer is: {gt}\n"
    "The response is: {response}\n"
    "Please check and compare them and then judge. "
    "If the response is correct, your output should be Yes. "
    "Otherwise, your output should be No. Directly give me your output."
)


def normalize_model_answer(raw: str) -> str:
    """infer.py normalize_model_answer."""
    think_end = raw.rfind("</think>")
    if think_end != -1:
        raw = raw[think_end + len("</think>"):].strip()
    start = raw.rfind("<answer>")
    end = raw.find("</answer>", start + len("<answer>")) if start != -1 else -1
    if start != -1 and end != -1 and end > start:
        return raw[start + len("<answer>"):end].strip()
    if "Answer:" in raw:
        return raw[raw.find("Answer:"):].strip()
    return raw.strip()


def extract_answer(raw: str) -> str:
    """judge_qwenlm.py extract_answer."""
    if "<answer>" in raw:
        start, end = raw.find("<answer>"), raw.find("</answer>")
        if start != -1 and end != -1:
            return raw[start + len("<answer>"):end].strip()
    if "Answer:" in raw:
        return raw[raw.find("Answer:"):].strip()
    return raw.strip()


def extract_first_option(text: str) -> str:
    if not text:
        return ""
    for pattern in (r"\(([A-Z])\)", r"([A-Z])[\.\)\s]", r"([A-Z])"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return ""


def extract_mcq_option(answer: Any) -> str:
    if not isinstance(answer, str) or not answer:
        return ""
    match = re.match(r"^[ (\[]*([A-F])(?:(?=$)|[\.\)\]]|(?:[\:\-]\s+))", answer.strip())
    return match.group(1) if match else ""


def pope_extract(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return ""
    t = text.lstrip("*").strip()
    if t.lower().startswith("answer"):
        t = t.split("answer", 1)[1].lstrip(":").lstrip("*").strip()
    t_lower = t.lower()
    if t_lower.startswith("yes"):
        return "yes"
    if t_lower.startswith("no"):
        return "no"
    last = t.rstrip(".").rstrip("*").strip().split()[-1] if t.strip() else ""
    last = last.lstrip("*").rstrip("*").lower()
    if last in ("yes", "no"):
        return last
    return text.strip()


def mmvp_extract(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return ""
    t = text.strip().lower()
    match = re.search(r"\(([ab])\)", t)
    if match:
        return f"({match.group(1)})"
    match = re.search(r"\b([ab])\b", t)
    if match:
        return f"({match.group(1)})"
    return ""


def first_letter_match(gt: str, answer: str) -> bool:
    gt_val, pred_val = extract_mcq_option(gt), extract_first_option(answer)
    return bool(gt_val and pred_val and gt_val == pred_val)


def gold(kind: str | None, answer: str) -> str:
    """The gold string as Vision-OPD's prepare_data.py writes it for this benchmark."""
    a = answer.strip()
    if kind == "cvbench":
        return f"({a.strip('()').upper()})"
    if kind == "mmvp":
        return f"({a.strip('()').lower()})"
    if kind == "pope":
        return a.lower()
    if kind in MCQ:
        return a.upper()
    return a


def _grade_answer() -> Any:
    try:
        from mathruler.grader import grade_answer
    except ImportError as e:
        raise UserError(f"protocol vision-opd grades with mathruler ({e}); install it: pip install 'vopd-bench[protocols]' "
                        "(mathruler pylatexenc)") from None
    return grade_answer


def check() -> None:
    """mathruler is importable (a UserError naming the extra otherwise)."""
    _grade_answer()


def judge_says_yes(reply: str) -> bool:
    """cal_acc.py is_correct: the judge's reply, stripped and lower-cased, is exactly "yes"."""
    return str(reply or "").strip().lower() == "yes"


def grade(kind: str | None, response: str, item: ItemFacts) -> Verdict:
    grade_answer = _grade_answer()
    extracted = extract_answer(normalize_model_answer(response or ""))
    gt = gold(kind, item.answer)
    if kind == "pope":
        try:
            pred = pope_extract(extracted)
        except IndexError:  # "Answer: yes": its split on lower-case "answer" fails and judge_qwenlm.py stops;
            pred = ""  # here that rule just does not match (docs/protocols.md: the one deviation)
        if pred == gt.strip().lower():
            return Verdict(pred, True, "pope_exact")
    if kind == "mmvp":
        pred = mmvp_extract(extracted)
        if pred and pred == gt.strip().lower():
            return Verdict(pred, True, "mmvp_option")
    try:
        if grade_answer(gt, extracted):
            return Verdict(extracted or None, True, "mathruler")
    except Exception:  # noqa: BLE001 - Vision-OPD treats any grader failure as "not correct by this rule"
        pass
    if kind in MCQ:
        try:
            if first_letter_match(gt, extracted):
                return Verdict(extract_first_option(extracted), True, "first letter")
        except Exception:  # noqa: BLE001
            pass
    question = (item.prompt or item.question).replace("<image>", "")
    return Verdict(extracted or None, None, "judge", PROMPT_TEMPLATE.format(gt=gt, response=extracted, question=question))


def aggregate(kind: str | None, rows: list[dict[str, Any]]) -> dict[str, float]:
    """cal_acc.py: plain means (V*, HR-Bench, MME-RealWorld, MMStar, MMVP, generic); POPE accuracy, precision,
    recall, F1, yes ratio (of the gold answers); CV-Bench the mean of 2D and 3D; VisualProbe the mean over
    Easy/Medium/Hard (an absent level counts 0, as there). Undecided rows are left out."""
    rows = [r for r in rows if r.get("correct") is not None]
    if not rows:
        return {}
    ok = [bool(r["correct"]) for r in rows]
    if kind == "pope":
        gold_ = [str(r["answer"]).lower() for r in rows]
        tp = sum(1 for g, c in zip(gold_, ok) if g == "yes" and c)
        fp = sum(1 for g, c in zip(gold_, ok) if g == "no" and not c)
        fn = sum(1 for g, c in zip(gold_, ok) if g == "yes" and not c)
        tn = len(ok) - tp - fp - fn
        p = tp / (tp + fp) if tp + fp else 0.0
        r_ = tp / (tp + fn) if tp + fn else 0.0
        return {"accuracy": (tp + tn) / len(ok), "precision": p, "recall": r_,
                "f1": 2 * p * r_ / (p + r_) if p + r_ else 0.0, "yes_ratio": gold_.count("yes") / len(ok)}
    if kind == "cvbench":
        by: dict[str, list[bool]] = defaultdict(list)
        for r, c in zip(rows, ok):
            by[str(r.get("type") or "unknown")].append(c)
        acc2 = sum(by["2D"]) / len(by["2D"]) if by["2D"] else 0.0
        acc3 = sum(by["3D"]) / len(by["3D"]) if by["3D"] else 0.0
        return {"accuracy": (acc2 + acc3) / 2}
    if kind == "visualprobe":
        by = defaultdict(list)
        for r, c in zip(rows, ok):
            by[str(r.get("category") or "unknown")].append(c)
        accs = [sum(by[c]) / len(by[c]) if by[c] else 0.0 for c in ("Easy", "Medium", "Hard")]
        return {"accuracy": sum(accs) / 3}
    return {"accuracy": sum(ok) / len(ok)}
