"""One-batch-ahead prefetch: same records in the same order, errors surfaced as before, same model outputs."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import make_dataset, records

import vopd_bench.evaluate as E
from vopd_bench.backends import BackendConfig, GenerationKwargs, Request, Response
from vopd_bench.backends.base import Prepared
from vopd_bench.protocol import load_spec, render


def test_prefetched_keeps_order_and_makes_the_next_while_the_current_is_used():
    calls = [threading.Event() for _ in range(7)]
    threads: set[str] = set()
    n = iter(range(7))

    def make():
        k = next(n)
        threads.add(threading.current_thread().name)
        calls[k].set()
        return k if k < 5 else None

    got = []
    for x in E.prefetched(make):
        got.append(x)
        assert calls[x + 1].wait(5), "the next result was not being made while this one was in use"
    assert got == [0, 1, 2, 3, 4]
    assert threads and all(t.startswith("vopd-prefetch") for t in threads)


@pytest.mark.parametrize("enabled", [True, False])
def test_prefetched_raises_an_exception_of_make_in_order(enabled):
    n = iter(range(10))

    def make():
        k = next(n)
        if k == 3:
            raise ValueError("boom at 3")
        return k

    got = []
    with pytest.raises(ValueError, match="boom at 3"):
        for x in E.prefetched(make, enabled):
            got.append(x)
    assert got == [0, 1, 2]


class FakeBackend:
    """Answers with a letter that depends on the request; optionally prepares (recording the thread)."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def generate(self, requests, gen):
        self.calls.append([r.key for r in requests])
        return [Response(text="ABCD"[int(r.key.split("-")[1]) % 4]) for r in requests]

    def describe(self):
        return {"model": "fake", "backend": "fake", "fingerprint": "fake"}


class FakePreparing(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.prepared_in: set[str] = set()

    def prepare(self, requests):
        self.prepared_in.add(threading.current_thread().name)
        return Prepared(requests, inputs=[r.key for r in requests])

    def generate_prepared(self, prepared, gen):
        assert prepared.inputs == [r.key for r in prepared.requests]
        return self.generate(prepared.requests, gen)


def _dataset(tmp_path, corrupt: int, boxless: int, n: int = 9):
    data, spec = make_dataset(tmp_path / "fx", n=n)
    (data / "images" / f"{corrupt}.png").write_bytes(b"\x89PNG not really")
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines()]
    rows[boxless]["boxes"] = []
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, spec


def _run(data, spec, out, backend, prefetch: bool, **kw):
    cfg = E.EvalConfig(tasks=[str(spec)], data={str(spec): str(data)}, out=str(out), progress=False,
                       prefetch=prefetch, backend=BackendConfig(batch_size=2), **kw)
    return E.run_eval(cfg, backend)


@pytest.mark.parametrize("backend_cls", [FakeBackend, FakePreparing])
def test_records_and_batches_identical_with_and_without_prefetch(tmp_path, backend_cls):
    data, spec = _dataset(tmp_path, corrupt=3, boxless=6)
    on, off = backend_cls(), backend_cls()
    _run(data, spec, tmp_path / "on", on, True)
    _run(data, spec, tmp_path / "off", off, False)
    assert on.calls == off.calls  # same batches, same order
    for view in ("full", "crop"):
        a = (tmp_path / "on" / "samples" / "fx" / f"{view}.jsonl").read_bytes()
        assert a == (tmp_path / "off" / "samples" / "fx" / f"{view}.jsonl").read_bytes()
    # the undecodable image's record comes when rendering reached it, before the batch it interrupted
    assert [r["id"][3:] for r in records(tmp_path / "on", "fx", "full")] == list("013245678")
    assert [r["id"][3:] for r in records(tmp_path / "on", "fx", "crop")] == list("01324578")  # 6: no box
    if backend_cls is FakePreparing:
        assert on.prepared_in and all(t.startswith("vopd-prefetch") for t in on.prepared_in)


@pytest.mark.parametrize("prefetch", [True, False])
def test_rendering_exception_surfaces_after_earlier_records_and_resume_completes(tmp_path, monkeypatch, prefetch):
    data, spec = _dataset(tmp_path, corrupt=5, boxless=8)
    real = E.render

    def failing(spec_, item, view, seed=0):
        if item.id == "fx-6":
            raise RuntimeError("render bug")
        return real(spec_, item, view, seed=seed)

    out = tmp_path / "run"
    monkeypatch.setattr(E, "render", failing)
    with pytest.raises(RuntimeError, match="render bug"):
        _run(data, spec, out, FakeBackend(), prefetch)
    # batches [0,1], [2,3] written; then 4 (batched), 5 (undecodable: recorded), 6 raises
    assert [r["id"][3:] for r in records(out, "fx", "full")] == list("01235")
    monkeypatch.setattr(E, "render", real)
    backend = FakeBackend()
    _run(data, spec, out, backend, prefetch)
    assert backend.calls[0] == ["fx-4", "fx-6"]  # finished items are not asked again
    ids = [r["id"] for r in records(out, "fx", "full")]
    assert sorted(ids) == sorted(f"fx-{i}" for i in range(9)) and len(ids) == len(set(ids))


# --- the HF backend: prepare + generate_prepared equals generate --------------------------------------


@pytest.fixture(scope="module")
def hf(tiny_model):
    from vopd_bench.backends.hf import HFBackend

    return HFBackend(BackendConfig(model=tiny_model, batch_size=3))


def _requests(tmp_path, n=4) -> list[Request]:
    data, spec_file = make_dataset(tmp_path / "fx", n=n)
    spec = load_spec(str(spec_file))
    return [Request(it.id, [render(spec, it, "crop").image], spec.prompt.render(it), spec.prompt.system)
            for it in spec.load_items(data)]


def _strip(resps: list[Response]) -> list[tuple]:
    return [(r.text, r.error, r.retryable, r.n_tokens) for r in resps]


def test_hf_prepared_in_a_thread_equals_generate(hf, tmp_path):
    from vopd_bench.inputs import build_messages

    reqs, gen = _requests(tmp_path), GenerationKwargs(max_new_tokens=6)
    with ThreadPoolExecutor(1) as pool:
        prep = pool.submit(hf.prepare, reqs).result()
    assert prep.error is None and prep.seconds > 0
    texts = [hf.processor.apply_chat_template(build_messages(r), add_generation_prompt=True, tokenize=False)
             for r in reqs]
    ref = hf.processor(text=texts, images=[r.images[0] for r in reqs], padding=True, return_tensors="pt")
    assert all((prep.inputs[k] == ref[k]).all() for k in ref)  # bit-identical model inputs
    assert _strip(hf.generate_prepared(prep, gen)) == _strip(hf.generate(reqs, gen))


def test_hf_failed_preparation_is_retried_one_by_one_like_generate(hf, tmp_path, monkeypatch):
    reqs, gen = _requests(tmp_path, n=3), GenerationKwargs(max_new_tokens=6)
    real = hf._encode

    def only_single(batch):
        if len(batch) > 1:
            raise ValueError("batch too big")
        if batch[0].key == "fx-1":
            raise ValueError("bad request")
        return real(batch)

    monkeypatch.setattr(hf, "_encode", only_single)
    prep = hf.prepare(reqs)
    assert isinstance(prep.error, ValueError)
    got = hf.generate_prepared(prep, gen)
    assert _strip(got) == _strip(hf.generate(reqs, gen))
    assert got[1].error == "ValueError: bad request" and got[1].retryable and got[0].error is None


def test_hf_eval_outputs_identical_with_and_without_prefetch(hf, tmp_path):
    data, spec = _dataset(tmp_path, corrupt=2, boxless=4, n=8)
    for prefetch in (True, False):
        cfg = E.EvalConfig(tasks=[str(spec)], data={str(spec): str(data)}, out=str(tmp_path / str(prefetch)),
                           progress=False, prefetch=prefetch, backend=hf.cfg)
        E.run_eval(cfg, hf)
    for view in ("full", "crop"):
        a, b = (records(tmp_path / str(p), "fx", view) for p in (True, False))
        for r in a + b:
            r.pop("latency")
        assert a == b and len(a) >= 7


def test_hf_backend_stays_deep_copyable(hf, tmp_path):
    import copy

    twin = copy.deepcopy(hf)  # lmms-eval's tracker deep-copies the model object it was given
    reqs, gen = _requests(tmp_path, n=2), GenerationKwargs(max_new_tokens=4)
    assert _strip(twin.generate_prepared(twin.prepare(reqs), gen)) == _strip(hf.generate(reqs, gen))


def test_prefetch_auto_is_off_for_a_model_on_a_cpu_without_a_spare_core(hf, tmp_path, monkeypatch):
    """Measured on 2 cores: a prefetch thread only competes with a CPU generate that uses both (wall ratio
    >= 1.0); with torch on one core it hides the CPU work (wall ratio < 1)."""
    import os

    import torch

    data, spec = make_dataset(tmp_path / "fx", n=2)
    cfg = E.EvalConfig(tasks=[str(spec)], data={str(spec): str(data)}, out=str(tmp_path / "a"), progress=False,
                       backend=hf.cfg)
    assert cfg.prefetch is None
    assert E.Evaluator(cfg, FakeBackend()).prefetch is True  # no local device (e.g. a server)
    assert E.Evaluator(E.EvalConfig(**{**cfg.__dict__, "prefetch": True}), hf).prefetch is True
    assert hf.device == "cpu"
    cores = len(os.sched_getaffinity(0))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(cores)  # torch on every core: nothing to spare
        assert E.Evaluator(cfg, hf).prefetch is False
        if cores >= 2:
            torch.set_num_threads(cores - 1)
            assert E.Evaluator(cfg, hf).prefetch is True
            monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks on this machine: the other rank's threads
            assert E.Evaluator(cfg, hf).prefetch is (cores > 2 * (cores - 1))
    finally:
        torch.set_num_threads(threads)
