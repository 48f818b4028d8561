"""The baselines' losses (AIRL, PRIME, Math-Shepherd step labels, KTO, RL Tango's verifier) against
brute-force references.

References are written out independently here: Python floats, explicit loops, D computed as
exp(f) / (exp(f) + pi) and the cross-entropy by hand.
"""
import math

import pytest
import torch

import irl


# ----------------------------------------------------------------------------- AIRL

def brute_airl(f_E, logp_E, f_pi, logp_pi, form):
    """The discriminator loss and D per token, one Python float at a time."""
    def D(f, logp):
        if form == "airl":
            return math.exp(f) / (math.exp(f) + math.exp(logp))
        return 1 / (1 + math.exp(-f))
    D_E = [D(f, lp) for f, lp in zip(f_E.tolist(), logp_E.tolist())]
    D_pi = [D(f, lp) for f, lp in zip(f_pi.tolist(), logp_pi.tolist())]
    loss = -sum(math.log(d) for d in D_E) / len(D_E) - sum(math.log(1 - d) for d in D_pi) / len(D_pi)
    return loss, D_E, D_pi


def airl_inputs(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    f_E, f_pi = torch.randn(7, generator=g, dtype=dtype) * 2, torch.randn(5, generator=g, dtype=dtype) * 2
    logp_E, logp_pi = -3 * torch.rand(7, generator=g, dtype=dtype), -3 * torch.rand(5, generator=g, dtype=dtype)
    return f_E, logp_E, f_pi, logp_pi


@pytest.mark.parametrize("form", ["airl", "sigmoid"])
def test_airl_loss_matches_brute_force(form):
    f_E, logp_E, f_pi, logp_pi = airl_inputs(0)
    loss, stats = irl.airl_loss(f_E, logp_E, f_pi, logp_pi, form)
    ref, D_E, D_pi = brute_airl(f_E, logp_E, f_pi, logp_pi, form)
    assert abs(loss.item() - ref) < 1e-10
    assert abs(stats["irl/D_expert"] - sum(D_E) / len(D_E)) < 1e-6
    assert abs(stats["irl/D_policy"] - sum(D_pi) / len(D_pi)) < 1e-6
    acc = 0.5 * (sum(d > 0.5 for d in D_E) / len(D_E) + sum(d < 0.5 for d in D_pi) / len(D_pi))
    assert abs(stats["irl/disc_acc"] - acc) < 1e-9


def test_airl_and_sigmoid_forms_differ_by_the_policy_density():
    f_E, logp_E, f_pi, logp_pi = airl_inputs(1)
    airl_value, _ = irl.airl_loss(f_E, logp_E, f_pi, logp_pi, "airl")
    sigmoid_value, _ = irl.airl_loss(f_E, logp_E, f_pi, logp_pi, "sigmoid")
    assert abs(airl_value.item() - sigmoid_value.item()) > 1e-3
    shifted, _ = irl.airl_loss(f_E - logp_E, logp_E, f_pi - logp_pi, logp_pi, "sigmoid")  # sigmoid(f - log pi)
    assert abs(airl_value.item() - shifted.item()) < 1e-12
    with pytest.raises(ValueError):
        irl.airl_loss(f_E, logp_E, f_pi, logp_pi, "gail")


@pytest.mark.parametrize("form", ["airl", "sigmoid"])
def test_airl_gradient_is_one_minus_D_on_expert_and_minus_D_on_policy(form):
    f_E, logp_E, f_pi, logp_pi = airl_inputs(2)
    f_E, f_pi = f_E.clone().requires_grad_(), f_pi.clone().requires_grad_()
    logp_E, logp_pi = logp_E.clone().requires_grad_(), logp_pi.clone().requires_grad_()
    loss, _ = irl.airl_loss(f_E, logp_E, f_pi, logp_pi, form)
    loss.backward()
    _, D_E, D_pi = brute_airl(f_E.detach(), logp_E.detach(), f_pi.detach(), logp_pi.detach(), form)
    # d log D / df = 1 - D and d log(1 - D) / df = -D; the loss is minus their side means
    torch.testing.assert_close(f_E.grad, torch.tensor([-(1 - d) / 7 for d in D_E], dtype=torch.float64))
    torch.testing.assert_close(f_pi.grad, torch.tensor([d / 5 for d in D_pi], dtype=torch.float64))
    assert logp_E.grad is None and logp_pi.grad is None                 # the policy is not trained by D


def test_airl_reward_is_log_D_minus_log_one_minus_D():
    f = torch.tensor([[0.0, 1.5, -2.0], [3.0, -1.0, 0.5]], dtype=torch.float64)
    logp = torch.tensor([[-0.1, -2.0, -0.5], [float("-inf"), -4.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1], [0, 1, 1]], dtype=torch.bool)
    r = irl.airl_reward(f.clone().requires_grad_(), logp, mask)         # a reward is a constant for the policy
    assert r.shape == (2, 3) and torch.isfinite(r).all() and not r.requires_grad
    for b in range(2):
        for t in range(3):
            if not mask[b, t]:
                assert r[b, t].item() == 0.0
                continue
            D = math.exp(f[b, t].item()) / (math.exp(f[b, t].item()) + math.exp(logp[b, t].item()))
            assert abs(r[b, t].item() - (math.log(D) - math.log(1 - D))) < 1e-9
    torch.testing.assert_close(irl.airl_reward(f, logp, mask, form="sigmoid"), f * mask)  # logit of sigmoid(f)


def test_airl_extreme_values_stay_finite_and_exact():
    f_E = torch.tensor([1e4, -1e4, -6000.0])
    logp_E = torch.tensor([-5000.0, -5000.0, -5000.0])
    f_pi = torch.tensor([1e4, -1e4]).requires_grad_()
    logp_pi = torch.tensor([-5000.0, -3.0])
    f_E = f_E.requires_grad_()
    loss, stats = irl.airl_loss(f_E, logp_E, f_pi, logp_pi)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f_E.grad).all() and torch.isfinite(f_pi.grad).all()
    # expert: -log D = log(1 + pi / exp(f)) = softplus(log pi - f): softplus(-15000, 5000, 1000) = 0, 5000, 1000
    # policy: -log(1 - D) = softplus(f - log pi): softplus(15000) = 15000, softplus(-9997) = 0
    expected = (0.0 + 5000.0 + 1000.0) / 3 + (15000.0 + 0.0) / 2
    assert abs(loss.item() - expected) < 1e-2
    torch.testing.assert_close(f_E.grad, torch.tensor([0.0, -1 / 3, -1 / 3]))
    torch.testing.assert_close(f_pi.grad, torch.tensor([1 / 2, 0.0]))
    assert all(math.isfinite(v) for v in stats.values())


def test_airl_normaliser_is_a_mean_per_side_and_splits_add_up():
    f_E, logp_E, f_pi, logp_pi = airl_inputs(3)
    full, _ = irl.airl_loss(f_E, logp_E, f_pi, logp_pi)
    empty = torch.zeros(0, dtype=torch.float64)
    # expert rows in two micro-batches and the policy rows in a third, with the whole-batch counts
    parts = [irl.airl_loss(f_E[:3], logp_E[:3], empty, empty, n_E=7, n_pi=5)[0],
             irl.airl_loss(f_E[3:], logp_E[3:], empty, empty, n_E=7, n_pi=5)[0],
             irl.airl_loss(empty, empty, f_pi, logp_pi, n_E=7, n_pi=5)[0]]
    assert abs(sum(p.item() for p in parts) - full.item()) < 1e-12
    # balanced, not one mean over all 12 tokens: doubling the policy tokens leaves the loss unchanged
    doubled, _ = irl.airl_loss(f_E, logp_E, f_pi.repeat(2), logp_pi.repeat(2))
    assert abs(doubled.item() - full.item()) < 1e-12


def test_airl_optimum_recovers_expert_log_policy_and_sigmoid_a_density_ratio():
    """One state, three actions: the BCE minimiser is f* = log pi_E (AIRL) vs log pi_E / pi (sigmoid)."""
    pi_E, pi = [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]
    expert_actions = [0] * 5 + [1] * 3 + [2] * 2                         # exact frequencies pi_E
    policy_actions = [0] * 2 + [1] * 3 + [2] * 5                         # exact frequencies pi
    logp_all = torch.tensor(pi, dtype=torch.float64).log()
    for form, target in (("airl", [math.log(p) for p in pi_E]),
                         ("sigmoid", [math.log(a / b) for a, b in zip(pi_E, pi)])):
        f = torch.zeros(3, dtype=torch.float64, requires_grad=True)      # a free f(s, a) per action
        opt = torch.optim.LBFGS([f], lr=1, max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure():
            opt.zero_grad()
            loss, _ = irl.airl_loss(f[expert_actions], logp_all[expert_actions], f[policy_actions],
                                    logp_all[policy_actions], form)
            loss.backward()
            return loss
        opt.step(closure)
        torch.testing.assert_close(f.detach(), torch.tensor(target, dtype=torch.float64), atol=1e-6, rtol=0)


def test_airl_rejects_unselected_2d_inputs_and_leaves_inputs_unchanged():
    f_E, logp_E, f_pi, logp_pi = airl_inputs(4)
    copies = [t.clone() for t in (f_E, logp_E, f_pi, logp_pi)]
    irl.airl_loss(f_E, logp_E, f_pi, logp_pi)
    irl.airl_reward(f_E, logp_E)
    for a, b in zip((f_E, logp_E, f_pi, logp_pi), copies):
        assert torch.equal(a, b)
    with pytest.raises(AssertionError):
        irl.airl_loss(f_E.view(1, 7), logp_E.view(1, 7), f_pi, logp_pi)  # (B, T) would count padding


# ----------------------------------------------------------------------------- PRIME

def prime_case():
    logp_psi = torch.tensor([[0.0, -1.0, -2.0, -0.5], [0.0, -0.3, -0.2, 0.0], [0.0, -4.0, -1.0, -3.0]],
                            dtype=torch.float64)
    logp_ref = torch.tensor([[0.0, -1.5, -1.0, -0.7], [0.0, -0.9, -0.1, float("-inf")], [0.0, -2.0, -2.5, -1.0]],
                            dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    r_o = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    return logp_psi, logp_ref, mask, r_o


def brute_prime(logp_psi, logp_ref, mask, r_o, beta):
    loss, Rs = 0.0, []
    for i in range(len(r_o)):
        R = beta * sum(logp_psi[i, t].item() - logp_ref[i, t].item() for t in range(mask.shape[1]) if mask[i, t])
        p = 1 / (1 + math.exp(-R))                                       # P(correct) = sigmoid(R)
        y = r_o[i].item()
        loss += -(y * math.log(p) + (1 - y) * math.log(1 - p))
        Rs.append(R)
    return loss / len(r_o), Rs


def test_prime_loss_matches_brute_force():
    logp_psi, logp_ref, mask, r_o = prime_case()
    loss, stats = irl.prime_loss(logp_psi, logp_ref, mask, r_o, beta=0.5)
    ref, Rs = brute_prime(logp_psi, logp_ref, mask, r_o, 0.5)
    assert abs(loss.item() - ref) < 1e-12
    assert abs(stats["irl/R_correct"] - (Rs[0] + Rs[2]) / 2) < 1e-9 and abs(stats["irl/R_wrong"] - Rs[1]) < 1e-9
    assert stats["irl/prime_acc"] == sum((R > 0) == (y > 0.5) for R, y in zip(Rs, r_o.tolist())) / 3


def test_prime_gradient_is_beta_times_sigmoid_minus_label_on_completion_tokens():
    logp_psi, logp_ref, mask, r_o = prime_case()
    logp_psi, logp_ref = logp_psi.clone().requires_grad_(), logp_ref.clone().requires_grad_()
    loss, _ = irl.prime_loss(logp_psi, logp_ref, mask, r_o, beta=0.5)
    loss.backward()
    _, Rs = brute_prime(logp_psi.detach(), logp_ref.detach(), mask, r_o, 0.5)
    expected = torch.zeros(3, 4, dtype=torch.float64)
    for i in range(3):
        for t in range(4):
            if mask[i, t]:
                expected[i, t] = 0.5 * (1 / (1 + math.exp(-Rs[i])) - r_o[i].item()) / 3
    torch.testing.assert_close(logp_psi.grad, expected)
    assert logp_ref.grad is None                                         # the reference is frozen


def test_prime_rewards_sum_to_the_sequence_reward_of_the_loss():
    logp_psi, logp_ref, mask, r_o = prime_case()
    r = irl.prime_rewards(logp_psi, logp_ref, mask, beta=0.5)
    assert r.shape == (3, 4) and torch.isfinite(r).all() and not r.requires_grad
    assert (r[~mask] == 0).all()                                         # -inf on padding does not leak
    assert abs(r[0, 1].item() - 0.5 * (-1.0 + 1.5)) < 1e-12
    _, Rs = brute_prime(logp_psi, logp_ref, mask, r_o, 0.5)
    torch.testing.assert_close(r.sum(-1), torch.tensor(Rs, dtype=torch.float64))


def test_prime_normaliser_and_splits():
    logp_psi, logp_ref, mask, r_o = prime_case()
    full, _ = irl.prime_loss(logp_psi, logp_ref, mask, r_o, beta=0.5)
    parts = [irl.prime_loss(logp_psi[i], logp_ref[i], mask[i], r_o[i], 0.5, n_seq=3)[0] for i in ([0, 1], [2])]
    assert abs(sum(p.item() for p in parts) - full.item()) < 1e-12
    # padding columns (even -inf log-probs there) change nothing: the mean is over sequences
    pad = torch.full((3, 2), float("-inf"), dtype=torch.float64)
    padded, _ = irl.prime_loss(torch.cat([logp_psi, pad], 1), torch.cat([logp_ref, pad], 1),
                               torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], 1), r_o, beta=0.5)
    assert abs(padded.item() - full.item()) < 1e-12


def test_prime_extremes_stay_finite_and_inputs_unchanged():
    logp_psi = torch.tensor([[-5000.0, -5000.0], [0.0, 0.0]]).requires_grad_()
    logp_ref = torch.tensor([[0.0, 0.0], [-5000.0, -5000.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    r_o = torch.tensor([1.0, 0.0])
    copies = [t.detach().clone() for t in (logp_psi, logp_ref, mask, r_o)]
    loss, stats = irl.prime_loss(logp_psi, logp_ref, mask, r_o, beta=1.0)
    loss.backward()
    assert abs(loss.item() - (10000.0 + 10000.0) / 2) < 1e-2             # R = -1e4 labelled 1, R = +1e4 labelled 0
    assert torch.isfinite(logp_psi.grad).all() and all(math.isfinite(v) for v in stats.values())
    torch.testing.assert_close(logp_psi.grad, torch.tensor([[-0.5, -0.5], [0.5, 0.5]]))
    irl.prime_rewards(logp_psi, logp_ref, mask, 1.0)
    for a, b in zip((logp_psi.detach(), logp_ref, mask, r_o), copies):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- Math-Shepherd step labels

def test_mc_step_labels_hand_worked_case():
    # 3 steps, 4 completions from each prefix; 2, 1 and 0 of them reach the right answer
    assert irl.mc_step_labels(torch.tensor([2, 1, 0]), 4, hard=True).tolist() == [1.0, 1.0, 0.0]
    assert irl.mc_step_labels([2, 1, 0], 4, hard=False).tolist() == [0.5, 0.25, 0.0]
    # per-step rollout counts, and the last step labelled by its own outcome (1 completion)
    assert irl.mc_step_labels([3, 0, 1], torch.tensor([4, 2, 1]), hard=False).tolist() == [0.75, 0.0, 1.0]
    for bad in (([5], 4), ([-1], 4), ([1], 0), ([0.5], 4)):
        with pytest.raises(ValueError):
            irl.mc_step_labels(*bad)


def test_step_end_positions_match_a_loop():
    step_id = torch.tensor([[-1, -1, 0, 0, 0, 1, 1, 2, -1],                  # 3 steps, then padding
                            [-1, 0, 0, 1, 1, 1, 1, -1, -1]])                 # 2 steps
    ends = irl.step_end_positions(step_id)
    expected = [[max(t for t in range(9) if step_id[b, t] == s) if (step_id[b] == s).any() else -1
                 for s in range(3)] for b in range(2)]
    assert ends.tolist() == expected == [[4, 6, 7], [2, 6, -1]]


def test_gather_step_scores_reads_the_last_token_of_each_step():
    r = torch.arange(20, dtype=torch.float64).view(2, 10).requires_grad_()
    step_end = torch.tensor([[3, 6, 9], [4, 8, -1]])
    scores = irl.gather_step_scores(r, step_end)
    assert scores.tolist() == [[3.0, 6.0, 9.0], [14.0, 18.0, 0.0]]
    scores[step_end >= 0].sum().backward()
    expected = torch.zeros(2, 10, dtype=torch.float64)
    expected[0, [3, 6, 9]] = 1
    expected[1, [4, 8]] = 1
    assert torch.equal(r.grad, expected)                                 # padding (-1) reaches no token


def test_step_bce_loss_matches_brute_force_with_soft_and_hard_labels():
    z = torch.tensor([0.0, math.log(3), -math.log(3), 2.0], dtype=torch.float64, requires_grad=True)
    for y in ([0.5, 0.25, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0]):
        z.grad = None
        loss, stats = irl.step_bce_loss(z, torch.tensor(y, dtype=torch.float64))
        loss.backward()
        p = [1 / (1 + math.exp(-v)) for v in z.tolist()]                 # 1/2, 3/4, 1/4, sigmoid(2)
        ref = -sum(yi * math.log(pi) + (1 - yi) * math.log(1 - pi) for yi, pi in zip(y, p)) / 4
        assert abs(loss.item() - ref) < 1e-12 and abs(stats["irl/step_bce"] - ref) < 1e-12
        torch.testing.assert_close(z.grad, torch.tensor([(pi - yi) / 4 for pi, yi in zip(p, y)], dtype=torch.float64))
    # hand value of the first term: logit 0 against label 1/2 costs log 2
    first, _ = irl.step_bce_loss(z[:1], torch.tensor([0.5], dtype=torch.float64))
    assert abs(first.item() - math.log(2)) < 1e-12
    half, _ = irl.step_bce_loss(z[:2], torch.tensor([0.5, 0.25], dtype=torch.float64), n_steps=4)  # whole-batch count
    rest, _ = irl.step_bce_loss(z[2:], torch.tensor([0.0, 1.0], dtype=torch.float64), n_steps=4)
    full, _ = irl.step_bce_loss(z, torch.tensor([0.5, 0.25, 0.0, 1.0], dtype=torch.float64))
    assert abs(half.item() + rest.item() - full.item()) < 1e-12


def test_mc_pipeline_on_the_hand_worked_case():
    """Token outputs -> step logits -> labels from 2/4, 1/4, 0/4 -> the loss, checked by hand."""
    step_id = torch.tensor([[-1, 0, 0, 1, 1, 1, 2, 2, -1]])
    r = torch.zeros(1, 9)
    r[0, 2], r[0, 5], r[0, 7] = 0.0, math.log(3), -math.log(3)           # step logits at the step ends
    r[0, 1] = 100.0                                                      # not a step end: never read
    copies = (step_id.clone(), r.clone())
    step_end = irl.step_end_positions(step_id)                           # (1, 3)
    z = irl.gather_step_scores(r, step_end)[step_end >= 0]               # (3,)
    soft, hard = irl.mc_step_labels([2, 1, 0], 4, hard=False), irl.mc_step_labels([2, 1, 0], 4)
    loss_soft, _ = irl.step_bce_loss(z, soft)
    loss_hard, _ = irl.step_bce_loss(z, hard)
    # soft: [log 2 - (1/4 log 3/4 + 3/4 log 1/4) - log 3/4] / 3; hard: [log 2 - log 3/4 - log 3/4] / 3
    by_hand_soft = (math.log(2) - (0.25 * math.log(0.75) + 0.75 * math.log(0.25)) - math.log(0.75)) / 3
    by_hand_hard = (math.log(2) - math.log(0.75) - math.log(0.75)) / 3
    assert abs(loss_soft.item() - by_hand_soft) < 1e-6 and abs(loss_hard.item() - by_hand_hard) < 1e-6
    assert torch.equal(step_id, copies[0]) and torch.equal(r, copies[1])


def test_rollout_step_labels_take_the_outcome_at_the_last_step():
    """Two rollouts: 3 steps (failed) and 2 steps (correct); 4 continuations per earlier prefix."""
    step_end = torch.tensor([[3, 6, 9], [4, 8, -1]])
    n_correct = torch.tensor([[2, 0, 4], [0, 3, 4]])                     # the last steps' counts are never read
    r_o = torch.tensor([0.0, 1.0])
    inputs = (n_correct.clone(), r_o.clone(), step_end.clone())
    hard = irl.rollout_step_labels(n_correct, 4, r_o, step_end)
    soft = irl.rollout_step_labels(n_correct, 4, r_o, step_end, hard=False)
    assert hard.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]            # padding 0
    assert soft.tolist() == [[0.5, 0.0, 0.0], [0.0, 1.0, 0.0]]
    one_step = irl.rollout_step_labels(torch.zeros(2, 1), 4, r_o, torch.tensor([[5], [7]]), hard=False)
    assert one_step.tolist() == [[0.0], [1.0]]                           # nothing sampled: the outcome only
    assert all(torch.equal(a, b) for a, b in zip(inputs, (n_correct, r_o, step_end)))


def test_mc_step_rewards_put_the_step_probability_on_its_last_token():
    r = torch.zeros(2, 6)
    r[0, 2], r[0, 4], r[1, 3] = math.log(3), -math.log(3), 2.0             # step logits at the step ends
    r[0, 1] = r[1, 5] = 50.0                                              # elsewhere: never read
    step_end = torch.tensor([[2, 4], [3, -1]])
    out = irl.mc_step_rewards(r.requires_grad_(), step_end)
    expected = torch.zeros(2, 6)
    expected[0, 2], expected[0, 4], expected[1, 3] = 0.75, 0.25, 1 / (1 + math.exp(-2.0))
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad


# ----------------------------------------------------------------------------- KTO

def kto_case():
    """Three rollouts (completion columns 1-2), z_ref 0.5, beta 1: implied rewards 0.5 + ln 3 (desirable),
    0.5 + ln 3 (undesirable) and 0.5 (undesirable, one token and a padding column at -inf)."""
    ln3 = math.log(3)
    logp = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, -0.5], [0.0, -3.0, 0.0]], dtype=torch.float64)
    logp_ref = torch.tensor([[0.0, -1.5, -2.0 - ln3], [0.0, -1.0, -0.5 - ln3], [0.0, -3.5, float("-inf")]],
                            dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 1, 0]], dtype=torch.bool)
    r_o = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    return logp, logp_ref, mask, r_o


def test_kto_loss_hand_worked_case():
    logp, logp_ref, mask, r_o = kto_case()
    logp = logp.clone().requires_grad_()
    loss, stats = irl.kto_loss(logp, logp_ref, mask, r_o, z_ref=0.5, beta=1.0)
    loss.backward()
    # v: sigmoid(ln 3) = 3/4 (desirable above z), sigmoid(-ln 3) = 1/4 (undesirable above z), sigmoid(0) = 1/2
    assert abs(loss.item() - (1 / 4 + 3 / 4 + 1 / 2) / 3) < 1e-12
    assert abs(stats["kto/r_desirable"] - (0.5 + math.log(3))) < 1e-12 and stats["kto/z_ref"] == 0.5
    # d loss / d log pi = -(1/3) dv/dr on completion tokens: dv/dr = sigmoid' = 3/16, -3/16, -1/4
    expected = torch.tensor([[0, -1 / 16, -1 / 16], [0, 1 / 16, 1 / 16], [0, 1 / 12, 0]], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, expected)
    weighted, _ = irl.kto_loss(logp, logp_ref, mask, r_o, 0.5, 1.0, lambda_D=2.0, lambda_U=1.0)
    assert abs(weighted.item() - (2 - 2 * 3 / 4 + 3 / 4 + 1 / 2) / 3) < 1e-12


def brute_kto(logp, logp_ref, mask, r_o, z_ref, beta, lam_D, lam_U):
    """The loss and d loss / d log pi, one Python float at a time."""
    n, T = mask.shape
    z = max(z_ref, 0.0)
    loss, grad = 0.0, [[0.0] * T for _ in range(n)]
    for i in range(n):
        r = sum(logp[i, t].item() - logp_ref[i, t].item() for t in range(T) if mask[i, t])
        sign, lam = (1.0, lam_D) if r_o[i].item() > 0.5 else (-1.0, lam_U)
        s = 1 / (1 + math.exp(-beta * sign * (r - z)))
        loss += (lam - lam * s) / n
        for t in range(T):
            if mask[i, t]:
                grad[i][t] = -lam * s * (1 - s) * beta * sign / n
    return loss, torch.tensor(grad, dtype=torch.float64)


@pytest.mark.parametrize("z_ref, lambdas", [(0.7, (1.0, 1.0)), (-3.0, (1.3, 0.8))])
def test_kto_loss_matches_brute_force_and_clamps_the_reference_point(z_ref, lambdas):
    g = torch.Generator().manual_seed(5)
    logp = -2 * torch.rand(6, 5, generator=g, dtype=torch.float64)
    logp_ref = -2 * torch.rand(6, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 5, generator=g) > 0.3
    r_o = (torch.rand(6, generator=g) > 0.5).double()
    logp = logp.requires_grad_()
    z = torch.tensor(z_ref, dtype=torch.float64, requires_grad=True)
    loss, stats = irl.kto_loss(logp, logp_ref, mask, r_o, z, beta=0.3, lambda_D=lambdas[0], lambda_U=lambdas[1])
    loss.backward()
    ref, grad = brute_kto(logp.detach(), logp_ref, mask, r_o, z_ref, 0.3, *lambdas)
    assert abs(loss.item() - ref) < 1e-12 and stats["kto/z_ref"] == max(z_ref, 0.0)
    torch.testing.assert_close(logp.grad, grad)
    assert z.grad is None                                                # the reference point is a constant


def test_kto_gradient_raises_desirable_and_lowers_undesirable_rollouts():
    """At the reference (r = 0 = z) every desirable token's gradient is negative (descent raises its log-prob),
    every undesirable one's positive; the reference gets none."""
    logp_ref = -torch.rand(4, 6, dtype=torch.float64)
    logp = logp_ref.clone().requires_grad_()
    mask = torch.ones(4, 6, dtype=torch.bool)
    r_o = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    logp_ref.requires_grad_()
    loss, _ = irl.kto_loss(logp, logp_ref, mask, r_o, 0.0, beta=0.1)
    loss.backward()
    assert (logp.grad[r_o > 0.5] < 0).all() and (logp.grad[r_o < 0.5] > 0).all()
    assert logp_ref.grad is None
    torch.testing.assert_close(logp.grad.abs(), torch.full((4, 6), 0.1 / 4 / 4, dtype=torch.float64))  # beta sigmoid' / n


def test_kto_normaliser_splits_add_up():
    logp, logp_ref, mask, r_o = kto_case()
    full, _ = irl.kto_loss(logp, logp_ref, mask, r_o, 0.5, 1.0)
    parts = [irl.kto_loss(logp[i], logp_ref[i], mask[i], r_o[i], 0.5, 1.0, n_seq=3)[0] for i in ([0, 2], [1])]
    assert abs(sum(p.item() for p in parts) - full.item()) < 1e-12


# ----------------------------------------------------------------------------- RL Tango's verifier

def tango_case():
    """Two rollouts: correct (z = ln 3, p('+') = 3/4) and wrong (z = -ln 3, p('+') = 1/4); m = 3 verdicts each."""
    z = torch.tensor([math.log(3), -math.log(3)], dtype=torch.float64)
    verdicts = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float64)    # '+' '+' '-' and '+' '-' '-'
    r_o = torch.tensor([1.0, 0.0], dtype=torch.float64)
    return z, verdicts, r_o


def test_tango_loss_hand_worked_case():
    z, verdicts, r_o = tango_case()
    inputs = [t.clone() for t in (z, verdicts, r_o)]
    z = z.clone().requires_grad_()
    loss, stats = irl.tango_loss(z, verdicts, r_o)
    loss.backward()
    # rewards (1, 1, 0) and (0, 1, 1); leave-one-out advantages (1/2, 1/2, -1) and (-1, 1/2, 1/2)
    # row 0: 1/2 ln 3/4 + 1/2 ln 3/4 - ln 1/4 = ln 3;  row 1: -ln 1/4 + 1/2 ln 3/4 + 1/2 ln 3/4 = ln 3
    # one correct and one wrong rollout: weights 1;  loss = -(ln 3 + ln 3) / (2 x 3) = -ln 3 / 3
    assert abs(loss.item() + math.log(3) / 3) < 1e-12
    # d loss / dz = -sum_j A_j (v_j - sigmoid(z)) / 6: row 0: 1/2 (1/4) + 1/2 (1/4) - (-3/4) = 1; row 1: -1
    torch.testing.assert_close(z.grad, torch.tensor([-1 / 6, 1 / 6], dtype=torch.float64))
    assert abs(stats["irl/verifier_reward"] - 4 / 6) < 1e-12 and stats["irl/verifier_greedy_acc"] == 1.0
    assert abs(stats["irl/verdict_plus"] - 1 / 2) < 1e-12
    assert all(torch.equal(a, b) for a, b in zip(inputs, (z.detach(), verdicts, r_o)))
    half, _ = irl.tango_loss(z[:1], verdicts[:1], r_o[:1], n_seq=2, n_correct=1)  # whole-batch counts
    rest, _ = irl.tango_loss(z[1:], verdicts[1:], r_o[1:], n_seq=2, n_correct=1)
    assert abs(half.item() + rest.item() - loss.item()) < 1e-12


def brute_tango(z, verdicts, r_o):
    """The loss and d loss / dz, one Python float at a time; each class's rollouts weigh B / (2 x its count)."""
    B, m = verdicts.shape
    n_correct = sum(r_o.tolist())
    loss, grad = 0.0, [0.0] * B
    for b in range(B):
        R = [float(verdicts[b, j].item() == r_o[b].item()) for j in range(m)]
        w = B / (2 * (n_correct if r_o[b].item() == 1 else B - n_correct)) if 0 < n_correct < B else 1.0
        p = 1 / (1 + math.exp(-z[b].item()))
        for j in range(m):
            A = w * (R[j] - (sum(R) - R[j]) / (m - 1))
            v = verdicts[b, j].item()
            loss -= A * math.log(p if v == 1 else 1 - p) / (B * m)
            grad[b] -= A * (v - p) / (B * m)
    return loss, torch.tensor(grad, dtype=torch.float64)


@pytest.mark.parametrize("r_o", [[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
def test_tango_loss_matches_brute_force_with_classes_weighted_alike(r_o):
    """2 correct rollouts of 5: their terms weigh 5 / (2 x 2), the 3 wrong ones' 5 / (2 x 3); one class: 1."""
    g = torch.Generator().manual_seed(7)
    z = (2 * torch.randn(5, generator=g, dtype=torch.float64)).requires_grad_()
    verdicts = (torch.rand(5, 4, generator=g) > 0.4).double()
    r_o = torch.tensor(r_o, dtype=torch.float64)
    loss, _ = irl.tango_loss(z, verdicts, r_o)
    loss.backward()
    ref, grad = brute_tango(z.detach(), verdicts, r_o)
    assert abs(loss.item() - ref) < 1e-12 and loss.item() != 0
    torch.testing.assert_close(z.grad, grad)


def test_tango_gradient_says_plus_on_a_correct_rollout_and_minus_on_a_wrong_one():
    """Verdicts sampled from sigmoid(z), many per rollout: descent raises z of a correct rollout (towards
    '+') and lowers z of a wrong one (towards '-'), whichever verdict is the more likely now."""
    torch.manual_seed(0)
    z = torch.tensor([-0.5, 0.3, 0.4, -0.2], dtype=torch.float64, requires_grad=True)
    verdicts = torch.bernoulli(z.detach().sigmoid()[:, None].expand(4, 400))    # (4, 400)
    loss, _ = irl.tango_loss(z, verdicts, torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    loss.backward()
    assert (z.grad[:2] < 0).all() and (z.grad[2:] > 0).all(), z.grad


def test_tango_step_rewards_put_the_expected_verdict_over_the_step_count_on_each_step_end():
    ln3 = math.log(3)
    z = torch.tensor([[ln3, -ln3, 0.0], [ln3, 5.0, 5.0]]).requires_grad_()
    step_end = torch.tensor([[2, 4, 5], [3, -1, -1]])
    r = irl.tango_step_rewards(z, step_end, 7)
    expected = torch.zeros(2, 7)
    expected[0, 2], expected[0, 4], expected[1, 3] = (2 * 3 / 4 - 1) / 3, (2 * 1 / 4 - 1) / 3, 2 * 3 / 4 - 1
    torch.testing.assert_close(r, expected)                              # padding steps (z = 5) reach no token
    assert not r.requires_grad
