"""The LLM judge's prompts and the rules that turn its reply into a verdict.

`vision-opd` is the judge prompt of the released Vision-OPD evaluation, transcribed character for
character from `eval/judge_qwenlm.py` (`PROMPT_TEMPLATE`, VisionOPD/Vision-OPD), with its decision rule
from `eval/cal_acc.py` (`is_correct`): the whole reply, stripped of surrounding whitespace and lower-cased,
must equal ``yes``. `generic` is a short yes/no grading prompt of our own that also lists the options.

Decision rules (`decide(rule, reply)` -> True, False or None = neither yes nor no):

- ``exact`` (the released rule): ``reply.strip().lower()`` is ``yes`` -> True, ``no`` -> False, anything
  else ("Yes.", "**Yes**", a sentence) -> None. The released script scores every reply that is not
  exactly "yes" as wrong; here "no" is the only reply that is wrong, the rest are undecided (recorded as
  an error, or scored wrong with ``on_undecided="wrong"`` to reproduce the released numbers exactly).
- ``lenient``: reasoning before the last ``</think>`` dropped, then surrounding markdown, quotes and
  punctuation stripped; ``yes``/``no`` alone, or as the first word followed by a non-letter ("Yes, it
  matches"), decides. Anything else -> None.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DECISION_RULES = ("exact", "lenient")


@dataclass(frozen=True)
class JudgePrompt:
    """A judge prompt: a `str.format` template over {question}, {options}, {answer}, {response}, the decision
    rule its replies are read with, and where it comes from."""

    name: str
    template: str
    decision: str  # one of DECISION_RULES
    source: str
    uses_extracted: bool = True  # fill {response} with the protocol's extracted answer when there is one

    def render(self, question: str, answer: str, response: str, options: list[str] | None = None) -> str:
        """The prompt text for one item (values are substituted as they are; braces in them are kept)."""
        return self.template.format(question=question, answer=answer, response=response,
                                    options=format_options(options))

    @property
    def template_hash(self) -> str:
        """sha256 of the template (recorded in config.json: a changed prompt is a changed protocol)."""
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]


def format_options(options: list[str] | None) -> str:
    """Options as lettered lines ("A. red"), with a trailing newline; empty when there are none."""
    if not options:
        return ""
    return "".join(f"{chr(ord('A') + i)}. {o}\n" for i, o in enumerate(options))


# eval/judge_qwenlm.py, PROMPT_TEMPLATE, with {gt} named {answer}. The released script fills
# {question} with the query the model saw minus "<image>" (options and prompt suffix included) and
# {response} with its extracted answer (text after the last </think>, then <answer>..</answer>, else
# from "Answer:" on). It ignores {options}: they are already in the question.
VISION_OPD = JudgePrompt(
    name="vision-opd",
    template=(
        "Your task is to judge whether the response expresses the same meaning "
        "as the answer of a question.\n"
        "The question is: {question}\n"
        "The answer is: {answer}\n"
        "The response is: {response}\n"
        "Please check and compare them and then judge. "
        "If the response is correct, your output should be Yes. "
        "Otherwise, your output should be No. Directly give me your output."
    ),
    decision="exact",
    source="VisionOPD/Vision-OPD eval/judge_qwenlm.py PROMPT_TEMPLATE; eval/cal_acc.py is_correct",
)

GENERIC = JudgePrompt(
    name="generic",
    template=(
        "You are grading an answer to a question about an image.\n"
        "Question: {question}\n"
        "{options}"
        "Correct answer: {answer}\n"
        "Response: {response}\n"
        "Does the response give the correct answer? Reply with one word: Yes or No."
    ),
    decision="lenient",
    source="vopd-bench",
    uses_extracted=False,  # the whole response (reasoning stripped): the judge is asked where extraction failed
)

PROMPTS: dict[str, JudgePrompt] = {p.name: p for p in (VISION_OPD, GENERIC)}

_THINK_END = "</think>"
_EDGE = re.compile(r"^[\s*_`'\"“”‘’.,:;!()\[\]]+|[\s*_`'\"“”‘’.,:;!()\[\]]+$")
_FIRST = re.compile(r"^(yes|no)(?![a-z])")


def decide(rule: str, reply: str | None) -> bool | None:
    """The verdict a judge reply gives under `rule`: True (yes), False (no) or None (neither)."""
    if reply is None:
        return None
    if rule == "exact":
        word = reply.strip().lower()
        return True if word == "yes" else False if word == "no" else None
    if rule == "lenient":
        text = reply[reply.rfind(_THINK_END) + len(_THINK_END):] if _THINK_END in reply else reply
        text = _EDGE.sub("", text.strip()).lower()
        m = _FIRST.match(text)
        return None if m is None else m.group(1) == "yes"
    raise ValueError(f"unknown decision rule {rule!r} (known: {', '.join(DECISION_RULES)})")
