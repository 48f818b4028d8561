"""A tabular world where rePIRL can be checked exactly: every trajectory enumerated, the truth known.

What. A token MDP small enough to enumerate: V tokens, T steps, state s_t = (t, y_{t-1}) with
y_{-1} = x the prompt, action a_t = y_t, deterministic transitions, a random true reward r*(s, a).
With deterministic transitions the soft-optimal (maximum-entropy) law of trajectories is

    p*(tau | x) = exp(R*(tau)) / Z*(x),        R*(tau) = sum_t r*(s_t, a_t),

so the expert is sampled from it exactly, and the optimum of Eqn 5 is R_phi = R* + const on every
trajectory. A PRM table r_phi[t, y_{t-1}, a] and a policy table of logits theta[t, y_{t-1}, a] are
trained by Adam, alternating as Algorithm 1 does, through the project's own losses: irl.repirl_loss
(Eqn 5), rloo.advantages and rloo.policy_loss (RLOO, PPO clip): the functions the LLM loop imports,
not copies. Updates use sampled rollouts, as in the LLM loop; measurements are exact sums over all
trajectories (V^T of them; with EOS, every sequence up to its first EOS).

Why. Unit tests check one function at a time; here the whole algorithm has a known answer.

    OMP_NUM_THREADS=1 python tabular.py                       # the report: 5 tables, 3 seeds a row (~1 CPU-minute)
    OMP_NUM_THREADS=1 python tabular.py --quick               # 1 seed a row (~25 CPU-seconds)
    python tabular.py --experiments entropy,reduce            # some of the tables
    python tabular.py --experiments run --eos true --reduce mean   # one run with any flags, its metrics
    python -m pytest tests/test_tabular.py -q                 # ~13 CPU-seconds

Measured (exact, over all trajectories, averaged over prompts):
- corr: Pearson correlation of R_phi(tau) with R*(tau) (R_phi as the run reduces it: sum or mean);
- KL(p*||pi): the trained policy's trajectory law against the expert's;
- KL(p*||p_phi): the PRM's own law p_phi(tau) proportional to exp(R_phi(tau)) against the expert's;
- KL(p*||p_BC), the reference: the tabular policy fit by maximum likelihood to the same expert sample
  (counts + 1/2). Tabular softmax policies are exactly the laws exp(sum_t r(s_t, a_t)) / Z, so this
  is also Eqn 5's maximiser on the sample with an exact partition function: the best a run can do;
- KL(p*||p_emp): the sample's trajectory frequencies + 1/2, a weaker reference (no token structure);
- ESS/P: effective sample size of Eqn 5's weights exp(R_phi - log pi) over the number of policy
  samples, mean over the second half of the run; 1 exactly when pi is proportional to exp(R_phi);
- KL(p*||target): where the policy update itself converges when handed the true reward r*, computed
  exactly by backward induction (`target_policy`): the error of the policy step alone.

Choices (this file's, not the paper's):
1. Outcome reward r_o = 0 by default: the PRM is the policy's only reward, so the policy's maximum-
   entropy target is exp(R_phi / temp) with temp = ent_coef / alpha. `--outcome true` adds r_o = 1
   for 'correct' rollouts, 'correct' meaning R* in the top 1% of its prompt's trajectories (~38% of
   p*'s mass); the same check drives the pseudo-expert correction.
2. The entropy enters as -ent_coef log pi(a_t | s_t) inside the return by default (`--entropy
   reward`), because that is the form whose fixed point is p(tau) proportional to exp(R_phi / temp);
   `--entropy bonus` is rloo.policy_loss's entropy bonus, train.py's default (the paper's form).
3. One expert trajectory per group of k rollouts per iteration (as one expert solution per prompt),
   drawn from a fixed expert data set; learning rates annealed linearly to 0; no gradient clipping
   (Adam makes the tables' gradient scale irrelevant; the paper clips the PRM at 10).
4. --irl airl | sigmoid trains r_phi as the token-level discriminator logit f of irl.airl_loss; the
   policy side is unchanged, so with the entropy in the return at ent_coef = alpha the policy's
   token reward alpha (f - log pi) is exactly alpha * irl.airl_reward.

Results (`python tabular.py`, 3 seeds; V=4, T=5, 1000 expert trajectories; EOS world V=5, T=5):
1. Recovery, ent_coef/alpha = 1, entropy in the return: corr 0.96-0.98, KL(p*||p_phi) within 1.3x
   and KL(p*||pi) within 2.2x of the maximum-likelihood reference (0.02-0.03 nats), from 1.96 nats at
   the uniform start; ESS/P 0.94. Three prompts sharing one partition estimate: corr 0.99.
2. Entropy. ent_coef / alpha is the temperature of the policy's target exp(R_phi / temp). At the
   paper's 0.001 / 0.05 = 0.02 the policy collapses onto the current argmax of R_phi (H(pi) 0.8 nats
   against H(p*) 5.0), ESS/P falls to 0.03, Eqn 5's partition estimate follows one trajectory and
   the PRM itself degrades (corr 0.62-0.64, KL(p*||pi) 3.2 nats). At 3 the policy is too flat (ESS
   0.25, KL 0.8). Only 1 gives both recovery and a policy at p*. And at 1 only the entropy inside the
   return reaches p(tau) proportional to exp(R_phi): the PPO entropy bonus is the gradient of
   H(pi(. | s)) at the visited states only, so it leaves out the entropy still to come; its fixed
   point misses p* by 0.08 nats with fixed lengths and by 0.8-1.8 nats with EOS, where it also
   shortens the trajectories (E[length] 2.3 against 3.8). Both fixed points are pinned exactly in
   tests/test_tabular.py through rloo's own losses.
3. Sum vs mean (EOS world): the sum recovers (corr 0.96, KL(p*||pi) 0.05); the mean, even with the
   policy's return made consistent (token rewards r_phi / length), does worse (corr 0.91, KL 0.18):
   a cost c on every token moves a sum by c * length but every mean by the same c, so a mean of token
   rewards cannot represent R*'s per-token cost. A mean in Eqn 5 with a summed return is the worst:
   the policy's target is no longer exp(R_phi) (KL 2.4, ESS 0.06); train.py's --reduce mean avoids
   it by dividing the policy's token rewards by the length.
4. Pseudo-expert correction (the paper's: correct rollouts move to the expert side) breaks recovery
   here: a correct trajectory is then never in the partition estimate, so Eqn 5 is unbounded above
   along R_phi(correct); R_phi grows on whatever correct trajectories the policy finds, the policy
   collapses onto them (99.5% correct against p*'s 38%), KL(p*||p_phi) 17 nats. Keeping the
   correct rollouts in the partition as well ('both') bounds it (corr 0.92, KL 0.68) but still tilts
   the PRM towards what the checker accepts. An outcome reward of weight 1 next to alpha = 0.05 tilts
   the policy's target by exp(r_o / ent_coef), so the proposal concentrates on correct rollouts
   (ESS/P 0.05) and recovery suffers (corr 0.62) even without the correction.
5. Objectives: AIRL's token discriminator (irl.airl_loss, logit f - log pi(a | s)) recovers as well
   as Eqn 5 (corr 0.96, KL(p*||p_phi) 0.032, KL(p*||pi) 0.033): at equilibrium f = log pi_E(a | s),
   whose sum over a trajectory is log p*(tau). The plain classifier (form="sigmoid") ranks
   trajectories (corr 0.95) but not on the reward's scale (KL(p*||p_phi) 0.36): its f is a density
   ratio against the current policy.

For the LLM loop (train.py), read from these measurements:
- ent_coef / alpha is the temperature of the policy's target: set ent_coef = alpha (a `--prm-temp`
  flag fixing ent_coef = prm_temp * alpha would make that the one knob; train.py's defaults give
  0.001 / 0.1 = 0.01, and prm-only with alpha = 1 gives 0.001); watch irl/ess divided by the number
  of policy samples: far below 1 means the proposal has collapsed and Eqn 5's estimate with it.
- Put the entropy in the return (-ent_coef log pi_old per token: rloo.advantages(..., logp, ent_coef),
  train.py --entropy return) rather than the per-token bonus, most of all with variable lengths.
- Keep R_phi the sum (train.py's default). With --reduce mean the policy's token rewards are
  r_phi / length (train.py does this) so its return is the same R_phi.
- Pseudo-expert correction: off by default, or keep correct rollouts in the partition estimate too.
"""
import itertools
import time
from dataclasses import dataclass, replace

import torch

import cli
import irl
import prm
import rloo


@dataclass
class Args:
    """One run: the world, the expert data, and Algorithm 1's knobs."""
    V: int = 4
    """tokens (with --eos the last one is the end-of-sequence token)"""
    T: int = 5
    """steps: the length of the longest trajectory"""
    eos: bool = False
    """variable lengths: token V-1 ends the trajectory"""
    prompts: int = 1
    """start states x = y_{-1} in 0..prompts-1: the tabular 'prompts'"""
    reward_scale: float = 1.0
    """r*(s, a) ~ N(0, reward_scale^2) - token_cost"""
    token_cost: float = 1.5
    """subtracted from r* of every token: a length preference (a constant when every length is T)"""
    n_expert: int = 1000
    """expert trajectories per prompt, drawn once from p*: the expert data set"""
    iterations: int = 400
    """iterations of Algorithm 1"""
    groups: int = 32
    """prompt groups per iteration (cycling over the prompts), each with one expert trajectory"""
    k: int = 4
    """rollouts per group"""
    irl: str = "repirl"
    """PRM objective: repirl (Eqn 5) | airl | sigmoid (irl.airl_loss's forms) | oracle (r_phi = r*, no PRM step)"""
    reduce: str = "sum"
    """R_phi(tau) from token rewards: sum | mean"""
    policy_reduce: str = "same"
    """the policy's return: same (as --reduce; mean gives each token r_phi / length, as train.py does) | sum"""
    pseudo_expert: str = "off"
    """'correct' rollouts in Eqn 5: off | paper (they move to the expert side) | both (expert side and partition)"""
    top_q: float = 0.01
    """'correct' = R*(tau) in the top q of its prompt's trajectories (0.01: about 1/3 of p*'s mass)"""
    outcome: bool = False
    """outcome reward r_o = 1 for 'correct' rollouts in the policy's return (default: r_o = 0)"""
    prm_lr: float = 0.05
    """PRM table learning rate (Adam)"""
    lr: float = 0.05
    """policy table learning rate (Adam)"""
    anneal: bool = True
    """decay both learning rates linearly to 0, so the tables settle instead of jittering"""
    alpha: float = 0.05
    """weight of the process reward in the policy's return (paper: 0.05 for Qwen2.5-3B-Instruct)"""
    ent_coef: float = 0.05
    """entropy coefficient; ent_coef / alpha is the temperature of the policy's target exp(R_phi / temp)"""
    entropy: str = "reward"
    """how the entropy enters the policy update: reward (-ent_coef log pi in the return; train.py --entropy return) | bonus (train.py's default)"""
    clip: float = 0.2
    """PPO clip epsilon"""
    ppo_epochs: int = 1
    """policy steps per batch of rollouts"""
    swap_sides: bool = False
    """a deliberately broken objective (for the tests): experts and rollouts trade places in Eqn 5"""
    seed: int = 0
    """seed of the world, the expert data and the run"""


# ----------------------------------------------------------------------------- the world

def completion_mask(y: torch.Tensor, eos: int | None) -> torch.Tensor:
    """(N, T) bool: the tokens of each trajectory, up to and including its first EOS."""
    if eos is None:
        return torch.ones_like(y, dtype=torch.bool)
    is_eos = (y == eos).long()                                                  # (N, T)
    return (is_eos.cumsum(1) - is_eos) == 0                                     # (N, T) no EOS before t


def previous(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The state's token y_{t-1} of every step, with y_{-1} = x the prompt: (N, T)."""
    return torch.cat([x[:, None], y[:, :-1]], 1)                                # (N, T)


def per_token(table: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """table[t, y_{t-1}, y_t] at every step: (N, T).

    `table` (T, V, V) is anything indexed by (state, action) = ((t, y_{t-1}), y_t): r*, r_phi, or
    the policy's log-probabilities log pi_theta(a | s).
    """
    t = torch.arange(y.shape[1]).expand_as(y)                                   # (N, T)
    return table[t, previous(x, y), y]                                          # (N, T)


def all_trajectories(V: int, T: int, eos: int | None, prompts: int):
    """Every (x, tau): prompts x (M,), tokens y (M, T) (0 after EOS), completion mask (M, T)."""
    ys = sorted({y if eos not in y else y[:y.index(eos) + 1] + (0,) * (T - 1 - y.index(eos))
                 for y in itertools.product(range(V), repeat=T)})
    y = torch.tensor(ys).repeat(prompts, 1)                                     # (M, T)
    x = torch.arange(prompts).repeat_interleave(len(ys))                        # (M,)
    return x, y, completion_mask(y, eos)


class World:
    """State s_t = (t, y_{t-1}), action a_t = y_t, deterministic transitions, true reward r*(s, a).

    With deterministic transitions the soft-optimal (maximum-entropy) law of trajectories is
    p*(tau | x) = exp(R*(x, tau)) / Z*(x) with R* = sum_t r*(s_t, a_t): the expert is sampled from
    it exactly, and every law below is a vector over the enumerated trajectories.
    """

    def __init__(self, args: Args, gen: torch.Generator):
        self.P = args.prompts
        self.eos = args.V - 1 if args.eos else None
        r = args.reward_scale * torch.randn(args.T, args.V, args.V, generator=gen)  # (T, V, V)
        self.r_star = r - args.token_cost                                       # (T, V, V) r*(s, a)
        self.x, self.y, self.mask = all_trajectories(args.V, args.T, self.eos, args.prompts)   # (M,), (M, T), (M, T)
        self.R_star = self.R(self.r_star, self.x, self.y, self.mask)           # (M,) R*(tau)
        self.logp_star = self.normalise(self.R_star)                            # (M,) log p*(tau | x)
        self.threshold = torch.stack([self.R_star[self.x == p].quantile(1 - args.top_q)
                                      for p in range(self.P)])                  # (P,) R* of a 'correct' trajectory

    def R(self, table, x, y, mask, reduce="sum"):
        """R(tau): sum (or mean) of the token rewards of `table`, through prm.trajectory_reward: (N,)."""
        return prm.trajectory_reward(per_token(table, x, y), mask.float(), reduce)

    def normalise(self, score: torch.Tensor) -> torch.Tensor:
        """log of exp(score) normalised within each prompt: a log-law over the trajectories (M,)."""
        out = score.clone()
        for p in range(self.P):
            out[self.x == p] = score[self.x == p] - score[self.x == p].logsumexp(0)
        return out

    def policy_logp(self, log_pi: torch.Tensor) -> torch.Tensor:
        """log p_pi(tau | x) = sum_t log pi(a_t | s_t) of every trajectory, exactly: (M,)."""
        return (per_token(log_pi, self.x, self.y) * self.mask).sum(-1)

    def kl(self, logp: torch.Tensor, logq: torch.Tensor) -> float:
        """KL(p || q) over the trajectories, averaged over prompts (each law sums to 1 per prompt)."""
        return max(((logp.exp() * (logp - logq)).sum() / self.P).item(), 0.0)    # not -0.000 from rounding

    def entropy(self, logp: torch.Tensor) -> float:
        """H(p) in nats, averaged over prompts."""
        return -((logp.exp() * logp).sum() / self.P).item()

    def corr(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Pearson correlation of a and b over the trajectories of each prompt, averaged over prompts."""
        return sum(torch.corrcoef(torch.stack([a[self.x == p], b[self.x == p]]))[0, 1].item()
                   for p in range(self.P)) / self.P

    def correct(self, x, y, mask) -> torch.Tensor:
        """The outcome check of this world: R*(tau) in the top q of its prompt's trajectories: (N,) bool."""
        return self.R(self.r_star, x, y, mask) >= self.threshold[x]


def sample(log_pi: torch.Tensor, x: torch.Tensor, eos: int | None, gen: torch.Generator):
    """Roll out pi from prompts x (N,): tokens y (N, T) (0 after EOS) and completion mask (N, T)."""
    probs = log_pi.detach().exp()                                               # (T, V, V)
    prev, ys = x, []
    for t in range(log_pi.shape[0]):
        prev = torch.multinomial(probs[t, prev], 1, generator=gen).squeeze(1)   # (N,) y_t ~ pi(. | t, y_{t-1})
        ys.append(prev)
    y = torch.stack(ys, 1)                                                      # (N, T)
    mask = completion_mask(y, eos)                                              # (N, T)
    return y * mask, mask


def sample_expert(world: World, n: int, gen: torch.Generator):
    """n expert trajectories per prompt drawn exactly from p*: x (P n,), y (P n, T), mask (P n, T)."""
    idx = torch.cat([torch.nonzero(world.x == p).squeeze(1)[
        torch.multinomial(world.logp_star[world.x == p].exp(), n, replacement=True, generator=gen)]
        for p in range(world.P)])                                               # (P n,)
    return world.x[idx], world.y[idx], world.mask[idx]


# ----------------------------------------------------------------------------- references

def bc_reference(world: World, x, y, mask, pseudo_count: float = 0.5) -> torch.Tensor:
    """log p_BC(tau) (M,): the tabular policy fit by maximum likelihood to the expert sample.

    pi_BC(a | s) = (n(s, a) + 1/2) / (n(s) + V/2), n counting the expert's tokens; the add-1/2
    pseudo-count keeps KL(p* || p_BC) finite when an action was never demonstrated. With
    deterministic transitions the laws p(tau) proportional to exp(sum_t r(s_t, a_t)) are exactly the
    laws of tabular softmax policies, so (up to the pseudo-count) p_BC is also the maximiser of
    Eqn 5 on the same sample with an exact partition function: the reference for any run here.
    """
    T, V, _ = world.r_star.shape
    n = torch.zeros(T, V, V)                                                    # (T, V, V) n(s, a)
    t = torch.arange(T).expand_as(y)                                            # (E, T)
    n.index_put_((t[mask], previous(x, y)[mask], y[mask]), torch.ones(int(mask.sum())), accumulate=True)
    log_pi_bc = ((n + pseudo_count) / (n + pseudo_count).sum(-1, keepdim=True)).log()  # (T, V, V)
    return world.policy_logp(log_pi_bc)                                         # (M,)


def empirical_reference(world: World, x, y, pseudo_count: float = 0.5) -> torch.Tensor:
    """log p_emp(tau) (M,): the expert sample's trajectory frequencies, add-1/2 smoothed per prompt."""
    hits = (world.y[:, None] == y[None]).all(-1) & (world.x[:, None] == x[None])  # (M, E)
    return world.normalise((hits.sum(1) + pseudo_count).log())                  # (M,)


def target_policy(r: torch.Tensor, temp: float, eos: int | None, entropy: str) -> torch.Tensor:
    """log pi(a | s) (T, V, V): the fixed point of the policy update for token rewards r at temperature temp.

    Backward induction from the last step, Q(s, a) = r(s, a) + V(next state), pi = softmax(Q / temp):
    - entropy in the reward: V(s) = temp logsumexp_a Q(s, a) / temp = E_pi[Q] + temp H(pi(. | s)), the
      soft-optimal policy, whose trajectory law is exactly p(tau) proportional to exp(R(tau) / temp);
    - entropy bonus: V(s) = E_pi[Q], the value of the reward alone. The PPO bonus is the gradient of
      H(pi(. | s)) at the visited states only, so each state's update stops at softmax(Q / temp)
      with a Q that leaves out the entropy still to come.
    """
    V_next = torch.zeros(r.shape[1])                                            # (V,) value after the last step
    log_pi = []
    for t in reversed(range(r.shape[0])):
        Q = r[t] + V_next[None, :]                                              # (V, V) next state is (t + 1, a)
        if eos is not None:
            Q[:, eos] = r[t, :, eos]                                            # EOS ends the episode
        log_pi.insert(0, (Q / temp).log_softmax(-1))                            # (V, V)
        V_next = (temp * (Q / temp).logsumexp(-1) if entropy == "reward"
                  else (log_pi[0].exp() * Q).sum(-1))                           # (V,)
    return torch.stack(log_pi)                                                  # (T, V, V)


# ----------------------------------------------------------------------------- Algorithm 1

def run(args: Args) -> dict:
    """Alternate PRM steps and RLOO policy steps (Algorithm 1); measure everything exactly at the end."""
    gen = torch.Generator().manual_seed(args.seed)
    world = World(args, gen)
    xE_all, yE_all, maskE_all = sample_expert(world, args.n_expert, gen)       # the expert data set
    theta = torch.zeros_like(world.r_star, requires_grad=True)                  # (T, V, V) policy logits
    r_phi = torch.zeros_like(world.r_star, requires_grad=True)                  # (T, V, V) PRM table
    if args.irl == "oracle":
        r_phi.data.copy_(world.r_star)                                          # forward RL on the true reward
    opt, prm_opt = torch.optim.Adam([theta], lr=args.lr), torch.optim.Adam([r_phi], lr=args.prm_lr)
    decay = (lambda it: 1 - it / args.iterations) if args.anneal else (lambda it: 1.0)
    stepped = [opt] if args.irl == "oracle" else [opt, prm_opt]
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in stepped]
    x_group = torch.arange(args.groups) % args.prompts                          # (G,) prompt of each group
    x = x_group.repeat_interleave(args.k)                                       # (N,) k rollouts per group
    N = len(x)
    ess, n_correct = [], []
    for it in range(args.iterations):
        # 1) rollout: k samples per prompt; outcome reward r_o = 0 unless --outcome
        y, mask = sample(theta.log_softmax(-1), x, world.eos, gen)              # (N, T), (N, T)
        with torch.no_grad():
            logp_old = per_token(theta.log_softmax(-1), x, y)                   # (N, T) log pi_old(a_t | s_t)
        logp_tau = (logp_old * mask).sum(-1)                                    # (N,) log pi_theta(tau)
        correct = world.correct(x, y, mask)                                     # (N,) bool
        r_o = correct.float() if args.outcome else torch.zeros(N)               # (N,)
        is_policy = ~correct if args.pseudo_expert == "paper" else torch.ones(N, dtype=torch.bool)  # (N,)

        # 2) PRM update (Eqn 5) against one expert trajectory per group, of the same prompt
        j = x_group * args.n_expert + torch.randint(args.n_expert, (args.groups,), generator=gen)  # (G,)
        xE, yE, maskE = xE_all[j], yE_all[j], maskE_all[j]                      # (E,), (E, T), (E, T)
        R_E = world.R(r_phi, xE, yE, maskE, args.reduce)                        # (E,) R_phi(expert)
        R = world.R(r_phi, x, y, mask, args.reduce)                             # (N,) R_phi(rollout)
        with torch.no_grad():
            logp_E = per_token(theta.log_softmax(-1), xE, yE)                  # (E, T) log pi_theta on expert tokens
        if args.swap_sides:                                                     # broken on purpose
            loss, _ = irl.repirl_loss(R, R_E, (logp_E * maskE).sum(-1), torch.ones_like(R_E, dtype=torch.bool))
        elif args.irl == "repirl":
            R_expert = torch.cat([R_E, R[correct]]) if args.pseudo_expert == "both" else R_E  # (E',)
            loss, _ = irl.repirl_loss(R_expert, R, logp_tau, is_policy)
        elif args.irl in ("airl", "sigmoid"):                                   # token-level discriminator
            f_E, f = per_token(r_phi, xE, yE), per_token(r_phi, x, y)           # (E, T), (N, T) f(s_t, a_t)
            on_pi, on_E = mask & is_policy[:, None], mask & ~is_policy[:, None] # (N, T) policy / pseudo-expert tokens
            loss, _ = irl.airl_loss(torch.cat([f_E[maskE], f[on_E]]), torch.cat([logp_E[maskE], logp_old[on_E]]),
                                    f[on_pi], logp_old[on_pi], form=args.irl)
        if args.irl != "oracle":
            prm_opt.zero_grad()
            loss.backward()
            prm_opt.step()

        # 3) score the rollouts with the updated PRM
        with torch.no_grad():
            r = per_token(r_phi, x, y) * mask                                   # (N, T) r_phi(s_t, a_t)
            if args.reduce == "mean" and args.policy_reduce == "same":
                r = r / mask.sum(-1, keepdim=True)                              # (N, T) the return is then R_phi
            log_w = (world.R(r_phi, x, y, mask, args.reduce) - logp_tau)[is_policy]  # (P,) Eqn 5's log-weights
            w = log_w.softmax(0)                                                # (P,)
            ess.append((1 / (w * w).sum()).item() / len(w) if len(w) else 0.0) # ESS / P; 0: no policy sample
            n_correct.append(correct.float().mean().item())

        # 4) policy update (RLOO): return alpha * r_phi, the entropy inside the return or as a bonus
        in_return = args.entropy == "reward"                                    # -ent_coef log pi in the return
        adv, _ = rloo.advantages(r_o, r, mask, args.k, args.alpha, logp=logp_old if in_return else None,
                                 ent_coef=args.ent_coef if in_return else 0.0)  # (N, T)
        bonus = args.ent_coef if args.entropy == "bonus" else 0.0
        for _ in range(args.ppo_epochs):
            log_pi = theta.log_softmax(-1)                                      # (T, V, V)
            logp = per_token(log_pi, x, y)                                      # (N, T)
            H = -(log_pi.exp() * log_pi).sum(-1)                                # (T, V) entropy of pi(. | s)
            entropy = H[torch.arange(y.shape[1]).expand_as(y), previous(x, y)]  # (N, T) at the visited states
            loss, _ = rloo.policy_loss(logp, logp_old, adv, mask, entropy, args.clip, bonus)
            opt.zero_grad()
            loss.backward()
            opt.step()
        for schedule in schedules:
            schedule.step()

    # 5) measure, exactly, over all trajectories
    with torch.no_grad():
        R_phi = world.R(r_phi, world.x, world.y, world.mask, args.reduce)      # (M,)
        logp_pi = world.policy_logp(theta.log_softmax(-1))                      # (M,) log p_pi(tau | x)
        logp_phi = world.normalise(R_phi)                                       # (M,) log p_phi, p_phi ~ exp(R_phi)
        temp = args.ent_coef / args.alpha
        target = world.policy_logp(target_policy(world.r_star, temp, world.eos, args.entropy)) if temp > 0 else None
        half = len(ess) // 2
        return {"corr": world.corr(R_phi, world.R_star),
                "kl_pi": world.kl(world.logp_star, logp_pi),                   # KL(p* || p_pi)
                "kl_phi": world.kl(world.logp_star, logp_phi),                 # KL(p* || p_phi)
                "kl_phi_pi": world.kl(logp_phi, logp_pi),                      # KL(p_phi || p_pi)
                "kl_bc": world.kl(world.logp_star, bc_reference(world, xE_all, yE_all, maskE_all)),
                "kl_emp": world.kl(world.logp_star, empirical_reference(world, xE_all, yE_all)),
                "kl_target": world.kl(world.logp_star, target) if target is not None else float("inf"),
                "ess": sum(ess[half:]) / len(ess[half:]),                       # ESS / P, second half of the run
                "correct": sum(n_correct[half:]) / len(n_correct[half:]),     # fraction of rollouts 'correct'
                "correct_star": world.logp_star.exp()[world.R_star >= world.threshold[world.x]].sum().item() / world.P,
                "H_pi": world.entropy(logp_pi), "H_star": world.entropy(world.logp_star),
                "len_pi": (logp_pi.exp() * world.mask.sum(-1)).sum().item() / world.P,
                "len_star": (world.logp_star.exp() * world.mask.sum(-1)).sum().item() / world.P}


# ----------------------------------------------------------------------------- the report

def averaged(args: Args, seeds) -> dict:
    """Metrics of one configuration, averaged over seeds."""
    runs = [run(replace(args, seed=s)) for s in seeds]
    return {key: sum(m[key] for m in runs) / len(runs) for key in runs[0]}


def table(title: str, columns: list[str], rows: list[list]) -> str:
    """A Markdown table; floats with 3 decimals."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(columns)]
    line = lambda row: "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |"
    return "\n".join([f"\n### {title}\n", line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cells)])


def experiments(args: Args, seeds, names) -> None:
    """Print the report tables; `args` is the base configuration, every row changes a few fields."""
    t0 = time.time()
    if "recovery" in names:
        rows = []
        for label, a in [(f"seed {s}", replace(args, seed=s)) for s in seeds] + [
                (f"3 prompts, seed {seeds[0]}", replace(args, prompts=3, seed=seeds[0]))]:
            m = run(a)
            rows.append([label, m["corr"], m["kl_pi"], m["kl_phi"], m["kl_bc"], m["kl_emp"], m["ess"]])
        print(table(f"Recovery (V={args.V}, T={args.T}, {args.n_expert} expert trajectories, ent_coef/alpha = "
                    f"{args.ent_coef / args.alpha:g}, entropy in the {args.entropy})",
                    ["run", "corr(R_phi, R*)", "KL(p*||pi)", "KL(p*||p_phi)", "KL(p*||p_BC)", "KL(p*||p_emp)",
                     "ESS/P"], rows))
    if "entropy" in names:
        rows = []
        for entropy in ("bonus", "reward"):
            for ratio in (0.0, 0.02, 0.1, 0.3, 1.0, 3.0):
                m = averaged(replace(args, entropy=entropy, ent_coef=ratio * args.alpha), seeds)
                rows.append([entropy, ratio, m["corr"], m["kl_pi"], m["kl_phi"], m["kl_phi_pi"], m["ess"],
                             m["H_pi"], m["kl_target"]])
        print(table(f"Entropy coefficient relative to alpha (mean of {len(seeds)} seeds; H(p*) = "
                    f"{m['H_star']:.2f} nats; KL(p*||p_BC) = {m['kl_bc']:.3f})",
                    ["entropy", "ent_coef/alpha", "corr", "KL(p*||pi)", "KL(p*||p_phi)", "KL(p_phi||pi)", "ESS/P",
                     "H(pi)", "KL(p*||target)"], rows))
    if "reduce" in names:
        rows, eos = [], replace(args, eos=True, V=args.V + 1)
        for label, a in [("sum", eos), ("mean", replace(eos, reduce="mean")),
                         ("mean in Eqn 5, sum in the return", replace(eos, reduce="mean", policy_reduce="sum")),
                         ("sum, entropy bonus", replace(eos, entropy="bonus")),
                         ("mean, entropy bonus", replace(eos, reduce="mean", entropy="bonus"))]:
            m = averaged(a, seeds)
            rows.append([label, m["corr"], m["kl_phi"], m["kl_pi"], m["ess"], m["len_pi"]])
        print(table(f"Sum vs mean of token rewards (EOS world V={eos.V}, T={eos.T}, mean of {len(seeds)} seeds; "
                    f"E_p*[length] = {m['len_star']:.2f}; KL(p*||p_BC) = {m['kl_bc']:.3f})",
                    ["R_phi", "corr", "KL(p*||p_phi)", "KL(p*||pi)", "ESS/P", "E_pi[length]"], rows))
    if "pseudo" in names:
        rows = []
        for outcome in (False, True):
            for mode in ("off", "paper", "both"):
                m = averaged(replace(args, outcome=outcome, pseudo_expert=mode), seeds)
                rows.append([int(outcome), mode, m["corr"], m["kl_phi"], m["kl_pi"], m["ess"], m["correct"]])
        print(table(f"Pseudo-expert correction and outcome reward ('correct': R* in the top {args.top_q:.0%} of "
                    f"trajectories, p*(correct) = {m['correct_star']:.2f}; mean of {len(seeds)} seeds)",
                    ["r_o", "pseudo-expert", "corr", "KL(p*||p_phi)", "KL(p*||pi)", "ESS/P", "rollouts correct"],
                    rows))
    if "irl" in names:
        rows = []
        for form in ("repirl", "airl", "sigmoid", "oracle"):
            m = averaged(replace(args, irl=form), seeds)
            rows.append([form, m["corr"], m["kl_phi"], m["kl_pi"], m["ess"]])
        print(table(f"PRM objective (mean of {len(seeds)} seeds; oracle: r_phi = r*, the policy update alone)",
                    ["objective", "corr", "KL(p*||p_phi)", "KL(p*||pi)", "ESS/P"], rows))
    print(f"\n({time.time() - t0:.0f} s)")


@dataclass
class Report:
    """The report around the runs: which tables, over how many seeds."""
    experiments: str = "recovery,entropy,reduce,pseudo,irl"
    """comma-separated report tables; 'run' trains once with the flags and prints its metrics"""
    seeds: int = 3
    """seeds per row of the report, from --seed on"""
    quick: bool = False
    """one seed per row (about a third of the time)"""


def parse_args(argv=None) -> tuple:
    """The CLI from `Args` and `Report` (one flag per field, its docstring as help)."""
    ns = cli.dataclass_parser((Args, Report), __doc__.split("\n\n")[0]).parse_args(argv)
    args, report = cli.split(ns, Args), cli.split(ns, Report)
    check_args(args)
    return args, report


def check_args(args: Args):
    """Refuse values a run cannot honour, naming the flag."""
    cli.check_choices(args, {"irl": ("repirl", "airl", "sigmoid", "oracle"), "reduce": ("sum", "mean"),
                             "policy_reduce": ("same", "sum"), "entropy": ("reward", "bonus"),
                             "pseudo_expert": ("off", "paper", "both")})
    if args.alpha <= 0:
        raise SystemExit(f"--alpha {args.alpha}: the process reward is the policy's only reward here; use alpha > 0")
    if args.pseudo_expert == "both" and args.irl != "repirl":
        raise SystemExit("--pseudo-expert both is implemented for --irl repirl only")


def main(argv=None):
    torch.set_num_threads(1)                                                    # tiny tensors: one core is fastest
    args, report = parse_args(argv)
    names = report.experiments.split(",")
    if "run" in names:
        t0 = time.time()
        m = run(args)
        print(" ".join(f"{key} {value:.4g}" for key, value in m.items()), f"({time.time() - t0:.1f} s)")
        return
    experiments(args, list(range(args.seed, args.seed + (1 if report.quick else report.seeds))), names)


if __name__ == "__main__":
    main()
