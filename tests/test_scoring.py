"""Answer extraction: a table of tricky responses (the contract `extract_choice`)."""

import pytest

from vopd_bench.scoring import extract_choice, extract_yesno, normalize_text, score

OPTS = ["red", "green", "blue", "yellow"]  # A B C D


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("It is red. Answer: A", "A"),
        ("The answer is (D).", "D"),
        ("Final answer: c", "C"),
        ("answer (b)", "B"),
        ("**C**", "C"),
        ("(B)", "B"),
        ("B.", "B"),
        ("b", "B"),
        ("C. blue", "C"),
        ("答案：D", "D"),
        # "Blue" is an option text (C), never the letter B
        ("Blue", "C"),
        ("Blue is the colour of the object.", "C"),
        # the word "Answer" never parses as a letter
        ("Answer", None),
        ("Answer:", None),
        # a sentence's first capital / the article "A" is not an answer
        ("A small object sits in the corner.", None),
        ("I think it is B or C", None),
        ("It is not clear from the image.", None),
        ("", None),
        # explicit answer wins over mentions; an explicit invalid letter is a failure
        ("It looks green but the answer is D", "D"),
        ("It is green. Answer: E", None),
        ("Answer: A. Actually, answer: B", "B"),
        ("green", "B"),
        ("I see a yellow shape", "D"),
        ("red or green", None),
    ],
)
def test_extract_choice_table(response, expected):
    assert extract_choice(response, OPTS) == expected


def test_five_options_accept_e():
    opts = ["a", "b", "c", "d", "e"]
    assert extract_choice("E", opts) == "E"
    assert extract_choice("The answer is E.", opts) == "E"
    assert extract_choice("E", OPTS) is None


def test_yesno_and_exact():
    assert extract_yesno("Yes, there is a dog.") == "yes"
    assert extract_yesno("No.") == "no"
    assert extract_yesno("yes and no") is None
    assert normalize_text("The Red  Car!") == "red car"
    assert score("exact", "A red car.", "red car", None) == ("red car", True)
    assert score("choice", "Answer: B", "b", OPTS) == ("B", True)
    assert score("choice", "nothing", "A", OPTS) == (None, False)
    assert score("yesno", "No", "yes", None) == ("no", False)


# ------------------------------------------------------------------ responses with reasoning (issue 17 part 4)
MATERIALS = ["metal", "wood", "glass", "plastic"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # an answer stated first, then explained: the first answer, not an option named in the explanation
        ("B. The object is wooden; option A (metal) and option D (plastic) do not match.", "B"),
        ("(C) glass - option B would be opaque.", "C"),
        ("**D**: plastic. Option A is shiny metal.", "D"),
        ("B is correct because option A is too shiny.", "B"),
        # two options named: a parse failure, not one of them
        ("A and B", None),
        ("either A or C", None),
        ("A or B", None),
        ("(A) or (B)", None),
        ("The answer is A or B.", None),
        ("A, B", None),
        # reasoning blocks are dropped before extraction (every common variant)
        ("<think>Option A looks metallic... no.</think>B", "B"),
        ("<thinking>maybe A</thinking>\nThe answer is C.", "C"),
        ("<reasoning>A? D?</reasoning> D", "D"),
        ("◁think▷A is wrong◁/think▷B", "B"),
        ("Let me see, A is metal.</think>C", "C"),  # the template opened <think> in the prompt
        ("<think>Option A is", None),  # unclosed: all reasoning, no answer
        ("<answer>D</answer>", "D"),
        ("<think>A</think><answer>C</answer>", "C"),
        ("Reasoning... <answer>B", "B"),
    ],
)
def test_reasoning_safe_extraction(response, expected):
    assert extract_choice(response, MATERIALS) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [("Nope.", "no"), ("No.", "no"), ("Yeah, there is one.", "yes"), ("是", "yes"), ("是的，有。", "yes"),
     ("不是", "no"), ("没有", "no"), ("No, there is no dog; yes, a cat.", "no"), ("<think>yes?</think>No", "no"),
     ("<think>is there one", None), ("Yes and no.", None)],
)
def test_yesno_variants(response, expected):
    assert extract_yesno(response) == expected


def test_truncation_and_split():
    from vopd_bench.scoring import is_truncated, split_reasoning

    s = split_reasoning("<think>a</think> <answer>B</answer>")
    assert (s.reasoning, s.answer, s.unclosed) == ("<think>a", "B", False)
    assert split_reasoning("<think>cut").unclosed
    assert is_truncated("<think>cut", 32, 32) and not is_truncated("<think>cut", 5, 32)
    assert not is_truncated("B", 32, 32)  # a full budget without reasoning is not a cut-off reasoning
    assert score("exact", "<think>a cat?</think>A red car.", "red car", None) == ("red car", True)
