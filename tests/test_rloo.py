"""Advantages against hand-worked numbers; the clipped surrogate against its definition."""
import torch

import rloo


def test_rloo_k2_by_hand():
    r_o = torch.tensor([1.0, 0.0])
    adv, _ = rloo.advantages(r_o, torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), k=2, alpha=0.1)
    torch.testing.assert_close(adv, torch.tensor([[1.0] * 3, [-1.0] * 3]))


def test_rloo_k4_with_ties_by_hand():
    r_o = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])        # two groups of 4
    adv, stats = rloo.advantages(r_o, torch.zeros(8, 1), torch.ones(8, 1, dtype=torch.bool), k=4, alpha=0.0)
    # group 1: others' mean for a 1 is (1+0+0)/3, for a 0 is (1+1+0)/3
    expected = [2 / 3, 2 / 3, -2 / 3, -2 / 3, 1.0, -1 / 3, -1 / 3, -1 / 3]
    torch.testing.assert_close(adv[:, 0], torch.tensor(expected))
    assert stats["policy/zero_adv_groups"] == 0.0


def test_all_equal_rewards_give_zero_advantage():
    r = torch.full((4, 5), 0.3)
    adv, stats = rloo.advantages(torch.ones(4), r, torch.ones(4, 5, dtype=torch.bool), k=4, alpha=0.5)
    # equal process rewards: reward-to-go minus the others' total is not 0 per token, but is the same
    # for every sample, so each token's advantage equals across the group; outcome part is 0
    assert torch.allclose(adv, adv[0:1].expand_as(adv))
    adv, _ = rloo.advantages(torch.ones(4), torch.zeros(4, 5), torch.ones(4, 5, dtype=torch.bool), k=4, alpha=0.5)
    assert (adv == 0).all() and stats["policy/zero_adv_groups"] == 1.0


def test_process_rewards_enter_as_reward_to_go_minus_loo_total():
    r = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 0.0]])                # sample 2 is one token long
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    adv, _ = rloo.advantages(torch.tensor([0.0, 1.0]), r, mask, k=2, alpha=0.5)
    # sample 1: outcome part 0 - 1 = -1; reward-to-go (3, 2, 0) minus the other's total 0.5
    # sample 2: outcome part +1; reward-to-go (0.5) minus the other's total 3; masked after its end
    expected = torch.tensor([[-1 + 0.5 * 2.5, -1 + 0.5 * 1.5, -1 + 0.5 * -0.5], [1 + 0.5 * -2.5, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)


def test_grpo_and_reinforce():
    r_o = torch.tensor([1.0, 0.0, 0.0, 0.0])
    one = torch.ones(4, 1, dtype=torch.bool)
    adv, _ = rloo.advantages(r_o, torch.zeros(4, 1), one, k=4, alpha=0.0, estimator="grpo")
    std = r_o.std()
    torch.testing.assert_close(adv[:, 0], (r_o - 0.25) / (std + 1e-6))
    adv, _ = rloo.advantages(r_o, torch.zeros(4, 1), one, k=4, alpha=0.0, estimator="reinforce")
    torch.testing.assert_close(adv[:, 0], r_o)


def test_grpo_process_part_standardises_token_rewards_over_the_group_by_hand():
    """DeepSeekMath's process supervision: the group's token rewards {1, 3, 2} (the second sample is one
    token long) have mean 2 and standard deviation 1, so they become (-1, 1 | 0); advantages sum them from t on."""
    r = torch.tensor([[1.0, 3.0], [2.0, 7.0]])                           # 7 lies past the second sample's end
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    adv, _ = rloo.advantages(torch.zeros(2), r, mask, k=2, alpha=0.5, estimator="grpo")
    torch.testing.assert_close(adv, 0.5 * torch.tensor([[0.0, 1.0], [0.0, 0.0]]), atol=1e-5, rtol=0)


def test_grpo_process_advantages_stay_bounded_when_the_group_totals_agree():
    """Four rollouts whose R_phi(tau) are all 0 but whose token rewards differ: standardising the
    reward-to-go by the spread of the totals (0) would divide by 1e-6; over the group's tokens it does not."""
    r = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.5, -0.5, 0.0]])
    mask = torch.ones(4, 3, dtype=torch.bool)
    for logp in (None, -r.abs() - 0.1):                                   # the same rule for the entropy's return
        adv, _ = rloo.advantages(torch.zeros(4), r, mask, k=4, alpha=1.0, estimator="grpo", logp=logp, ent_coef=0.1)
        assert adv.abs().max() < 5 and adv.abs().max() > 0.1


def test_policy_loss_normaliser_and_clip():
    logp_old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.0, 1.5, 0.5]]))                   # ratios 1, 1.5, 0.5
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, stats = rloo.policy_loss(logp, logp_old, adv, mask, clip=0.2)
    # per token: -min(1*1, 1*1) = -1; -min(1.5, 1.2) = -1.2; -min(-0.5, -0.8) = 0.8
    assert abs(loss.item() - (-1 - 1.2 + 0.8) / 3) < 1e-6
    assert abs(stats["policy/clip_frac"] - 2 / 3) < 1e-6
    loss, _ = rloo.policy_loss(logp, logp_old, adv, mask, clip=0.2, n_tokens=6)
    assert abs(loss.item() - (-1 - 1.2 + 0.8) / 6) < 1e-6


def test_entropy_is_a_bonus():
    z = torch.zeros(1, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    entropy = torch.tensor([[2.0, 4.0]], requires_grad=True)
    loss, _ = rloo.policy_loss(z, z, z, mask, entropy=entropy, ent_coef=0.1)
    loss.backward()
    assert abs(loss.item() - (-0.1 * 3)) < 1e-6
    assert (entropy.grad < 0).all()                                     # descending the loss raises entropy


def test_ratio_one_gives_policy_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, requires_grad=True)
    logp = logits.log_softmax(-1)[:, :1].expand(2, 3)                   # any differentiable log-prob
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, _ = rloo.policy_loss(logp, logp.detach(), adv, mask)
    g, = torch.autograd.grad(loss, logits, retain_graph=True)
    g_ref, = torch.autograd.grad(-(logp * adv).sum() / 6, logits)       # REINFORCE at ratio 1
    torch.testing.assert_close(g, g_ref)


def test_entropy_in_the_return_by_hand():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])                      # sample 2 is one token long
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    adv, _ = rloo.advantages(torch.zeros(2), torch.zeros(2, 2), mask, k=2, alpha=0.0, logp=logp, ent_coef=0.1)
    # -log pi rewards: sample 1 (1, 2), total 3; sample 2 (0.5), total 0.5; LOO baseline = the other's total
    expected = torch.tensor([[0.1 * (3 - 0.5), 0.1 * (2 - 0.5)], [0.1 * (0.5 - 3), 0.0]])
    torch.testing.assert_close(adv, expected)


# ----------------------------------------------------------------------------- PPO with a learned critic

def test_per_token_rewards_put_the_outcome_on_the_last_token():
    r = torch.tensor([[9.0, 1.0, 2.0, 3.0], [9.0, 4.0, 9.0, 9.0]])     # column 0 is prompt; row 2 one token long
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    rew = rloo.per_token_rewards(torch.tensor([1.0, 0.5]), r, mask, alpha=0.1)
    torch.testing.assert_close(rew, torch.tensor([[0.0, 0.1, 0.2, 0.3 + 1.0], [0.0, 0.4 + 0.5, 0.0, 0.0]]))
    logp = torch.tensor([[0.0, -1.0, -2.0, -3.0], [0.0, -4.0, 0.0, 0.0]])
    rew = rloo.per_token_rewards(torch.zeros(2), torch.zeros(2, 4), mask, alpha=0.1, logp=logp, ent_coef=0.5)
    torch.testing.assert_close(rew, torch.tensor([[0.0, 0.5, 1.0, 1.5], [0.0, 2.0, 0.0, 0.0]]))


def test_gae_t3_by_hand_for_lambda_one_and_zero():
    # row 1: a prompt column, then 3 completion tokens; row 2: 2 completion tokens, then padding
    rew = torch.tensor([[0.7, 0.5, 0.0, 1.0], [0.0, 0.2, 1.0, 0.9]])
    v = torch.tensor([[5.0, 0.2, 0.4, 0.6], [0.0, 0.3, 0.5, 7.0]])      # off-mask values must be ignored
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)
    inputs = (rew.clone(), v.clone(), mask.clone())
    # lam = 1: A_t = reward-to-go - V(s_t); returns = reward-to-go
    adv, ret = rloo.gae_advantages(rew, v, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 1.5 - 0.2, 1.0 - 0.4, 1.0 - 0.6], [0.0, 1.2 - 0.3, 1.0 - 0.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 1.5, 1.0, 1.0], [0.0, 1.2, 1.0, 0.0]]))
    # lam = 0: A_t = rew_t + V(s_{t+1}) - V(s_t), V = 0 after the last token; returns = rew_t + V(s_{t+1})
    adv, ret = rloo.gae_advantages(rew, v, mask, gamma=1.0, lam=0.0)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.5 + 0.4 - 0.2, 0.0 + 0.6 - 0.4, 1.0 - 0.6],
                                                  [0.0, 0.2 + 0.5 - 0.3, 1.0 - 0.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 0.9, 0.6, 1.0], [0.0, 0.7, 1.0, 0.0]]))
    # gamma = 0.5, lam = 0.5 on row 1: deltas (0.5 + 0.2 - 0.2, 0 + 0.3 - 0.4, 1 - 0.6) = (0.5, -0.1, 0.4)
    adv, _ = rloo.gae_advantages(rew, v, mask, gamma=0.5, lam=0.5)
    a3 = 0.4
    a2 = -0.1 + 0.25 * a3
    a1 = 0.5 + 0.25 * a2
    torch.testing.assert_close(adv[0], torch.tensor([0.0, a1, a2, a3]))
    assert all(torch.equal(a, b) for a, b in zip(inputs, (rew, v, mask)))


def brute_value_loss(v, v_old, G, mask, clip, n_tokens):
    total = 0.0
    for row in range(len(v)):
        for t in range(len(v[row])):
            if mask[row][t]:
                v_clip = v_old[row][t] + min(max(v[row][t] - v_old[row][t], -clip), clip)
                total += 0.5 * max((v[row][t] - G[row][t]) ** 2, (v_clip - G[row][t]) ** 2)
    return total / n_tokens


def test_value_loss_matches_brute_force_and_its_normaliser():
    g = torch.Generator().manual_seed(0)
    v_old = torch.randn(3, 5, generator=g, dtype=torch.float64)
    v = (v_old + 0.4 * torch.randn(3, 5, generator=g, dtype=torch.float64)).requires_grad_()  # some beyond the clip
    G = torch.randn(3, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    loss, stats = rloo.value_loss(v, v_old, G, mask, clip=0.2)
    ref = brute_value_loss(v.tolist(), v_old.tolist(), G.tolist(), mask.tolist(), 0.2, int(mask.sum()))
    assert abs(loss.item() - ref) < 1e-12 and 0 < stats["critic/clip_frac"] < 1
    loss, _ = rloo.value_loss(v, v_old, G, mask, clip=0.2, n_tokens=20)
    assert abs(loss.item() - ref * int(mask.sum()) / 20) < 1e-12
    # a clip that never binds: the gradient is (v - G) / n_tokens on masked tokens, 0 elsewhere
    loss, _ = rloo.value_loss(v, v_old, G, mask, clip=100.0)
    loss.backward()
    torch.testing.assert_close(v.grad, ((v - G) * mask / int(mask.sum())).detach())
    v_far = torch.tensor([[1.0, 1.0]], requires_grad=True)             # 1.0 from v_old = 0, target 0.5
    loss, _ = rloo.value_loss(v_far, torch.zeros(1, 2), torch.full((1, 2), 0.5), torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    # clipped value 0.2: (0.2 - 0.5)^2 = 0.09 < (1 - 0.5)^2 = 0.25, so the unclipped term counts
    assert abs(loss.item() - 0.5 * 0.25) < 1e-7 and torch.allclose(v_far.grad, torch.full((1, 2), 0.25))
    v_low = torch.tensor([[1.0]], requires_grad=True)                  # target 2: clipped 0.2 is further away
    loss, _ = rloo.value_loss(v_low, torch.zeros(1, 1), torch.full((1, 1), 2.0), torch.ones(1, 1, dtype=torch.bool))
    loss.backward()
    assert abs(loss.item() - 0.5 * 1.8 ** 2) < 1e-6 and v_low.grad.item() == 0.0   # pessimistic branch: no gradient


def test_all_fail_statistics_count_only_groups_without_a_success():
    r_o = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])                    # k=2: all-fail, mixed, all-fail
    r = torch.tensor([[1.0, 2.0], [0.0, -1.0], [0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1], [1, 1], [0, 1]], dtype=torch.bool)
    adv, stats = rloo.advantages(r_o, r, mask, k=2, alpha=0.5)
    fail = torch.tensor([True, True, False, False, True, True])
    brute = (adv[fail].abs() * mask[fail]).sum() / mask[fail].sum()        # mean |A| over all-fail tokens
    assert abs(stats["policy/all_fail_groups"] - 2 / 3) < 1e-6
    assert abs(stats["policy/adv_all_fail_abs"] - brute.item()) < 1e-6 and brute > 0
    assert (adv[2:4] != 0).any()                                           # the mixed group has an outcome signal
