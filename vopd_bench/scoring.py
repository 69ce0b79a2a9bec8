"""Answer extraction and scoring (the `vopd-bench` protocol). `extract_choice` is a public contract: it
returns the chosen option letter, or None when the response does not state one unambiguously (a parse
failure, scored wrong).

Every extractor first reduces a response to its final answer (`final_answer`): a reasoning block
(`<think>…</think>`, `<thinking>`, `<reasoning>`, `◁think▷…◁/think▷`; an unclosed one makes the rest of
the response reasoning) is dropped and an `<answer>…</answer>` block, where there is one, is the answer.
The record keeps the whole response; `truncated` tells a response cut off inside its reasoning."""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass

from vopd_bench.items import LETTERS

# reasoning blocks: (open, close) tag pairs, matched case-insensitively
_REASONING_TAGS = (("<think>", "</think>"), ("<thinking>", "</thinking>"), ("<reasoning>", "</reasoning>"),
                   ("◁think▷", "◁/think▷"))
_OPEN = re.compile("|".join(re.escape(o) for o, _ in _REASONING_TAGS), re.IGNORECASE)
_CLOSE = re.compile("|".join(re.escape(c) for _, c in _REASONING_TAGS), re.IGNORECASE)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Split:
    """A response cut into its reasoning and its final answer; `unclosed`: the reasoning never ended."""

    reasoning: str
    answer: str
    unclosed: bool = False


def split_reasoning(response: str) -> Split:
    """Reasoning and final answer of a response. The text after the last closing tag is the answer (a
    chat template that opens `<think>` in the prompt leaves only the closing tag in the response); an
    opening tag never closed makes everything after it reasoning; an `<answer>` block is the answer."""
    text = response or ""
    closes = list(_CLOSE.finditer(text))
    if closes:
        last = closes[-1]
        reasoning, answer = text[: last.start()], text[last.end():]
        unclosed = False
    else:
        m = _OPEN.search(text)
        if m:
            reasoning, answer, unclosed = text[m.end():], text[: m.start()], True
        else:
            reasoning, answer, unclosed = "", text, False
    blocks = [b.strip() for b in _ANSWER_BLOCK.findall(answer)]
    if blocks and any(blocks):
        answer = [b for b in blocks if b][-1]
    return Split(reasoning, answer.strip(), unclosed)


def final_answer(response: str) -> str:
    """The part of a response extraction reads: no reasoning block; the `<answer>` block where given."""
    return split_reasoning(response).answer


def is_truncated(response: str | None, n_tokens: int | None, max_new_tokens: int | None,
                 finish_reason: str | None = None) -> bool:
    """Whether a response was cut off by the token limit inside its reasoning: an unclosed reasoning block
    and the backend said it stopped on length (or, not knowing why it stopped, it used every token)."""
    if not response or not split_reasoning(response).unclosed:
        return False
    if finish_reason is not None:
        return finish_reason == "length"
    return n_tokens is not None and max_new_tokens is not None and n_tokens >= max_new_tokens


# A decided answer: "Answer: B", "the answer is (C)", "Final answer - d", "答案：B", "the correct option is C".
_EXPLICIT = re.compile(
    r"(?i:final\s+answer|correct\s+answer|best\s+answer|answer|correct\s+(?:option|choice)|答案)"
    r"(?i:\s+(?:is|would\s+be|should\s+be)|是|为)?\s*[:：\-–]?\s*"
    r"(?:\(([A-Za-z])\)|\[([A-Za-z])\]|\*\*([A-Za-z])\*\*|([A-Z])|([a-z])(?=[.)\]]?\s*$))(?![A-Za-z])",
    re.MULTILINE,
)
# A letter standing alone as a token: "(B)", "B.", "B)", "**B**", "B" — upper case only here.
_STANDALONE = re.compile(r"(?<![A-Za-z'’])[\(\[\*]*([A-J])[\)\]\*]*(?![A-Za-z'’])")
# The response opens with a letter: "B. …", "(C) …", "**D**: …", "B - …", "B\n…".
_LEADING = re.compile(r"^[\s\*\"'`]*[\(\[\*]*([A-J])[\)\]\*]*(?![A-Za-z0-9'’])", re.IGNORECASE)
# Two options named as alternatives or together: "A and B", "either A or C", "(A) or (B)", "A/B", "A, B".
_TWO = re.compile(
    r"(?<![A-Za-z'’])[\(\[\*]*([A-J])[\)\]\*]*\s*(?:,|/|&|\band\b|\bor\b|和|或)\s*(?:(?i:option|choice)\s+)?"
    r"[\(\[\*]*([A-J])[\)\]\*]*(?![A-Za-z'’])"
)
_WORD = re.compile(r"[A-Za-z]+")


def extract_choice(response: str, options: list[str] | None) -> str | None:
    """The option letter a response chose, or None if it states none (or several) unambiguously.

    The response is first reduced to its final answer (`final_answer`: reasoning dropped, `<answer>`
    honoured). Rules, in order: (1) an explicit "answer: X" phrase wins (the last one, if repeated; a
    letter outside the options there, or two options named there, is a failure);
    (2) a response that is only a letter (with brackets/punctuation) is that letter;
    (3) a response that opens with a letter ("B. … option A would be …") is that letter, unless it
    names two options ("A and B", "A or B");
    (4) a response that equals one option's text (normalised) is that option;
    (5) two options named as alternatives ("either A or C", "A and B") is a failure;
    (6) exactly one distinct standalone capital letter among the valid ones (not the article "A"
    starting a sentence, not the first letter of a word such as "Blue" or "Answer");
    (7) exactly one option text mentioned as a whole phrase. Otherwise None.
    """
    if not response:
        return None
    n = len(options) if options else 4
    valid = LETTERS[:n]
    text = final_answer(response)
    if not text:
        return None

    explicit = [(m, next(g for g in m.groups() if g).upper()) for m in _EXPLICIT.finditer(text)]
    if explicit:  # an explicit answer wins; an invalid letter, or two letters, there is a parse failure
        m, letter = explicit[-1]
        if _two_from(text, m.start(m.lastindex or 0)):
            return None
        return letter if letter in valid else None

    bare = text.strip(" \t\n.:;,!()[]*'\"`")
    if len(bare) == 1 and bare.upper() in valid and (bare.isupper() or len(text) <= 3):
        return bare.upper()

    lead = _LEADING.match(text)
    if (lead and lead.group(1).isupper() and lead.group(1) in valid and not _two_from(text, lead.start(1))
            and not (lead.group(1) == "A" and _is_article(text, lead.start(1), lead.end(1)))):
        return lead.group(1)

    if options:
        norm = normalize_text(text)
        for i, opt in enumerate(options):
            if norm and norm == normalize_text(opt):
                return LETTERS[i]

    if any(m.group(1) != m.group(2) and {m.group(1), m.group(2)} <= set(valid) for m in _TWO.finditer(text)):
        return None

    letters = []
    for m in _STANDALONE.finditer(text):
        ch = m.group(1)
        if ch not in valid:
            continue
        if ch == "A" and _is_article(text, m.start(1), m.end(1)):
            continue
        letters.append(ch)
    if len(set(letters)) == 1:
        return letters[0]
    if len(set(letters)) > 1:
        return None

    if options:
        norm = f" {normalize_text(text)} "
        hits = {LETTERS[i] for i, opt in enumerate(options) if normalize_text(opt) and f" {normalize_text(opt)} " in norm}
        if len(hits) == 1:
            return hits.pop()
    return None


def _two_from(text: str, start: int) -> bool:
    """Whether two different options are named as a pair starting at `start` ("A and B", "(A) or (C)")."""
    while start > 0 and text[start - 1] in "([*":
        start -= 1
    m = _TWO.match(text, start)
    return bool(m and m.group(1) != m.group(2))


def _is_article(text: str, start: int, end: int) -> bool:
    """'A' used as the English article: followed by a space and a lower-case word (not "and"/"or" + a
    letter, which names two options)."""
    rest = text[end:]
    if re.match(r"\s+(?:and|or)\s+[\(\[\*]*[A-J](?![A-Za-z])", rest):
        return False
    return bool(re.match(r"\s+[a-z]", rest)) and not re.match(r"\s*[\).:\]]", rest)


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(s: str) -> str:
    """Lower case, NFKC, no punctuation, no articles, single spaces (the VQA-style normalisation)."""
    s = unicodedata.normalize("NFKC", s).lower().strip()
    s = s.translate(str.maketrans("", "", string.punctuation + "。，、：；！？"))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


_YES = {"yes", "yeah", "yep", "yup"}
_NO = {"no", "nope", "nah"}
_ZH_YES = ("是", "有", "对", "正确")
_ZH_NO = ("不", "否", "没", "无", "错")


def extract_yesno(response: str) -> str | None:
    """'yes' / 'no' from a response (POPE-style), or None if neither or both appear.

    Reads the final answer (no reasoning block); "Nope"/"Yeah" count; a Chinese answer is read from its
    first character (是/有 yes, 不/否/没 no); where both words appear, one opening the answer and followed
    by punctuation decides ("No, there is no …, yes" is no)."""
    text = final_answer(response or "").strip()
    low = text.lower()
    words = _WORD.findall(low)
    yes, no = bool(_YES & set(words)), bool(_NO & set(words))
    if not words:
        head = text.lstrip(" *\"'“‘(（【[")
        if head.startswith(_ZH_NO):
            return "no"
        if head.startswith(_ZH_YES):
            return "yes"
        return None
    if yes and no:
        m = re.match(r"[\s\*\"'`]*([a-z]+)\s*[,.;:!—–-]", low)
        if m and m.group(1) in _YES | _NO:
            return "yes" if m.group(1) in _YES else "no"
        return None
    if not yes and not no:
        return None
    return "yes" if yes else "no"


def score(scorer: str, response: str, answer: str, options: list[str] | None) -> tuple[str | None, bool]:
    """(parsed answer or None, correct) for one response under the task's scorer."""
    if scorer == "choice":
        parsed = extract_choice(response, options)
        return parsed, parsed is not None and parsed == answer.strip().upper()
    if scorer == "yesno":
        parsed = extract_yesno(response)
        return parsed, parsed is not None and parsed == answer.strip().lower()
    if scorer == "exact":
        parsed = normalize_text(final_answer(response))
        return (parsed or None), bool(parsed) and parsed == normalize_text(answer)
    raise ValueError(f"unknown scorer {scorer!r}")
