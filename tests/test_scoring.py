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
