"""Objectives that learn from expert or outcome data. Pure tensor functions: `(tensors) -> (loss, stats)`.

    repirl_loss    rePIRL Eqn 5, the method           on R_phi(tau) per trajectory
    bc_loss        behaviour cloning (SFT)            on log pi_theta per expert token
    airl_loss      R-AIRL / rePIRL Prop. 3            on f(s, a) per token, expert vs policy
    prime_loss     PRIME implicit PRM                 on beta log(pi_psi / pi_ref), outcome labels
    step_bce_loss  Math-Shepherd, Monte Carlo labels  on the PRM's score per step (rewards: mc_step_rewards)
    kto_loss       KTO on labelled rollouts           on log(pi_theta / pi_ref) per rollout, desirable or not
    tango_loss     RL Tango's verifier (RLOO)         on its final verdict's logit, rewarded by the outcome
The rest of this docstring is rePIRL's; each baseline's function docstring gives its equations,
shapes, normaliser and deviations from its paper.

rePIRL reward objective (arXiv 2602.07832, Eqn 5), maximised over the PRM parameters phi:

    J(phi) = E_{tau ~ expert}[R_phi(tau)] - log E_{tau ~ pi_theta}[ exp(R_phi(tau)) / pi_theta(tau) ]

The second term is the log partition function log Z(phi) = log sum_tau exp(R_phi(tau)), estimated
by importance sampling from the current policy. Its gradient is the self-normalised importance
weighted mean (Eqns 3-4):

    grad J = mean_i grad R_phi(tau_i^E) - sum_j w_j grad R_phi(tau_j),
    w_j    = softmax_j( R_phi(tau_j) - log pi_theta(tau_j) )

`repirl_loss` returns -J computed with a logsumexp, so autograd produces exactly that gradient and
nothing is ever exponentiated outside log space (log pi_theta(tau) of a few hundred tokens is far
below -100). log pi_theta is detached: the policy is only the proposal distribution.

Pseudo-expert correction (Algorithm 1): rollouts whose outcome reward is 1 join the expert side,
and only failed rollouts are policy samples in the partition estimate. The caller chooses with
`is_policy` (= ~correct with the correction, all True without it).

The partition estimate (`partition`, train.py --partition). "uniform" is the paper's: Z sums exp(R_phi)
over all trajectories, so the policy's samples carry weights 1 / pi_theta(tau), and the maximiser is
R_phi = log p_E(tau) + c, the expert's log-density. Those weights span tens of nats when the policy is
far from the expert, and the rarest rollouts take most of them. On the default task they are the
rollouts that go on, as the expert does: at R_phi = 0 the 6% of failed rollouts that go on carry 28%
of the weight; from a warm start that goes on more rarely (--bc-stop-early 0.97), 2.5% carry 50%,
and there the PRM learned to score going on below stopping on two seeds of three. "policy" estimates
log E_{pi_theta}[exp R_phi] with equal weights instead. That is the Donsker-Varadhan bound of
KL(p_E || pi_theta); its maximiser is R_phi = log p_E(tau) / pi_theta(tau) + c, what the expert does
that the current policy does not (as a discriminator learns it), and a policy-gradient step on that
reward is a step down KL(pi_theta || p_E). The README measures both.

Deviations from the paper:
1. R_phi(tau) is the SUM of token rewards in both terms (Algorithm 1 writes a mean in the loss and
   exp(r(tau)) in the weights). With deterministic token transitions, the maximum-entropy trajectory
   law is p(tau) proportional to exp(sum_t r(s_t, a_t)); the sum is what makes R_phi a log density
   and the two terms one objective. The caller reduces (prm.trajectory_reward) and can choose mean.
2. When no rollout is a policy sample (every rollout correct under the correction), the partition
   term is undefined; the loss is then 0 (no PRM update) rather than an unbounded push on R(expert).
3. The constant log P of the importance-sampling mean is kept, so -loss is the estimate of J itself.
"""
import math

import torch
import torch.nn.functional as F


def repirl_loss(R_E: torch.Tensor, R: torch.Tensor, logp: torch.Tensor, is_policy: torch.Tensor,
                partition: str = "uniform"):
    """-J(phi) of Eqn 5.

    R_E       (E,) R_phi of expert trajectories
    R         (N,) R_phi of rollouts
    logp      (N,) log pi_theta(tau) of the rollouts at the sampling temperature (detached here)
    is_policy (N,) bool, rollouts that are samples of pi_theta; the others join the expert side
    partition "uniform": log Z with weights exp(R) / pi_theta (the paper's); "policy": log E_pi[exp R]
    """
    if partition not in ("uniform", "policy"):
        raise ValueError(f"partition {partition!r}: expected uniform or policy")
    R_expert = torch.cat([R_E, R[~is_policy]])                                  # (E',) expert + pseudo-expert
    log_w = (R - logp.detach() if partition == "uniform" else R)[is_policy]     # (P,) log exp(R) / pi, or R
    if log_w.numel() == 0:                                                      # deviation 2
        return R.sum() * 0 + R_E.sum() * 0, {"irl/ess": 0.0, "irl/n_policy": 0}
    log_Z = torch.logsumexp(log_w, 0) - math.log(log_w.numel())                # log (1/P) sum_j exp(R_j) / pi_j
    J = R_expert.mean() - log_Z
    with torch.no_grad():
        w = log_w.softmax(0)                                                    # (P,) self-normalised weights
        ess = (1 / (w * w).sum()).item()
        stats = {"irl/J": J.item(), "irl/ess": ess, "irl/ess_frac": ess / log_w.numel(), "irl/n_policy": log_w.numel(),
                 "irl/R_expert": R_expert.mean().item(), "irl/R_policy": R[is_policy].mean().item()}
    return -J, stats


def bc_loss(logp: torch.Tensor, completion_mask: torch.Tensor, n_tokens=None):
    """Behaviour cloning: mean negative log-likelihood of the expert tokens.

    logp (B, T) from rollout.token_logprobs. Normaliser: `n_tokens`, the completion tokens of the
    whole batch (over micro-batches and ranks); default: those of this call.
    """
    n_tokens = completion_mask.sum().clamp(min=1) if n_tokens is None else n_tokens
    nll = -(logp * completion_mask).sum() / n_tokens
    return nll, {"bc/nll": nll.item()}


# ----------------------------------------------------------------------------- AIRL (R-AIRL; rePIRL Proposition 3)

def _airl_logit(f: torch.Tensor, logp: torch.Tensor, form: str) -> torch.Tensor:
    """The discriminator's logit z, D = sigmoid(z): f - log pi_theta (AIRL) or f (plain classifier)."""
    if form == "airl":
        return f - logp.detach()            # log D - log(1 - D) = f - log pi: the policy is not trained here
    if form == "sigmoid":
        return f
    raise ValueError(f"unknown discriminator form {form!r}; choose airl or sigmoid")


def airl_loss(f_E: torch.Tensor, logp_E: torch.Tensor, f_pi: torch.Tensor, logp_pi: torch.Tensor,
              form: str = "airl", n_E=None, n_pi=None):
    """Discriminator loss of adversarial IRL at the token level (R-AIRL, arXiv 2510.01857; rePIRL Prop. 3).

    Every completion token (s_t, a_t) is one example; expert tokens are labelled 1, policy tokens 0:

        D(s, a)      = exp(f(s, a)) / (exp(f(s, a)) + pi_theta(a | s))       (form="airl")
        log D        = f - logaddexp(f, log pi)  = logsigmoid(f - log pi)
        log (1 - D)  = log pi - logaddexp(f, log pi) = logsigmoid(log pi - f)
        loss         = - sum_{expert tokens} log D / n_E  - sum_{policy tokens} log (1 - D) / n_pi

    Both sides are computed from the logit z = log D - log(1 - D) = f - log pi with logsigmoid,
    never from exp(f) or pi, so f = +-1e4 or log pi = -5000 stay finite. f is the PRM's token output
    (prm.token_rewards); log pi_theta is rollout.token_logprobs at the sampling temperature,
    detached: the discriminator step does not train the policy. The reward handed to the policy is
    the same logit (`airl_reward`).

    Inputs are the SELECTED tokens, flat: f_E = r_E[mask_E], logp_E = logp_E_all[mask_E], etc.
    Why flat rather than (B, T) + masks: expert and rollout batches have different T, and the
    pseudo-expert correction (rePIRL Algorithm 1) moves the tokens of correct rollouts to the expert
    side; with flat tokens that is one `torch.cat`, and autograd routes the gradient back to the
    (B, T) leaves through the boolean indexing. Padding can never leak in (1-D inputs are asserted).

        f_E, logp_E    (n_E,)  expert-side tokens (expert, plus pseudo-expert rollouts if routed there)
        f_pi, logp_pi  (n_pi,) policy-side tokens
        form           "airl": D = sigmoid(f - log pi); "sigmoid": a plain classifier, D = sigmoid(f)

    Normaliser: the mean over expert tokens plus the mean over policy tokens, i.e. balanced classes
    (prior odds 1). `n_E` and `n_pi` (token counts of the whole batch, over micro-batches and ranks)
    let split calls add up to the full loss; an empty side contributes 0, so a micro-batch of
    expert rows only can pass empty policy tensors. One mean over all tokens instead would shift
    the optimal logit by the constant log(n_E / n_pi).

    How the AIRL form differs from a plain sigmoid classifier. With balanced BCE the optimal
    logit is z*(s, a) = log rho_E(s, a) / rho_pi(s, a), rho being the token distributions
    (state occupancy times action probability) of the two sides. Then:
    - plain classifier, D = sigmoid(f): f* = log rho_E(s, a) / rho_pi(s, a) is a density ratio
      against the CURRENT policy. It goes to 0 everywhere as the policy approaches the expert,
      so the learned f carries no reward once imitation succeeds and is not reusable as a PRM
      (GAIL's discriminator; the policy reward log D - log(1 - D) = f).
    - AIRL, D = sigmoid(f - log pi): pi_theta(a | s) is built into D, so f only has to model
      what the policy does not: f* = z* + log pi(a | s) = log pi_E(a | s) + log rho_E(s) / rho_pi(s).
      At the equilibrium pi_theta = pi_E the state term vanishes and f* = log pi_E(a | s), the
      expert's soft advantage (Fu et al. 2018): a reward, up to shaping, that stays meaningful
      after the policy has converged and under which the maximum-entropy optimal policy is pi_E
      itself. The policy reward log D - log(1 - D) = f - log pi is f plus a per-token entropy bonus.

    Deviations from the papers:
    1. f is one scalar head per token; AIRL's decomposition f = g(s, a) + h(s') - h(s) with a
       separate potential h (to disentangle the reward from shaping) is not used, so f keeps the
       state-only term above until the occupancies match.
    2. Token level (dense) only; R-AIRL also studies coarser reward granularities.
    3. Balanced normaliser (mean per side) rather than one mean over all tokens (see above).
    """
    assert f_E.dim() == logp_E.dim() == f_pi.dim() == logp_pi.dim() == 1, "pass selected tokens, e.g. r[mask]"
    n_E = max(f_E.numel(), 1) if n_E is None else n_E
    n_pi = max(f_pi.numel(), 1) if n_pi is None else n_pi
    z_E = _airl_logit(f_E, logp_E, form)                                        # (n_E,) log D - log(1 - D)
    z_pi = _airl_logit(f_pi, logp_pi, form)                                     # (n_pi,)
    log_D_E = F.logsigmoid(z_E)                                                 # (n_E,) log D on expert tokens
    log_1mD_pi = F.logsigmoid(-z_pi)                                            # (n_pi,) log (1 - D) on policy tokens
    loss = -log_D_E.sum() / n_E - log_1mD_pi.sum() / n_pi
    with torch.no_grad():
        D_E, D_pi = z_E.sigmoid(), z_pi.sigmoid()                               # (n_E,), (n_pi,)
        stats = {"irl/airl_bce": loss.item(),
                 "irl/D_expert": _mean(D_E), "irl/D_policy": _mean(D_pi),       # nan for an empty side
                 "irl/disc_acc": 0.5 * (_mean((D_E > 0.5).float()) + _mean((D_pi < 0.5).float())),
                 "irl/f_expert": _mean(f_E), "irl/f_policy": _mean(f_pi)}
    return loss, stats


def airl_reward(f: torch.Tensor, logp: torch.Tensor, completion_mask=None, form: str = "airl") -> torch.Tensor:
    """The policy's token reward log D - log(1 - D): f - log pi_theta (AIRL) or f (sigmoid form), (B, T).

    Detached (a reward is a constant for the policy step) and 0 off `completion_mask` when given
    (torch.where, so a -inf log-prob on padding cannot turn into nan). Pass it to
    rloo.advantages as the process rewards r; with weight alpha, the -log pi part is a per-token
    entropy bonus of coefficient alpha on top of the policy loss's own.
    """
    z = (_airl_logit(f, logp, form)).detach()                                   # (B, T)
    if completion_mask is not None:
        z = torch.where(completion_mask.bool(), z, torch.zeros_like(z))         # (B, T)
    return z


# ----------------------------------------------------------------------------- PRIME (implicit PRM)

def prime_rewards(logp_psi: torch.Tensor, logp_ref: torch.Tensor, completion_mask: torch.Tensor,
                  beta: float) -> torch.Tensor:
    """PRIME's implicit process rewards r_t = beta * (log pi_psi(y_t | s_t) - log pi_ref(y_t | s_t)), (B, T).

    Detached, 0 off `completion_mask`. See `prime_loss` for how they enter the policy update.
    """
    r = beta * (logp_psi - logp_ref)                                            # (B, T)
    return torch.where(completion_mask.bool(), r, torch.zeros_like(r)).detach()  # (B, T)


def prime_loss(logp_psi: torch.Tensor, logp_ref: torch.Tensor, completion_mask: torch.Tensor,
               r_o: torch.Tensor, beta: float, n_seq=None):
    """Cross-entropy of PRIME's implicit PRM against outcome labels (PRIME, Cui et al. 2025, arXiv 2502.01456).

    The implicit PRM is a causal LM pi_psi (initialised as, and scored against, a frozen reference
    pi_ref, both the starting policy); its token reward and sequence reward are

        r_t    = beta * (log pi_psi(y_t | s_t) - log pi_ref(y_t | s_t))       completion tokens
        R(y)   = sum_t r_t = beta * log pi_psi(y) / pi_ref(y)
        loss   = - sum_i [ r_o(i) log sigmoid(R_i) + (1 - r_o(i)) log sigmoid(-R_i) ] / n_seq

    i.e. sigmoid(R) is the probability that the rollout is correct; logsigmoid keeps large |R|
    finite. Trained online on the policy's own rollouts with the checker's labels r_o in {0, 1}.

        logp_psi         (N, T) log pi_psi of the tokens (with grad: psi is trained)
        logp_ref         (N, T) log pi_ref of the same tokens (detached here)
        completion_mask  (N, T) completion tokens
        r_o              (N,)   outcome labels in {0, 1} (floats in [0, 1] also work)
    Both log-probs should be at one temperature (1.0: R is a likelihood ratio of the two models).

    Normaliser: `n_seq`, the number of sequences of the whole batch (over micro-batches and ranks),
    default this call's N: the mean BCE per sequence, as PRIME. Each sequence's term is independent,
    so unlike Eqn 5 micro-batches can back-propagate their own slice directly.

    How PRIME feeds the policy: `prime_rewards` (N, T) are dense token rewards; PRIME takes a
    leave-one-out baseline of the process and outcome parts separately, sums them, and the
    return of token t is the reward-to-go (gamma = 1) plus the outcome at the end. Here they are
    passed to rloo.advantages as the process rewards r with alpha, which does the same, except:
    1. rloo.py subtracts the others' mean SUMMED process reward once per trajectory; PRIME's
       implementation subtracts the others' mean per-token reward from every token before the
       reward-to-go, which adds a length-dependent term (see rloo.py on why we avoid that).
    2. PRIME whitens the final advantages over the batch and weights both parts by 5; alpha here.
    Other deviations: PRIME filters prompts by accuracy (keeps 0.2..0.8) and updates the PRM
    before or after scoring the rollouts with it (its paper compares both); the caller decides both.
    """
    mask = completion_mask.bool()                                               # (N, T)
    N = mask.shape[0]
    n_seq = max(N, 1) if n_seq is None else n_seq
    log_ratio = torch.where(mask, logp_psi - logp_ref.detach(), torch.zeros_like(logp_psi))  # (N, T)
    R = beta * log_ratio.sum(-1)                                                # (N,) beta log pi_psi(y) / pi_ref(y)
    y = r_o.to(R.dtype)                                                         # (N,)
    bce = -(y * F.logsigmoid(R) + (1 - y) * F.logsigmoid(-R))                   # (N,)
    loss = bce.sum() / n_seq
    with torch.no_grad():
        correct = y > 0.5                                                       # (N,)
        stats = {"irl/prime_bce": loss.item(),
                 "irl/prime_acc": _mean(((R > 0) == correct).float()),        # PRIME's "abs accuracy"
                 "irl/R_correct": _mean(R[correct]), "irl/R_wrong": _mean(R[~correct])}
    return loss, stats


# ----------------------------------------------------------------------------- Math-Shepherd: Monte Carlo step labels

def mc_step_labels(n_correct, n_rollouts, hard: bool = True) -> torch.Tensor:
    """Step labels from Monte Carlo completions (Math-Shepherd, Wang et al. 2024, arXiv 2312.08935).

    For the prefix ending at step s of a solution, the caller samples `n_rollouts` completions
    by the policy and counts the `n_correct` that reach the right answer. The label of step s:

        hard (HE): 1 if n_correct >= 1 else 0        (the step can still lead to the answer)
        soft (SE): n_correct / n_rollouts            (an estimate of the value of the prefix)

    n_correct   (S,) or any shape, integers in [0, n_rollouts]
    n_rollouts  int, or a tensor broadcastable to n_correct, >= 1
    Returns float32 labels of n_correct's shape. Example: 2/4, 1/4, 0/4 -> hard (1, 1, 0),
    soft (0.5, 0.25, 0). For the last step the prefix is the whole solution, so nothing is left
    to sample: pass its own outcome (n_correct = r_o, n_rollouts = 1).
    """
    k = torch.as_tensor(n_correct, dtype=torch.float32)                         # (S,)
    n = torch.as_tensor(n_rollouts, dtype=torch.float32)                        # () or (S,)
    if (n < 1).any() or (k < 0).any() or (k > n).any() or (k != k.round()).any():
        raise ValueError("need 0 <= n_correct <= n_rollouts, integer counts, n_rollouts >= 1")
    return (k > 0).float() if hard else (k / n).expand_as(k)


def step_end_positions(step_id: torch.Tensor) -> torch.Tensor:
    """Column of the last token of every step, (B, S) long, -1 padding.

    step_id (B, T) numbers each completion token's step 0, 1, .. and is -1 elsewhere (the layout of
    prm.step_scores and prm.batch_steps); S = the largest step count in the batch.
    """
    B, T = step_id.shape
    S = int(step_id.max()) + 1 if step_id.numel() else 0
    cols = torch.arange(T, device=step_id.device).expand(B, T)                 # (B, T)
    ends = torch.full((B, S + 1), -1, dtype=torch.long, device=step_id.device)  # (B, 1 + S) column 0: off-step
    ends.scatter_reduce_(1, step_id.long() + 1, cols, reduce="amax")           # last column of each step
    return ends[:, 1:]                                                          # (B, S)


def gather_step_scores(r: torch.Tensor, step_end: torch.Tensor) -> torch.Tensor:
    """The PRM's token output at the last token of each step: the step logit, (B, S), 0 on padding.

    r (B, T) from prm.token_rewards; step_end (B, S) long columns, -1 padding (`step_end_positions`).
    Select the real steps with `scores[step_end >= 0]` before `step_bce_loss`. Differentiable: the
    gradient reaches r at the gathered columns only. (prm.step_scores SUMS a step's token rewards,
    the right reading for rePIRL's per-token reward; a Math-Shepherd PRM is a per-step classifier,
    read at the step's last token as Math-Shepherd reads its step tag.)
    """
    valid = step_end >= 0                                                       # (B, S)
    scores = r.gather(1, step_end.clamp(min=0))                                 # (B, S)
    return torch.where(valid, scores, torch.zeros_like(scores))                 # (B, S)


def step_bce_loss(step_logits: torch.Tensor, step_labels: torch.Tensor, n_steps=None):
    """Binary cross-entropy of the PRM's step logits against Monte Carlo step labels (Math-Shepherd).

        loss = - sum_s [ y_s log sigmoid(z_s) + (1 - y_s) log sigmoid(-z_s) ] / n_steps

    step_logits (S,) PRM output at each step's last token (`gather_step_scores`, real steps only)
    step_labels (S,) in [0, 1]: hard (0/1) or soft (fractions) from `mc_step_labels`
    Normaliser: `n_steps`, the step count of the whole batch (over micro-batches and ranks),
    default this call's S: the mean per step.

    Deviations from Math-Shepherd: its PRM predicts the step label as the probability of a "good"
    token at a step tag, with the LM head; here it is the PRM's scalar head, sigmoid(z), read at
    the step's last token. The completer is the current policy, and the solutions are its rollouts.
    """
    z = step_logits                                                             # (S,)
    y = step_labels.to(z.dtype)                                                 # (S,)
    n_steps = max(z.numel(), 1) if n_steps is None else n_steps
    bce = -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))                   # (S,)
    loss = bce.sum() / n_steps
    with torch.no_grad():
        stats = {"irl/step_bce": loss.item(), "irl/step_label": _mean(y), "irl/step_prob": _mean(z.sigmoid()),
                 "irl/step_acc": _mean(((z > 0) == (y > 0.5)).float())}
    return loss, stats


def rollout_step_labels(n_correct: torch.Tensor, n_rollouts: int, r_o: torch.Tensor, step_end: torch.Tensor,
                        hard: bool = True) -> torch.Tensor:
    """Labels (B, S) of every step of B rollouts: Monte Carlo before the last step, the outcome at the last.

    The prefix ending at the last step is the whole rollout, so nothing is left to sample: its label
    is the rollout's own outcome (`mc_step_labels` with n_correct = r_o, n_rollouts = 1).

    n_correct   (B, S) continuations that reached the answer, out of `n_rollouts`, from the prefix ending
                at each step; read for steps before the last only
    r_o         (B,) the rollouts' outcomes in {0, 1}
    step_end    (B, S) last column of each step, -1 padding (`step_end_positions`)
    Returns float32 (B, S), hard or soft as `mc_step_labels`, 0 on padding.
    """
    valid = step_end >= 0                                                       # (B, S)
    is_last = valid & ~torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], 1)  # (B, S) each row's last step
    correct = (r_o > 0.5).float()[:, None].expand_as(step_end)                  # (B, S)
    k = torch.where(is_last, correct, torch.as_tensor(n_correct, dtype=torch.float32, device=step_end.device)) * valid
    n = torch.where(is_last, 1.0, float(n_rollouts))                            # (B, S)
    return mc_step_labels(k, n, hard) * valid                                   # (B, S)


def mc_step_rewards(r: torch.Tensor, step_end: torch.Tensor) -> torch.Tensor:
    """Math-Shepherd's process rewards for the policy: sigmoid(z_s) on the last token of step s, 0 elsewhere.

    r (B, T) from prm.token_rewards, step_end (B, S) from `step_end_positions`; returns (B, T), detached.

    Why this reading: `step_bce_loss` trains sigmoid(z_s), read at the step's last token, to be the
    chance that the prefix ending there still reaches the right answer when the policy continues it
    (hard labels: whether any continuation does; soft: the fraction), a value of the state after
    the step. Math-Shepherd's step-by-step PPO rewards the policy at the end of each step with this
    score. Passed to rloo.advantages as the process rewards r with weight alpha (or to
    rloo.per_token_rewards for --estimator ppo), token t's process return is alpha times the sum of
    the probabilities of the steps ending at or after t: each token earns its own step's score and
    the later ones'; the RLOO baseline subtracts the other samples' mean sum over their steps.

    Deviation to know: a sum of probabilities in (0, 1) grows with the number of steps (up to alpha
    per step), a length incentive the outcome (weight 1) has to dominate; differences of successive
    probabilities (potential-based shaping) would not add one, but are not what Math-Shepherd gives.
    """
    z = gather_step_scores(r.detach(), step_end)                                # (B, S) step logits
    return _at_step_ends(z.float().sigmoid(), step_end, r.shape[1])            # p_s at each step's last token


def _at_step_ends(values: torch.Tensor, step_end: torch.Tensor, T: int) -> torch.Tensor:
    """A value per step (B, S) placed on the last token of its step: (B, T) float32, 0 elsewhere and on padding."""
    rows, steps = (step_end >= 0).nonzero(as_tuple=True)                        # (n,), (n,) real steps
    out = torch.zeros(step_end.shape[0], T, device=values.device)               # (B, T)
    out[rows, step_end[rows, steps]] = values[rows, steps].float()
    return out


# ----------------------------------------------------------------------------- KTO (Kahneman-Tversky Optimisation)

def kto_loss(logp: torch.Tensor, logp_ref: torch.Tensor, completion_mask: torch.Tensor, r_o: torch.Tensor, z_ref,
             beta: float, lambda_D: float = 1.0, lambda_U: float = 1.0, n_seq=None):
    """KTO on the policy's own rollouts, labelled by the checker (Ethayarajh et al. 2024, arXiv 2402.01306).

    Each rollout y of a prompt x is desirable (r_o = 1) or undesirable (r_o = 0); no pairs are needed. With the
    implied reward of the policy against a frozen reference pi_ref (the starting policy):

        r(x, y)  = sum_t [ log pi_theta(y_t | s_t) - log pi_ref(y_t | s_t) ]       completion tokens
        z        = max(z_ref, 0), detached                                        the reference point z_0
        v(x, y)  = lambda_D sigmoid(beta (r - z))     if desirable
                   lambda_U sigmoid(beta (z - r))     if undesirable
        loss     = sum_i (lambda_{y_i} - v_i) / n_seq

    A desirable rollout is pushed up until its log-likelihood ratio exceeds the policy's average
    drift z from the reference, an undesirable one down below it; the sigmoid saturates, so a
    rollout already far on its side stops pulling (beta sets how soon: the paper's risk aversion).

        logp             (N, T) log pi_theta of the tokens (with grad)
        logp_ref         (N, T) log pi_ref of the same tokens, same temperature (detached here)
        completion_mask  (N, T) completion tokens
        r_o              (N,)   outcome labels: desirable when > 0.5
        z_ref            a float or 0-d tensor: the reference point before the clamp (detached here)
        beta             the paper's beta (--kto-beta, 0.1 as the paper's default)
        lambda_D, lambda_U   weights of the desirable and the undesirable side (the paper's loss aversion)

    Normaliser: `n_seq`, the rollouts of the whole batch (over micro-batches and ranks), default this
    call's N: the mean over rollouts, the paper's expectation. z is a constant for the gradient, so
    micro-batches back-propagate their own slices.

    Deviations from the paper:
    1. On-policy: the examples are this iteration's rollouts of the policy, labelled by the checker,
       not a fixed data set, and each batch gets one step (`baselines.kto_step`).
    2. z_0: the paper estimates KL(pi_theta || pi_ref) from mismatched pairs (x_i, y_j), i != j, of
       its micro-batch, because its y are not samples of pi_theta. Rollouts are, so the mean implied
       reward of the batch is itself an unbiased estimate of E_x KL(pi_theta(. | x) || pi_ref(. | x)):
       the caller takes it over the whole batch (all ranks) before the step. Clamped at 0 and
       detached, as in the paper.
    3. lambda_D = lambda_U = 1 in the loop (the arguments stay, for porting). The paper sets
       lambda_D n_D / (lambda_U n_U) in [1, 4/3] for a fixed data set; on-policy the desirable share
       is the rollout accuracy, which moves as the policy learns, so no fixed ratio keeps it there.
    4. Log-probabilities at the sampling temperature, as for the KL penalty of rloo.policy_loss: the
       rollouts are samples of that distribution (the paper samples nothing).
    """
    mask = completion_mask.bool()                                               # (N, T)
    n_seq = max(mask.shape[0], 1) if n_seq is None else n_seq
    log_ratio = torch.where(mask, logp - logp_ref.detach(), torch.zeros_like(logp))  # (N, T)
    r = log_ratio.sum(-1)                                                       # (N,) implied reward
    z = torch.as_tensor(z_ref, dtype=r.dtype, device=r.device).detach().clamp(min=0)  # () reference point
    desirable = r_o > 0.5                                                       # (N,)
    lam = torch.where(desirable, torch.full_like(r, lambda_D), torch.full_like(r, lambda_U))  # (N,) lambda_y
    v = lam * torch.where(desirable, beta * (r - z), beta * (z - r)).sigmoid()  # (N,) value
    loss = (lam - v).sum() / n_seq
    with torch.no_grad():
        stats = {"policy/loss": loss.item(), "kto/z_ref": z.item(),
                 "kto/r_desirable": _mean(r[desirable]), "kto/r_undesirable": _mean(r[~desirable])}
    return loss, stats


# ----------------------------------------------------------------------------- RL Tango: a verifier trained by RL

def tango_loss(z: torch.Tensor, verdicts: torch.Tensor, r_o: torch.Tensor, n_seq=None, n_correct=None):
    """The verifier's policy-gradient loss of RL Tango (Zha et al. 2025, arXiv 2505.15034): RLOO over m
    sampled verdicts per rollout, rewarded by the outcome only.

    Tango trains a generative verifier by RL beside the policy: it reads a rollout, judges every step
    and then the whole solution, and is rewarded only by whether that final judgement matches the
    checker's. Here a verdict is one token, '+' (right) or '-' (wrong), read from the verifier's
    next-token distribution restricted to those two tokens, after the last token of a step; the
    verdict after the rollout's last step is its judgement of the rollout:

        p('+')  = sigmoid(z),   z = log p('+') - log p('-') after the last token     (temperature 1)
        R_j     = 1[ v_j = r_o ]                        v_j in {1 = '+', 0 = '-'}, j = 1..m samples
        A_j     = R_j - mean_{j' != j} R_j'             leave-one-out over the m samples of one rollout
        w_i     = n_seq / (2 n_c(i))                    n_c(i): the batch's rollouts of i's class
        loss    = - sum_i w_i sum_j A_ij log p(v_ij) / (n_seq m)
                  log p(v) = v log sigmoid(z) + (1 - v) log sigmoid(-z)

        z          (B,) verdict logits after each rollout's last token, with grad
        verdicts   (B, m) sampled verdicts, 1 = '+', 0 = '-' (drawn from sigmoid(z) by the caller)
        r_o        (B,) outcome labels in {0, 1}
        n_seq, n_correct   rollouts and correct rollouts of the whole batch (over micro-batches and
                   ranks); default: this call's
    Normaliser: n_seq, the mean over rollouts and samples; rollouts are independent terms, so
    micro-batches back-propagate their own slices. The baseline is rloo.group_baseline's
    leave-one-out mean (written out: this file imports torch only). The weights w give each class
    half the total weight (w = 1 when the batch holds one class), as Tango's code re-weights its
    verifier's reward by inverse class frequency: early on 19 rollouts in 20 are wrong.

    The verdicts after earlier steps are read with the same head and are the policy's process
    rewards (`tango_step_rewards`), but no reward here depends on them: in Tango they shape the final
    verdict through the critique's context, while here no verdict sees another, so their own
    policy-gradient terms would have expectation zero and are not sampled at all. They learn through
    the weights they share with the final verdict, as the outcome-trained readouts of PRIME and
    Math-Shepherd do. Judging the rollout by the conjunction of all step verdicts instead (right when
    every step is '+') would make every verdict count, but was measured to collapse on the default
    task: a rollout is judged right with probability prod_s p_s, larger for the short early answers
    (2 steps) than for the complete solutions (3 steps), so the wrong rollouts' push towards '-'
    outweighed the correct ones' by 1 / p, whatever the class weights; p('+') fell from 0.29 to 0.002
    within 120 iterations (seed 0) and the verifier said '-' to everything.

    Kept from Tango: the verifier is a causal LM (a copy of the starting policy), trained by RL with a
    group baseline on the outcome-level correctness of its judgement alone, with no step labels and
    classes re-weighted; its step verdicts are the policy's process rewards. Simplified: a verdict is
    one token read teacher-forced after its step, not the end of a critique the verifier writes after
    reading the whole solution (so a step's verdict sees the rollout up to that step only); no format
    reward (a one-token verdict cannot be malformed); class weights from this batch's counts, not
    moving averages; RLOO instead of GRPO; one on-policy step per iteration; no KL penalty.
    """
    B, m = verdicts.shape
    assert m >= 2, "RLOO needs at least 2 verdicts per rollout"
    correct = r_o > 0.5                                                         # (B,)
    n_seq = max(B, 1) if n_seq is None else float(n_seq)
    n_correct = float(correct.sum()) if n_correct is None else float(n_correct)
    n_class = torch.where(correct, n_correct, n_seq - n_correct).to(z.dtype)   # (B,) rollouts of each one's class
    w = n_seq / (2 * n_class) if 0 < n_correct < n_seq else torch.ones_like(n_class)   # (B,) class balance
    v = verdicts.to(z.dtype)                                                    # (B, m)
    R = (v == correct[:, None].to(z.dtype)).to(z.dtype)                         # (B, m) the judgement is r_o
    A = R - (R.sum(1, keepdim=True) - R) / (m - 1)                              # (B, m) leave-one-out
    log_p = v * F.logsigmoid(z)[:, None] + (1 - v) * F.logsigmoid(-z)[:, None]  # (B, m)
    loss = -(w[:, None] * A * log_p).sum() / (n_seq * m)
    with torch.no_grad():
        stats = {"irl/tango_pg": loss.item(), "irl/verifier_reward": R.mean().item(),
                 "irl/verifier_greedy_acc": ((z > 0) == correct).float().mean().item(),
                 "irl/verdict_plus": z.sigmoid().mean().item()}
    return loss, stats


def tango_step_rewards(z: torch.Tensor, step_end: torch.Tensor, T: int) -> torch.Tensor:
    """RL Tango's process rewards for the policy: (2 sigmoid(z_s) - 1) / S on the last token of step s, (B, T).

    z (B, S) the verifier's verdict logits at the step ends (`gather_step_scores`), step_end (B, S) from
    `step_end_positions`, S the row's step count. Detached; pass to rloo.advantages as the process
    rewards r with weight alpha, as `mc_step_rewards`.

    Tango rewards a step +1 when its verifier judges it right and -1 when wrong, divided in its code
    by the rollout's number of steps: a '-' is a penalty, not a missing bonus, and the process return
    (n_+ - n_-) / S stays in [-1, 1] however many steps are written, so length earns nothing (a
    sum of undivided verdicts, or Math-Shepherd's sum of probabilities, pays for more steps). One
    deviation: the verdict's expectation under the verifier, 2 p_s - 1, stands in for one sampled
    verdict: the same reward on average, without the sampling noise (Tango samples because its
    verdicts end a written critique, whose expectation is out of reach).
    """
    valid = step_end >= 0                                                       # (B, S)
    n_steps = valid.sum(1, keepdim=True).clamp(min=1)                           # (B, 1)
    return _at_step_ends((2 * z.detach().float().sigmoid() - 1) / n_steps, step_end, T)  # (B, T)


def _mean(x: torch.Tensor) -> float:
    """Mean of a statistic as a float; nan when empty (a side with no tokens this call)."""
    return x.double().mean().item() if x.numel() else float("nan")
