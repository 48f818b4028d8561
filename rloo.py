"""Policy update: advantages with token-level process rewards, the PPO-clipped surrogate, and PPO's
critic (GAE advantages, clipped value loss).

Pure tensor functions returning `(tensors or loss, stats)`; no model, no config object.

Rewards of rollout i of a prompt's group of k (rePIRL Algorithm 1, step 7):
- the outcome r_o(i) in {0, 1}, at the end of the trajectory;
- the process rewards r_phi(i, t) of the PRM on every completion token, weighted by alpha.

Return of token t, and its advantage with a leave-one-out (RLOO) baseline:

    G(i, t) = r_o(i) + alpha * sum_{t' >= t} r_phi(i, t')                      (reward-to-go)
    A(i, t) = [r_o(i) - mean_{j != i} r_o(j)] + alpha * [sum_{t' >= t} r_phi(i, t') - mean_{j != i} R_phi(j)]

with R_phi(j) = sum_t r_phi(j, t). Both baselines are functions of the other samples only, so the
estimate stays unbiased; the process baseline is a whole-trajectory sum, subtracted once, so it is
independent of the length of sample i. (Subtracting a baseline from every token reward instead
would add a length bonus or penalty to the objective.) Outcome and process parts are baselined
separately and summed, as PRIME does; for RLOO this equals one baseline on the total.

`estimator` picks the baseline (rePIRL Table 3): `rloo` leave-one-out mean; `reinforce` none;
`grpo` group mean and standard deviation. For GRPO's process part the project follows
DeepSeekMath's process supervision (arXiv 2402.03300, 4.1.3): every token reward is standardised
by the mean and standard deviation of all token rewards of its group, and token t's advantage is
the sum of the standardised rewards from t on. (Standardising the reward-to-go by the spread of
the groups' totals instead divides a per-token quantity by a per-sequence spread: when the totals
of a group nearly agree, the advantages explode.) Here the per-token mean is subtracted, so GRPO's
process part carries the length term that RLOO's avoids.

`ppo` replaces the group baseline by a learned critic V(s_t), PPO's value head (Schulman et al.
2017), with generalised advantage estimation (GAE, Schulman et al. 2016) over the same rewards:

    rew(i, t) = alpha * r_phi(i, t) + [t = last completion token of i] * r_o(i)
    delta_t   = rew_t + gamma V(s_{t+1}) - V(s_t),     A_t = sum_{l >= 0} (gamma lam)^l delta_{t+l}
    G_t       = A_t + V(s_t)                           (the critic's target; clipped value loss)

With gamma = lam = 1, A_t = sum_{t' >= t} rew_t' - V(s_t): the same reward-to-go as above, with a
per-state baseline in place of the others' mean. Deviations from PPO as usually run for LLMs:
1. no advantage whitening: the critic is the only baseline, so a new critic (zero head, V = 0)
   starts as REINFORCE without a baseline and improves as it learns;
2. a completion cut at the length limit is terminal like one ending in EOS (the checker judges the
   cut text, so nothing follows it): V = 0 after every last token;
3. gamma = lam = 1 by default, as Open-Reasoner-Zero (arXiv 2503.24290) runs PPO on reasoning:
   with lam < 1 the outcome's weight shrinks geometrically with its distance from token t
   (PPO's usual lam = 0.95 is `--gae-lambda 0.95`).
The critic takes one step per policy step (the same minibatches), on the clipped value loss.

Policy loss (every estimator): PPO clip (eps = 0.2) on the ratio pi_theta / pi_old per token, an
entropy BONUS (maximum-entropy RL, Eqn 6: the paper's printed sign on E[log pi] is a typo; entropy
is maximised), and an optional k3 KL penalty to a reference policy.

Normaliser: every loss here is sum over completion tokens / `n_tokens`, the number of completion
tokens in the whole batch (over micro-batches and ranks, passed in by the caller), so micro-batch
and rank splits sum to the full-batch loss.
"""
import torch
import torch.nn.functional as F


def group_baseline(x: torch.Tensor, estimator: str):
    """Baseline b and scale s for scores x (G, k) of k samples per prompt: A = (x - b) / s."""
    k = x.shape[1]
    if estimator == "rloo":
        assert k >= 2, "RLOO needs k >= 2 samples per prompt"
        return (x.sum(1, keepdim=True) - x) / (k - 1), torch.ones_like(x)     # (G, k) leave-one-out mean
    if estimator == "grpo":
        return x.mean(1, keepdim=True).expand_as(x), x.std(1, keepdim=True).expand_as(x) + 1e-6
    if estimator == "reinforce":
        return torch.zeros_like(x), torch.ones_like(x)
    raise ValueError(f"unknown advantage estimator {estimator!r}; choose rloo, grpo or reinforce")


def advantages(r_o: torch.Tensor, r: torch.Tensor, completion_mask: torch.Tensor, k: int, alpha: float,
               estimator: str = "rloo", logp: torch.Tensor | None = None, ent_coef: float = 0.0):
    """Token advantages A (N, T) from outcomes r_o (N,) and process rewards r (N, T).

    Rows are grouped as k consecutive samples of one prompt (N = G * k). With `logp` (N, T), the
    sampling log-probs, the entropy enters the return instead of the loss: each token also earns
    -ent_coef * log pi(a_t | s_t), reward-to-go and baseline as for the process rewards. That is the
    maximum-entropy return whose optimum is pi(tau) proportional to exp(alpha R_phi(tau) / ent_coef)
    (tabular.py measures it; the per-state bonus of `policy_loss` misses the entropy still to come).
    """
    N, T = r.shape
    G = N // k
    assert G * k == N, f"{N} rollouts do not split into groups of k={k}"
    mask = completion_mask.float()                                              # (N, T)
    b_o, s_o = group_baseline(r_o.float().view(G, k), estimator)                # (G, k), (G, k)
    A_o = (r_o.float().view(G, k) - b_o) / s_o                                  # (G, k)
    A_p = token_reward_advantages(r, mask, k, estimator)                        # (N, T)
    adv = (A_o.reshape(N, 1) + alpha * A_p) * mask                              # (N, T)
    if logp is not None and ent_coef:
        A_h = token_reward_advantages(-logp.detach(), mask, k, estimator)       # (N, T) reward -log pi(a_t | s_t)
        adv = adv + ent_coef * A_h * mask                                       # (N, T)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        all_fail = (r_o.view(G, k) <= 0).all(1).repeat_interleave(k)            # (N,) groups with no outcome signal
        m_fail = mask[all_fail]                                                 # (n_fail, T)
        stats = {"policy/adv_outcome_abs": A_o.abs().mean().item(),
                 "policy/adv_process_abs": ((alpha * A_p).abs() * mask).sum().item() / n.item(),
                 "policy/zero_adv_groups": (r_o.view(G, k).std(1) == 0).float().mean().item(),
                 "policy/all_fail_groups": all_fail.float().mean().item(),
                 "policy/adv_all_fail_abs": (adv[all_fail].abs() * m_fail).sum().item() / max(m_fail.sum().item(), 1)}
    return adv, stats


def token_reward_advantages(r: torch.Tensor, mask: torch.Tensor, k: int, estimator: str) -> torch.Tensor:
    """Advantages (N, T) of per-token rewards r (N, T) on the completion tokens `mask` (N, T, float):
    the reward-to-go minus the group baseline of the trajectories' totals (rloo, reinforce), or for
    grpo DeepSeekMath's process supervision: rewards standardised over the group's tokens, summed from t on."""
    N, T = r.shape
    r = r * mask                                                                # (N, T)
    if estimator == "grpo":
        x, m = r.view(N // k, k * T), mask.view(N // k, k * T)                  # (G, kT) a group's tokens
        n = m.sum(1, keepdim=True)                                              # (G, 1)
        mu = x.sum(1, keepdim=True) / n.clamp(min=1)                            # (G, 1)
        sd = ((((x - mu) * m) ** 2).sum(1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()  # (G, 1)
        z = ((x - mu) / (sd + 1e-6) * m).view(N, T)                             # (N, T) standardised token rewards
        return z.flip(-1).cumsum(-1).flip(-1)                                   # (N, T)
    b, s = group_baseline(r.sum(-1).view(N // k, k), estimator)                 # (G, k) on R(tau)
    return (r.flip(-1).cumsum(-1).flip(-1) - b.reshape(N, 1)) / s.reshape(N, 1)  # (N, T) reward-to-go - b


def policy_loss(logp, logp_old, adv, completion_mask, entropy=None, clip: float = 0.2, ent_coef: float = 0.0,
                logp_ref=None, kl_coef: float = 0.0, n_tokens=None):
    """PPO-clipped surrogate with entropy bonus and optional KL penalty, all (N, T) inputs.

    loss = sum_t [ -min(rho A, clip(rho, 1-eps, 1+eps) A) - ent_coef H + kl_coef KL ] / n_tokens
    """
    mask = completion_mask.float()                                              # (N, T)
    n_tokens = mask.sum().clamp(min=1) if n_tokens is None else n_tokens
    ratio = torch.exp(logp - logp_old.detach())                                 # (N, T) rho
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)    # (N, T)
    per_token = -surrogate                                                      # (N, T)
    if entropy is not None and ent_coef:
        per_token = per_token - ent_coef * entropy                              # bonus: entropy is maximised
    if logp_ref is not None and kl_coef:
        log_ratio_ref = logp_ref.detach() - logp                                # (N, T)
        per_token = per_token + kl_coef * (log_ratio_ref.exp() - log_ratio_ref - 1)  # k3 estimator of KL(pi||ref)
    loss = (per_token * mask).sum() / n_tokens
    with torch.no_grad():
        m = mask.sum().clamp(min=1)
        log_ratio = logp - logp_old
        stats = {"policy/loss": loss.item(),
                 "policy/clip_frac": (((ratio - 1).abs() > clip).float() * mask).sum().item() / m.item(),
                 "policy/approx_kl": (((ratio - 1) - log_ratio) * mask).sum().item() / m.item()}
        if entropy is not None:
            stats["policy/entropy"] = (entropy * mask).sum().item() / m.item()
    return loss, stats


# ----------------------------------------------------------------------------- PPO with a learned critic (GAE)

def per_token_rewards(r_o: torch.Tensor, r: torch.Tensor, completion_mask: torch.Tensor, alpha: float,
                      logp: torch.Tensor | None = None, ent_coef: float = 0.0) -> torch.Tensor:
    """The reward rew(i, t) of every completion token for a critic, (N, T), 0 off the mask:

        rew(i, t) = alpha * r(i, t) + [t = last completion token of i] * r_o(i)   ( - ent_coef log pi(a_t | s_t) )

    r_o (N,) outcomes, r (N, T) process rewards; with `logp` (N, T) the entropy enters the return as in
    `advantages`. Summed over t' >= t it is the return G(i, t) that `advantages` baselines.
    """
    mask = completion_mask.float()                                              # (N, T)
    last = mask * (1 - F.pad(mask[:, 1:], (0, 1)))                              # (N, T) 1 on the last completion token
    rew = (alpha * r + r_o.float()[:, None] * last) * mask                      # (N, T)
    if logp is not None and ent_coef:
        rew = rew - ent_coef * logp.detach() * mask                             # (N, T)
    return rew


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, completion_mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 1.0):
    """GAE advantages and value targets over each row's completion tokens (Schulman et al. 2016).

        delta_t = rew_t + gamma V(s_{t+1}) - V(s_t)       V(s_{t+1}) = 0 after the last completion token
        A_t     = delta_t + gamma lam A_{t+1}             = sum_{l >= 0} (gamma lam)^l delta_{t+l}
        G_t     = A_t + V(s_t)

    rewards          (N, T) rew_t (`per_token_rewards`: outcome on the last token, alpha * process on all)
    values           (N, T) V(s_t) lined up with the action a_t it precedes: the state s_t = [x, y_<t]
                     ends at position t - 1, so it is the critic's output at position t - 1
                     (prm.state_values reads it there and shifts it onto t)
    completion_mask  (N, T) completion tokens, contiguous in each row
    Returns (advantages, returns), (N, T) each, detached, 0 off the mask. lam = 1: A_t is the reward-to-go
    minus V(s_t) (Monte Carlo, unbiased); lam = 0: the one-step TD error (biased by the critic, lower variance).
    """
    mask = completion_mask.float()                                              # (N, T)
    rew = rewards.detach() * mask                                               # (N, T)
    v = values.detach() * mask                                                  # (N, T) V(s_t)
    v_next = F.pad(v[:, 1:], (0, 1))                                            # (N, T) V(s_{t+1}), 0 after the end
    delta = rew + gamma * v_next - v                                            # (N, T)
    adv = torch.zeros_like(delta)                                               # (N, T)
    running = torch.zeros_like(delta[:, 0])                                     # (N,) A_{t+1}
    for t in reversed(range(delta.shape[1])):
        running = (delta[:, t] + gamma * lam * running) * mask[:, t]           # (N,) 0 before the completion
        adv[:, t] = running
    return adv, (adv + v) * mask


def value_loss(v: torch.Tensor, v_old: torch.Tensor, returns: torch.Tensor, completion_mask: torch.Tensor,
               clip: float = 0.2, n_tokens=None):
    """PPO's clipped value loss, all (N, T) inputs:

        v_clip = v_old + clip(v - v_old, -eps, eps)
        loss   = sum_t 0.5 * max((v - G_t)^2, (v_clip - G_t)^2) / n_tokens

    v are the critic's values V(s_t) under grad, v_old the same before this batch's steps, G_t the
    returns of `gae_advantages`. The max keeps the pessimistic of the two, so a step cannot gain by
    moving a value further than eps from v_old (PPO2's clip, applied to the critic).
    Normaliser: `n_tokens`, the completion tokens of the whole batch (default: those of this call).
    """
    mask = completion_mask.float()                                              # (N, T)
    n_tokens = mask.sum().clamp(min=1) if n_tokens is None else n_tokens
    G, v_old = returns.detach(), v_old.detach()                                 # (N, T), (N, T)
    v_clip = v_old + (v - v_old).clamp(-clip, clip)                             # (N, T)
    per_token = 0.5 * torch.max((v - G) ** 2, (v_clip - G) ** 2)                # (N, T)
    loss = (per_token * mask).sum() / n_tokens
    with torch.no_grad():
        m = mask.sum().clamp(min=1).item()
        stats = {"critic/loss": loss.item(),
                 "critic/clip_frac": (((v - v_old).abs() > clip).float() * mask).sum().item() / m,
                 "critic/value": (v * mask).sum().item() / m}
    return loss, stats
