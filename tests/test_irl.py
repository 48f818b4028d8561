"""Eqn 5 and behaviour cloning against brute-force references."""
import math

import pytest
import torch

import irl


def brute_force_grad(R_E, R, logp, is_policy, partition="uniform"):
    """mean_i dR(expert_i) - sum_j w_j dR(policy_j), written out per trajectory (Eqns 3-4); the weights
    w_j are proportional to exp(R_j) / pi_j (uniform) or to exp(R_j) (policy)."""
    expert = torch.cat([R_E, R[~is_policy]])
    log_w = (R - logp)[is_policy] if partition == "uniform" else R[is_policy]
    w = [math.exp(v) for v in log_w.tolist()]
    w = [v / sum(w) for v in w]
    g_E = torch.full_like(R_E, -1 / len(expert))        # gradient of -J
    g = torch.zeros_like(R)
    g[~is_policy] = -1 / len(expert)
    g[is_policy] = torch.tensor(w, dtype=R.dtype)
    return g_E, g


def grads(R_E, R, logp, is_policy, partition="uniform"):
    R_E, R = R_E.clone().requires_grad_(), R.clone().requires_grad_()
    loss, stats = irl.repirl_loss(R_E, R, logp, is_policy, partition)
    loss.backward()
    return loss, stats, R_E.grad, R.grad


@pytest.mark.parametrize("partition", ["uniform", "policy"])
def test_gradient_is_importance_weighted_difference(partition):
    torch.manual_seed(0)
    R_E, R, logp = torch.randn(3, dtype=torch.float64), torch.randn(8, dtype=torch.float64), -5 * torch.rand(8, dtype=torch.float64)
    is_policy = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    _, _, gE, g = grads(R_E, R, logp, is_policy, partition)
    rE, r = brute_force_grad(R_E, R, logp, is_policy, partition)
    torch.testing.assert_close(gE, rE)
    torch.testing.assert_close(g, r)


def test_policy_partition_is_the_donsker_varadhan_bound_maximised_at_the_log_density_ratio():
    """With partition="policy", -loss = mean_E R - log mean_pi exp(R) never exceeds KL(p_E || pi), and
    reaches it at R = log p_E / pi, whatever log pi_theta(tau) is passed: brute force on 3 trajectories."""
    p_E, pi = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    kl = (p_E * (p_E / pi).log()).sum()
    # exact expectations: 1000 samples of each side in the proportions of p_E and pi
    expert_idx = torch.repeat_interleave(torch.arange(3), (1000 * p_E).round().long())
    policy_idx = torch.repeat_interleave(torch.arange(3), (1000 * pi).round().long())
    is_policy = torch.ones(len(policy_idx), dtype=torch.bool)
    logp = torch.randn(len(policy_idx), dtype=torch.float64) * 10            # ignored by this partition
    for R3 in [(p_E / pi).log() + 2.0, torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, -1.0, 0.5]).double()]:
        loss, _ = irl.repirl_loss(R3[expert_idx], R3[policy_idx], logp, is_policy, "policy")
        assert -loss.item() <= kl.item() + 1e-9
    loss, _ = irl.repirl_loss(((p_E / pi).log())[expert_idx], ((p_E / pi).log())[policy_idx], logp, is_policy, "policy")
    assert -loss.item() == pytest.approx(kl.item(), abs=1e-9)


def test_loss_value_is_minus_J():
    R_E, R, logp = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -1.0]), torch.tensor([-2.0, -4.0])
    loss, stats, _, _ = grads(R_E, R, logp, torch.tensor([True, True]))
    # J = mean(1, 3) - log((exp(0.5 + 2) + exp(-1 + 4)) / 2), by hand
    J = 2.0 - math.log((math.exp(2.5) + math.exp(3.0)) / 2)
    assert abs(-loss.item() - J) < 1e-6 and abs(stats["irl/J"] - J) < 1e-6
    w = [math.exp(2.5) / (math.exp(2.5) + math.exp(3.0)), math.exp(3.0) / (math.exp(2.5) + math.exp(3.0))]
    assert abs(stats["irl/ess"] - 1 / (w[0] ** 2 + w[1] ** 2)) < 1e-5


def test_gradient_unchanged_by_constant_reward_shift():
    torch.manual_seed(1)
    R_E, R, logp = torch.randn(4), torch.randn(6), -torch.rand(6) * 10
    is_policy = torch.tensor([1, 1, 0, 1, 1, 0], dtype=torch.bool)
    _, _, gE1, g1 = grads(R_E, R, logp, is_policy)
    _, _, gE2, g2 = grads(R_E + 7.5, R + 7.5, logp, is_policy)
    torch.testing.assert_close(gE1, gE2)
    torch.testing.assert_close(g1, g2)


def test_extreme_log_probs_stay_finite_and_exact():
    R_E, R = torch.tensor([0.0]), torch.tensor([1.0, 2.0, 0.0])
    logp = torch.tensor([-5000.0, -5001.0, -4000.0])                    # exp(-logp) overflows any float
    loss, stats, gE, g = grads(R_E, R, logp, torch.ones(3, dtype=torch.bool))
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    # log weights R - logp = (5001, 5003, 4000): the third is e^-1001 behind, the first two share by e^2
    w1 = 1 / (1 + math.exp(2))
    torch.testing.assert_close(g, torch.tensor([w1, 1 - w1, 0.0]), atol=1e-3, rtol=0)  # float32 spacing at 5000: 5e-4
    assert abs(stats["irl/ess"] - 1 / (w1 ** 2 + (1 - w1) ** 2)) < 1e-4


def test_pseudo_expert_routing_moves_correct_rollouts_to_expert_side():
    R_E, R, logp = torch.tensor([1.0]), torch.tensor([2.0, -1.0, 0.0]), torch.tensor([-1.0, -2.0, -3.0])
    correct = torch.tensor([True, False, False])
    _, stats, gE, g = grads(R_E, R, logp, ~correct)
    assert stats["irl/n_policy"] == 2
    assert g[0].item() == -0.5 and gE.item() == -0.5                   # expert side: mean over 2
    assert g[1:].sum().item() == 1.0 - 0.0 or abs(g[1:].sum().item() - 1.0) < 1e-6  # weights sum to 1
    _, stats, _, g = grads(R_E, R, logp, torch.ones(3, dtype=torch.bool))  # ablation: all policy samples
    assert stats["irl/n_policy"] == 3 and g[0].item() > 0


def test_empty_policy_side_gives_zero_loss_and_gradient():
    loss, stats, gE, g = grads(torch.tensor([1.0]), torch.tensor([2.0, 3.0]), torch.tensor([-1.0, -1.0]),
                               torch.zeros(2, dtype=torch.bool))
    assert loss.item() == 0.0 and stats["irl/ess"] == 0.0
    assert (gE == 0).all() and (g == 0).all()


def test_inputs_not_modified():
    R_E, R, logp, is_policy = torch.randn(2), torch.randn(4), torch.randn(4), torch.tensor([1, 0, 1, 1]).bool()
    copies = [t.clone() for t in (R_E, R, logp, is_policy)]
    irl.repirl_loss(R_E, R, logp, is_policy)
    for a, b in zip((R_E, R, logp, is_policy), copies):
        assert torch.equal(a, b)


def test_bc_loss_is_token_mean_nll_with_pinned_normaliser():
    logp = torch.tensor([[0.0, -1.0, -2.0], [0.0, -3.0, -9.0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]], dtype=torch.bool)
    loss, _ = irl.bc_loss(logp, mask)
    assert abs(loss.item() - (1 + 2 + 3) / 3) < 1e-6
    loss, _ = irl.bc_loss(logp, mask, n_tokens=6)                       # whole-batch normaliser from the caller
    assert abs(loss.item() - 6 / 6) < 1e-6
