"""Answer extraction and scoring. `extract_choice` is a public contract: it returns the chosen
option letter, or None when the response does not state one unambiguously (a parse failure,
scored wrong)."""

from __future__ import annotations

import re
import string
import unicodedata

from vopd_bench.items import LETTERS

# An explicit final answer: "Answer: B", "the answer is (C)", "Final answer - d", "答案：B".
_EXPLICIT = re.compile(
    r"(?i:final\s+answer|correct\s+answer|answer|option|choice|答案|选项)(?i:\s+is|是)?\s*[:：\-–]?\s*"
    r"(?:\(([A-Za-z])\)|\[([A-Za-z])\]|\*\*([A-Za-z])\*\*|([A-Z])|([a-z])(?=[.)\]]?\s*$))(?![A-Za-z])",
    re.MULTILINE,
)
# A letter standing alone as a token: "(B)", "B.", "B)", "**B**", "B" — upper case only here.
_STANDALONE = re.compile(r"(?<![A-Za-z'’])[\(\[\*]*([A-J])[\)\]\*]*(?![A-Za-z'’])")
_WORD = re.compile(r"[A-Za-z]+")


def extract_choice(response: str, options: list[str] | None) -> str | None:
    """The option letter a response chose, or None if it states none (or several) unambiguously.

    Rules, in order: (1) an explicit "answer: X" phrase wins (the last one, if repeated; a letter
    outside the options there is a failure);
    (2) a response that is only a letter (with brackets/punctuation) is that letter;
    (3) a response that equals one option's text (normalised) is that option;
    (4) exactly one distinct standalone capital letter among the valid ones (not the article "A"
    starting a sentence, not the first letter of a word such as "Blue" or "Answer");
    (5) exactly one option text mentioned as a whole phrase. Otherwise None.
    """
    if not response:
        return None
    n = len(options) if options else 4
    valid = LETTERS[:n]
    text = response.strip()

    explicit = [next(g for g in m.groups() if g).upper() for m in _EXPLICIT.finditer(text)]
    if explicit:  # an explicit answer wins; an invalid letter there is a parse failure
        return explicit[-1] if explicit[-1] in valid else None

    bare = text.strip(" \t\n.:;,!()[]*'\"`")
    if len(bare) == 1 and bare.upper() in valid and (bare.isupper() or len(text) <= 3):
        return bare.upper()

    if options:
        norm = normalize_text(text)
        for i, opt in enumerate(options):
            if norm and norm == normalize_text(opt):
                return LETTERS[i]

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


def _is_article(text: str, start: int, end: int) -> bool:
    """'A' used as the English article: followed by a space and a lower-case word."""
    rest = text[end:]
    return bool(re.match(r"\s+[a-z]", rest)) and not re.match(r"\s*[\).:\]]", rest)


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(s: str) -> str:
    """Lower case, NFKC, no punctuation, no articles, single spaces (the VQA-style normalisation)."""
    s = unicodedata.normalize("NFKC", s).lower().strip()
    s = s.translate(str.maketrans("", "", string.punctuation + "。，、：；！？"))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def extract_yesno(response: str) -> str | None:
    """'yes' / 'no' from a response (POPE-style), or None if neither or both appear."""
    words = set(_WORD.findall(response.lower()))
    yes, no = "yes" in words, "no" in words
    if yes == no:
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
        parsed = normalize_text(response)
        return (parsed or None), bool(parsed) and parsed == normalize_text(answer)
    raise ValueError(f"unknown scorer {scorer!r}")
