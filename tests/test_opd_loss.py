"""Properties of the Vision-OPD loss (vopd_bench.train.loss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vopd_bench.train.loss import generalized_jsd, mean_entropy

B, T, V = 3, 5, 40


def _logits(seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g) * scale


def _mask() -> torch.Tensor:
    m = torch.ones(B, T)
    m[0, 3:] = 0  # a short response
    m[2, 1:] = 0
    return m


def _kl_reference(p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean KL(P ‖ Q) with torch.nn.functional.kl_div (input = log Q, target = P)."""
    per = F.kl_div(F.log_softmax(q_logits, -1), F.softmax(p_logits, -1), reduction="none").sum(-1)
    return (per * mask).sum() / mask.sum()


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("top_k", [None, 7])
def test_zero_for_identical_distributions(beta: float, top_k: int | None) -> None:
    x = _logits(0)
    loss = generalized_jsd(x, x.clone(), _mask(), beta=beta, top_k=top_k)
    assert abs(loss.item()) < 1e-6


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_beta_limits_are_the_two_kls(temperature: float) -> None:
    s, t, m = _logits(1), _logits(2), _mask()
    fwd = _kl_reference(t / temperature, s / temperature, m)  # KL(teacher ‖ student)
    rev = _kl_reference(s / temperature, t / temperature, m)  # KL(student ‖ teacher)
    assert not torch.allclose(fwd, rev)
    got0 = generalized_jsd(s, t, m, beta=0.0, temperature=temperature)
    got1 = generalized_jsd(s, t, m, beta=1.0, temperature=temperature)
    torch.testing.assert_close(got0, fwd, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got1, rev, atol=1e-5, rtol=1e-5)


def test_matches_trl_generalized_jsd() -> None:
    trl_gkd = pytest.importorskip("trl.experimental.gkd")
    s, t, m = _logits(3), _logits(4), _mask()
    labels = torch.where(m.bool(), 1, -100)
    for beta in (0.0, 0.5, 0.9, 1.0):
        ref = trl_gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta)
        torch.testing.assert_close(generalized_jsd(s, t, m, beta=beta), ref, atol=1e-5, rtol=1e-5)


def test_jsd_is_bounded_and_symmetric_at_half() -> None:
    s, t, m = _logits(5), _logits(6), _mask()
    a = generalized_jsd(s, t, m, beta=0.5)
    b = generalized_jsd(t, s, m, beta=0.5)
    torch.testing.assert_close(a, b)
    assert 0 < a.item() <= torch.log(torch.tensor(2.0)).item() + 1e-6


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_top_k_with_k_vocab_equals_full(beta: float) -> None:
    s, t, m = _logits(7), _logits(8), _mask()
    full = generalized_jsd(s, t, m, beta=beta)
    topk = generalized_jsd(s, t, m, beta=beta, top_k=V)
    torch.testing.assert_close(topk, full, atol=1e-5, rtol=1e-5)
    s1 = s.clone().requires_grad_(True)
    s2 = s.clone().requires_grad_(True)
    generalized_jsd(s1, t, m, beta=beta).backward()
    generalized_jsd(s2, t, m, beta=beta, top_k=V).backward()
    torch.testing.assert_close(s1.grad, s2.grad, atol=1e-5, rtol=1e-4)


def test_top_k_tail_bucket_is_a_lower_bound_and_close() -> None:
    """Merging tokens into one bucket can only lower a divergence (data processing inequality)."""
    s, t, m = _logits(9, scale=6.0), _logits(10, scale=6.0), _mask()
    full = generalized_jsd(s, t, m, beta=0.5)
    for k in (1, 5, 20):
        assert generalized_jsd(s, t, m, beta=0.5, top_k=k) <= full + 1e-6
    assert generalized_jsd(s, t, m, beta=0.5, top_k=20) > 0.5 * full


def test_mask_excludes_non_response_tokens() -> None:
    s, t, m = _logits(11), _logits(12), _mask()
    t2 = t.clone()
    t2[m == 0] = 100.0 * torch.randn_like(t2[m == 0])  # change only masked-out positions
    torch.testing.assert_close(generalized_jsd(s, t, m), generalized_jsd(s, t2, m))
    per = generalized_jsd(s, t, m, reduction="none")
    assert per.shape == (B, T) and torch.all(per[m == 0] == 0)
    torch.testing.assert_close(generalized_jsd(s, t, m, num_tokens=2 * m.sum()), generalized_jsd(s, t, m) / 2)


@pytest.mark.parametrize("top_k", [None, 5])
def test_gradients_reach_the_student_only(top_k: int | None) -> None:
    s = _logits(13).requires_grad_(True)
    t = _logits(14).requires_grad_(True)  # even a teacher tensor that requires grad gets none
    generalized_jsd(s, t, _mask(), beta=0.5, top_k=top_k).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    assert torch.all(s.grad[_mask() == 0] == 0)


def test_teacher_module_parameters_get_no_gradient() -> None:
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(8, V), torch.nn.Linear(8, V)
    x = torch.randn(B, T, 8)
    generalized_jsd(student(x), teacher(x), _mask(), beta=0.5, top_k=10).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_infinite_logits_do_not_give_nan() -> None:
    s, t, m = _logits(15), _logits(16), _mask()
    s[..., :3] = float("-inf")
    t[..., :3] = float("-inf")
    s.requires_grad_(True)
    for beta in (0.0, 0.5, 1.0):
        for k in (None, 4, V):
            loss = generalized_jsd(s, t, m, beta=beta, top_k=k)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
            s.grad = None


def test_beta_out_of_range_and_entropy() -> None:
    with pytest.raises(ValueError):
        generalized_jsd(_logits(0), _logits(1), beta=1.5)
    uniform = torch.zeros(1, 2, V)
    assert abs(mean_entropy(uniform) - torch.log(torch.tensor(float(V))).item()) < 1e-5


def test_token_cross_entropy_matches_torch_on_the_masked_tokens() -> None:
    from vopd_bench.train.loss import token_cross_entropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=g)
    tokens = torch.randint(0, 7, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    keep = mask.bool()
    ref = torch.nn.functional.cross_entropy(logits[keep], tokens[keep])
    assert torch.allclose(token_cross_entropy(logits, tokens, mask), ref)
    assert torch.allclose(token_cross_entropy(logits, tokens, mask, num_tokens=10.0), ref * 5 / 10)
    ref_t = torch.nn.functional.cross_entropy(logits[keep] / 2.0, tokens[keep])
    assert torch.allclose(token_cross_entropy(logits, tokens, mask, temperature=2.0), ref_t)
