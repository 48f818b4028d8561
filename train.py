"""rePIRL, end to end: learn a token-level PRM from expert trajectories by inverse RL, alternating
PRM updates (Eqn 5) and policy updates (RLOO), as Algorithm 1 of arXiv 2602.07832.

    python train.py                                   # embedded default: tiny model, arithmetic, CPU, minutes
    python train.py --method rloo                     # a baseline in the same loop (see --help)
    torchrun --nproc_per_node 2 train.py              # the same run on 2 processes (gloo on CPU, NCCL on GPU)
    torchrun --nproc_per_node 8 train.py --policy Qwen/Qwen2.5-3B-Instruct --task gsm8k --expert expert.jsonl
    torchrun --nproc_per_node 8 train.py ... --fsdp true --grad-checkpoint true --bf16 true    # 7B models: README

One iteration, in the phases the loop below is labelled with:
  1) rollout: k samples per prompt from pi_theta; outcome reward r_o; log pi_theta(a_t | s_t) of each
     sampled token, recorded by the sampler (rollout.SampledLogprobs, no forward pass of its own);
  2) PRM update on Eqn 5 (irl.repirl_loss): expert trajectories of the same prompts, plus the
     correct rollouts when pseudo-expert correction is on; the failed rollouts are the policy
     samples of the partition estimate;
  3) score every rollout with the updated PRM: token rewards r_phi(s_t, a_t);
  4) policy update: RLOO advantages of r_o + alpha * r_phi, PPO clip, entropy bonus (rloo.py);
  5) log one line and a JSON record; 6) checkpoint atomically.

Methods in the same loop (--method): `repirl`; `rloo` (outcome only, no PRM); `prm-only` (rePIRL
without the outcome reward, paper 4.4); `bc` (behaviour cloning on the same prompts' expert data);
`airl` (token discriminator, R-AIRL); `prime` (implicit PRM on outcome labels); `mcts` (Math-Shepherd:
step labels from Monte Carlo continuations by the policy, the step probability as reward); `kto` (KTO
on the rollouts labelled by r_o, in place of RLOO); `tango` (RL Tango: a verifier LM's step verdicts
as reward). Advantages (--estimator): `rloo`, `grpo`, `reinforce`, or `ppo` (GAE on a learned critic,
a copy of the policy with a value head, saved beside the policy and PRM).

Chapters beside this one: distributed.py (processes, sums and gathers, FSDP, gradient application),
batching.py (micro-batches), loop_data.py (the task, each iteration's prompts and their k rollouts, r_o,
tau^E), baselines.py (the other methods' steps, PPO's critic, behaviour cloning), warmstart.py (the tiny
default's policy), heldout.py (held-out accuracy, PRM AUC), checkpoint.py (the run folder's logs and
checkpoints, resuming).

Deviations from the paper (the maths ones are listed in irl.py and rloo.py):
1. The embedded default warm-starts its tiny policy by behaviour cloning (the paper starts from
   instruct or base models that can already reason); the PRM starts from the same weights. Its
   demonstrations come from a careless teacher on 9 of 10 problems (--bc-stop-early 0.9: the first
   step, then its value as the answer), the expert trajectories of the loop from the careful one,
   so the warm policy has one coherent habit to unlearn, answering too early (README).
2. The policy's learning rate is 3e-5, from issue 14's probe (RLOO from a careless warm start: 0.190
   at 1e-5, 0.205 at 3e-5), not tuned further; the paper's 1e-6 is for 3B-4B models. Alpha 0.1, the
   PRM's 1e-4, the clip, the entropy bonus and k = 4 are the paper's.
3. When the batch is larger than one micro-batch, the PRM step recomputes R_phi under grad in
   micro-batches after a no-grad pass (the weights need the whole batch), so memory is bounded by the
   micro-batch; the gradient is exactly Eqn 5's either way.
"""
import math
import os
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers.utils import logging as hf_logging

import cli
import irl
import prm as prm_lib
import rloo
import rollout
import tasks
from baselines import (airl_update, bc_step, critic_advantages, kto_step, mcts_update, prime_update, tango_rewards,
                       tango_update)
from batching import merge_stats, micro_batches, per_row, ppo_minibatches, prm_rewards, sequence_logprobs
from checkpoint import (check_resume, checkpoints, install_sigterm_handler, load_models, log_iteration, open_run_folder,
                        save_checkpoint)
from distributed import (DEVICE, RANK, WORLD, all_gather, all_sum, apply_gradients, init_processes, print0,
                         stop_processes)
from heldout import greedy_accuracy, prm_auc, write_summary
from loop_data import expert_batch, load_task, load_tokenizer, needs_experts, sample_groups
from warmstart import warm_start


@dataclass
class Args:
    method: str = "repirl"
    """repirl | rloo | prm-only | bc | airl | prime | mcts | kto | tango"""
    task: str = "arithmetic"
    """a task of tasks.py: arithmetic, gsm8k, math, eurus-math, ... (tasks.TASKS)"""
    data: str = ""
    """training data: a hub id (ID[:config][@split]) or a local .jsonl/.parquet; empty: the task's own"""
    test_data: str = ""
    """held-out data, same forms as --data; empty: the task's own"""
    expert: str = ""
    """JSONL of expert trajectories {prompt, response}; empty: the data set's gold solutions"""
    n_train: int = 0
    """training prompts to use (0: the task's default)"""
    prompt_style: str = "auto"
    """auto | chat | plain: chat template for instruct tokenizers, plain text for base models"""
    max_prompt_tokens: int = 0
    """prompts longer than this are reported and skipped, never truncated (0: no limit)"""
    skip_bad: bool = False
    """skip bad records of the data and expert files, with a count, instead of stopping at the first"""
    policy: str = ""
    """HF name or path of the policy; empty: the embedded tiny model, warm-started by behaviour cloning"""
    prm: str = ""
    """HF name or path of the PRM backbone (may be smaller; same tokenizer); empty: the initial policy"""
    out: str = "runs/default"
    """run folder: metrics.jsonl, samples.jsonl, checkpoints"""
    cache: str = "runs/cache"
    """where the tiny default's warm start is cached, keyed by its settings"""
    seed: int = 0
    """seed of the data split, model init and sampling"""
    resume: bool = False
    """continue from the newest complete checkpoint in --out"""

    n_terms: int = 3
    """arithmetic: numbers per problem"""
    lo: int = 1
    """arithmetic: smallest number"""
    hi: int = 9
    """arithmetic: largest number"""
    n_test: int = 200
    """held-out prompts for the final accuracy"""

    bc_steps: int = 800
    """tiny default: behaviour-cloning steps of the warm start (cached under runs/cache)"""
    bc_lr: float = 2e-3
    """peak learning rate of the warm start's behaviour cloning (--method bc in the loop uses --lr, as every method)"""
    bc_batch: int = 64
    """expert trajectories per behaviour-cloning step of the warm start"""
    bc_stop_early: float = 0.9
    """tiny default: chance that the warm start's careless teacher answers after each step but the last (3 terms: the
    share of demonstrations that stop after the first step)"""

    iterations: int = 150
    """iterations of Algorithm 1"""
    prompts: int = 16
    """prompts per iteration, over all ranks"""
    k: int = 4
    """rollouts per prompt"""
    max_new_tokens: int = 40
    """completion length limit"""
    temperature: float = 1.0
    """sampling temperature (log-probs are taken at the same one)"""
    gen_chunk: int = 0
    """prompts per generate call (0: all of a rank's prompts); fixes the sampling seeds"""
    filter_groups: str = "off"
    """off | mixed (rollout accuracy in [0.2, 0.8]) | some-correct | all-fail: prompts kept, `oversample` x sampled"""
    oversample: int = 2
    """with --filter-groups: candidate prompts per kept prompt"""
    micro_batch: int = 64
    """at most this many sequences per forward/backward pass"""
    micro_batch_tokens: int = 8192
    """at most this many tokens (sequences x padded length) per forward/backward pass; a longer sequence goes alone"""
    fsdp: bool = False
    """shard policy, PRM, reference and critic over the processes (FSDP2 fully_shard); no effect on one process"""
    grad_checkpoint: bool = False
    """recompute each decoder layer's activations in the backward pass instead of keeping them"""
    bf16: bool = False
    """run model forward passes under bfloat16 autocast (weights, optimiser states and log-softmax stay float32)"""

    prm_lr: float = 1e-4
    """PRM learning rate (AdamW)"""
    reduce: str = "sum"
    """R_phi(tau) from token rewards: sum | mean"""
    partition: str = "uniform"
    """Eqn 5's log Z: uniform (the paper's: weights exp(R)/pi_theta) | policy (log E_pi[exp R]; irl.py)"""
    pseudo_expert: str = "paper"
    """paper: correct rollouts move to the expert side of Eqn 5; both: they also stay policy samples; off"""
    prm_grad_clip: float = 10.0
    """PRM gradient-norm clip (paper: 10)"""
    freeze_prm: bool = False
    """score with the PRM but never update it (test-time training with a trained --prm)"""
    train_on: str = "train"
    """train | test: the prompts iterations draw from (test + prm-only + --freeze-prm: test-time training)"""
    airl_form: str = "airl"
    """--method airl: airl (D = e^f / (e^f + pi)) or sigmoid (a plain classifier D = sigmoid(f))"""
    prime_beta: float = 0.05
    """--method prime: beta of the implicit PRM r = beta log(pi_psi / pi_ref)"""
    mc_rollouts: int = 1
    """--method mcts: rollouts per prompt whose steps get Monte Carlo labels (the first of each group; 0: all k)"""
    mc_n: int = 4
    """--method mcts: continuations sampled from each step's prefix (Math-Shepherd's N)"""
    mc_soft: bool = False
    """--method mcts: soft labels (fraction of continuations that reach the answer) instead of hard (any does)"""
    kto_beta: float = 0.1
    """--method kto: beta of the KTO value sigmoid(beta (r - z_ref)) (the paper's default)"""
    tango_samples: int = 4
    """--method tango: verdict sequences sampled per rollout for the verifier's RLOO step"""
    critic_lr: float = 0.0
    """--estimator ppo: critic learning rate (AdamW; 0: --prm-lr)"""
    gae_lambda: float = 1.0
    """--estimator ppo: lambda of GAE (gamma is 1); 1: reward-to-go minus V(s_t), 0: one-step TD error"""

    lr: float = 3e-5
    """policy learning rate (AdamW)"""
    alpha: float = 0.1
    """weight of the process reward next to the outcome reward"""
    estimator: str = "rloo"
    """advantage baseline: rloo | grpo | reinforce | ppo (GAE on a learned critic)"""
    clip: float = 0.2
    """PPO clip epsilon"""
    ent_coef: float = 0.001
    """entropy coefficient (maximised); ent_coef / alpha is the temperature of the policy's target"""
    entropy: str = "bonus"
    """bonus: per-state entropy bonus in the loss (the paper's); return: -ent_coef log pi in every token's return"""
    kl_coef: float = 0.0
    """KL penalty to the initial policy (0: none, no reference model kept)"""
    ppo_epochs: int = 1
    """passes over each batch of rollouts"""
    minibatches: int = 1
    """optimizer steps per pass"""
    grad_clip: float = 1.0
    """policy gradient-norm clip"""
    keep_warm_optimizer: bool = False
    """tiny default: start the policy's AdamW from the warm start's moments, not from zero"""

    save_every: int = 50
    """checkpoint every this many iterations (and at the end)"""
    keep: int = 2
    """checkpoints kept"""
    max_bad_steps: int = 3
    """stop after this many iterations in a row with a non-finite gradient (each skipped, never applied)"""
    log_samples: int = 2
    """rollouts per iteration written to samples.jsonl"""
    eval_every: int = 25
    """held-out greedy accuracy every this many iterations, logged as eval/accuracy (0: at the start and end only)"""


def parse_args(argv=None) -> Args:
    """The CLI is generated from `Args` (cli.py): one flag per field, its docstring as help."""
    args = Args(**vars(cli.dataclass_parser(Args, __doc__.split("\n\n")[0]).parse_args(argv)))
    check_args(args)
    return args


CHOICES = {"method": ("repirl", "rloo", "prm-only", "bc", "airl", "prime", "mcts", "kto", "tango"),
           "estimator": ("rloo", "grpo", "reinforce", "ppo"),
           "reduce": ("sum", "mean"), "partition": ("uniform", "policy"), "pseudo_expert": ("paper", "both", "off"),
           "entropy": ("bonus", "return"), "train_on": ("train", "test"), "airl_form": ("airl", "sigmoid"),
           "filter_groups": tuple(tasks.GROUP_FILTERS)}
AT_LEAST = {"k": 1, "prompts": 1, "iterations": 0, "max_new_tokens": 1, "max_prompt_tokens": 0, "gen_chunk": 0,
            "oversample": 1, "micro_batch": 1, "micro_batch_tokens": 1, "ppo_epochs": 1, "minibatches": 1,
            "bc_steps": 0, "bc_batch": 1, "save_every": 1, "keep": 1, "max_bad_steps": 1, "log_samples": 0, "eval_every": 0,
            "bc_stop_early": 0, "alpha": 0, "tango_samples": 2,
            "ent_coef": 0, "kl_coef": 0, "mc_rollouts": 0, "mc_n": 1, "critic_lr": 0, "gae_lambda": 0}
POSITIVE = ("temperature", "lr", "prm_lr", "bc_lr", "clip", "grad_clip", "prm_grad_clip", "prime_beta", "kto_beta")


def check_args(args: Args):
    """Refuse values the loop cannot honour, naming the flag, the value and what was expected."""
    cli.check_choices(args, CHOICES)
    for name, low in AT_LEAST.items():
        if not getattr(args, name) >= low:                                      # NaN fails too
            raise SystemExit(f"{cli.flag(name)} {getattr(args, name)}: expected >= {low}")
    for name in POSITIVE:
        if not getattr(args, name) > 0:
            raise SystemExit(f"{cli.flag(name)} {getattr(args, name)}: expected > 0")
    if args.bc_stop_early > 1:
        raise SystemExit(f"--bc-stop-early {args.bc_stop_early}: expected a fraction in [0, 1]")
    if args.estimator == "rloo" and args.k < 2:
        raise SystemExit(f"--k {args.k}: RLOO needs at least 2 rollouts per prompt")
    if args.prompts % WORLD:
        raise SystemExit(f"--prompts {args.prompts}: expected a multiple of the number of processes ({WORLD})")
    if (args.prompts // WORLD) % (args.gen_chunk or args.prompts // WORLD):
        raise SystemExit(f"--gen-chunk {args.gen_chunk}: expected a divisor of the prompts per process "
                         f"({args.prompts // WORLD})")


def update_reward_model(prm, prm_opt, ref, policy, experts, rolls, logp_old, r_o, args, *, tok, task, examples, it):
    """2) One step of the method's reward model: Eqn 5 (rePIRL), AIRL's discriminator, PRIME's BCE, Math-Shepherd's
    step BCE or RL Tango's verifier (both sample: hence the tokenizer, task, examples, iteration)."""
    if args.method in ("repirl", "prm-only"):
        logp_tau = (logp_old * rolls.completion_mask).sum(-1)                   # (N,) log pi_theta(tau)
        return prm_update(prm, prm_opt, experts, rolls, logp_tau, r_o > 0.5, args)
    if args.method == "airl":
        return airl_update(prm, prm_opt, policy, experts, rolls, logp_old, args)
    if args.method == "mcts":
        return mcts_update(prm, prm_opt, policy, tok, task, examples, rolls, r_o, it, args)
    if args.method == "tango":
        return tango_update(prm, prm_opt, tok, rolls, r_o, it, args)
    return prime_update(prm, prm_opt, ref, rolls, r_o, args)


@torch.no_grad()
def process_rewards(prm, ref, rolls, logp_old, args, tok):
    """3) Token rewards (N, T) of the rollouts for the policy step, in the method's own form."""
    mask = rolls.completion_mask
    if args.method == "prime":                                                  # beta log(pi_psi / pi_ref)
        return irl.prime_rewards(sequence_logprobs(prm, rolls, args, 1.0), sequence_logprobs(ref, rolls, args, 1.0),
                                 mask, args.prime_beta)
    if args.method == "tango":                                                  # (2 p('+') - 1) / S on each step's end
        return tango_rewards(prm, tok, rolls, args)
    r_phi = prm_rewards(prm, rolls, args)                                       # (N, T)
    if args.method == "airl":                                                   # log D - log(1 - D)
        return irl.airl_reward(r_phi, logp_old, mask, args.airl_form)
    if args.method == "mcts":                                                   # sigmoid(z_s) on each step's last token
        return irl.mc_step_rewards(r_phi, irl.step_end_positions(prm_lib.batch_steps(tok, rolls)[0]))
    if args.reduce == "mean":                                                   # the policy sees the R_phi Eqn 5 trained
        r_phi = r_phi / mask.sum(-1, keepdim=True).clamp(min=1)
    return r_phi


def prm_update(prm, prm_opt, experts, rolls, logp_tau, correct, args):
    """2) One AdamW step of the PRM on Eqn 5 over the whole (all-rank) batch.

    The importance weights need every trajectory's R_phi, so the loss is taken on the gathered
    scalars R_phi(tau) and its gradient with respect to them is sent back through the PRM. When the
    experts and the rollouts each fit one micro-batch, R_phi is computed once, with grad; otherwise
    first without grad, then each micro-batch recomputes its R_phi under grad and back-propagates
    its slice of that gradient (memory bounded by the micro-batch).
    """
    parts = [micro_batches(batch, args) for batch in (experts, rolls)]
    one_pass = all(len(p) == 1 for p in parts)                                  # R_phi once, with grad
    with torch.set_grad_enabled(one_pass):
        R_E, R = (per_row(lambda part: trajectory_R(prm, part, args), p) for p in parts)  # (E,), (N,)
    R_E_all = all_gather(R_E).requires_grad_()                                  # (E * W,) leaves
    R_all = all_gather(R).requires_grad_()                                      # (N * W,)
    correct_all = all_gather(correct)                                           # (N * W,)
    if args.pseudo_expert == "both":                                            # correct: expert side AND policy sample
        loss, stats = irl.repirl_loss(torch.cat([R_E_all, R_all[correct_all]]), R_all, all_gather(logp_tau),
                                      torch.ones_like(correct_all), args.partition)
    else:                                                                       # paper: ~correct are the policy samples
        is_policy = ~correct_all if args.pseudo_expert == "paper" else torch.ones_like(correct_all)
        loss, stats = irl.repirl_loss(R_E_all, R_all, all_gather(logp_tau), is_policy, args.partition)
    dR_E, dR = torch.autograd.grad(loss, [R_E_all, R_all])                      # d(-J)/dR_phi per trajectory
    dR_E, dR = dR_E.view(WORLD, -1)[RANK], dR.view(WORLD, -1)[RANK]             # this rank's slices

    prm_opt.zero_grad(set_to_none=True)
    if one_pass:
        ((R_E * dR_E).sum() + (R * dR).sum()).backward()                        # d(-J)/dphi
    else:
        for p, grad in zip(parts, (dR_E, dR)):
            for rows, _, part in p:
                (trajectory_R(prm, part, args) * grad[rows]).sum().backward()   # d(-J)/dphi, this slice
    stats["irl/loss"] = loss.item()
    stats["irl/grad_norm"] = apply_gradients(prm, prm_opt, args.prm_grad_clip)
    return stats


def trajectory_R(prm, part, args) -> torch.Tensor:
    """R_phi(tau) (n,) of a micro-batch: its token rewards reduced by --reduce (sum, or mean)."""
    r = prm_lib.token_rewards(prm, part.ids, part.attention_mask, part.completion_mask)  # (n, t)
    return prm_lib.trajectory_reward(r, part.completion_mask, args.reduce)      # (n,)


def policy_update(policy, opt, rolls, logp_old, adv, ref, args):
    """4) PPO-clip steps on the rollouts: `ppo_epochs` passes of `minibatches` optimizer steps.

    `logp_old` None (see `needs_old_logprobs`): one step on the sampling policy itself, whose
    log-probs are the update's own forward pass, detached (ratio exactly 1), as TRL's GRPO does."""
    stats = []
    logp_ref = sequence_logprobs(ref, rolls, args) if ref is not None else None
    for mb in ppo_minibatches(len(rolls), args):
        n_tokens = all_sum(rolls.completion_mask[mb].sum().float())             # whole-batch normaliser
        opt.zero_grad(set_to_none=True)
        for rows, cols, part in micro_batches(rolls, args, mb):
            logp, ent = rollout.token_logprobs(policy, part.ids, part.attention_mask,
                                               args.temperature, with_entropy=True)          # (n, t), (n, t)
            old = logp.detach() if logp_old is None else logp_old[rows, cols]     # (n, t)
            loss, s = rloo.policy_loss(logp, old, adv[rows, cols], part.completion_mask, ent,
                                       args.clip, args.ent_coef if args.entropy == "bonus" else 0.0,
                                       None if ref is None else logp_ref[rows, cols],
                                       args.kl_coef, n_tokens)
            loss.backward()
            stats.append(s)
        grad_norm = apply_gradients(policy, opt, args.grad_clip)
    return merge_stats(stats, "policy/loss") | {"policy/grad_norm": grad_norm}


def method_rewards(args, r_o: torch.Tensor) -> tuple[torch.Tensor, float]:
    """4) The two parts of the policy's return, per method: the outcome reward and the weight alpha of the
    process reward (Algorithm 1, step 7: r_o + alpha r_phi). `rloo`: the outcome alone (alpha 0);
    `prm-only`: the process reward alone (outcome 0, alpha 1; paper 4.4); every other method: both, alpha
    = --alpha."""
    outcome = torch.zeros_like(r_o) if args.method == "prm-only" else r_o      # (N,)
    alpha = 0.0 if args.method == "rloo" else (1.0 if args.method == "prm-only" else args.alpha)
    return outcome, alpha


def needs_old_logprobs(args) -> bool:
    """Whether PPO needs log pi_old(a_t | s_t) from a forward pass of its own: only when it takes more
    than one optimizer step per batch (after the first, the policy has moved). The rewards (Eqn 5's
    weights, AIRL's, the entropy in the return) read the sampler's log-probs, rolls.logp; a single
    step uses its own forward pass, detached, as log pi_old (ratio exactly 1)."""
    return args.ppo_epochs * args.minibatches > 1


def main(args: Args):
    init_processes()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    ckpt = checkpoints(args.out)[-1] if args.resume and checkpoints(args.out) else None
    state = torch.load(os.path.join(ckpt, "state.pt"), weights_only=True) if ckpt else {}
    if ckpt:
        check_resume(state["args"], args)
    task = load_task(args)
    policy_path = args.policy or warm_start(args, task)
    tok = load_tokenizer(args, task, policy_path)
    # the policy; the reward model (a scalar head per token; PRIME's, Tango's verifier: causal LMs); a frozen
    # reference (KL anchor, PRIME's, KTO's pi_ref); PPO's critic; their AdamW optimisers, restored from the checkpoint
    policy, prm, ref, critic, opt, prm_opt, critic_opt = load_models(args, policy_path, ckpt, state)
    uses_prm, policy_ref = prm is not None, (ref if args.kl_coef > 0 else None)
    start = state.get("iteration", 0)
    open_run_folder(args, start)
    acc_start = state["accuracy_start"] if ckpt else greedy_accuracy(policy, tok, task, task.test, args)
    print0(f"{args.method}: {WORLD} process(es) on {DEVICE}, start accuracy {acc_start:.3f}"
           + (f", resumed from {ckpt}" if ckpt else ""))
    stop, bad = install_sigterm_handler(), 0

    bar = tqdm(range(start, args.iterations), desc=args.method, disable=RANK != 0, initial=start, total=args.iterations)
    for it in bar:
        t0 = time.time()
        # 1) rollout: k samples per prompt, outcome reward, log pi_theta(a_t | s_t) as sampled (rolls.logp)
        rolls, r_o, examples = sample_groups(policy, tok, task, it, args)
        logp_old = sequence_logprobs(policy, rolls, args) if needs_old_logprobs(args) else None  # (N, T) or None
        t_rollout = time.time() - t0
        experts = expert_batch(tok, task, examples).to(DEVICE) if needs_experts(args) else None
        stats = {"rollout/accuracy": all_sum(r_o.mean()).item() / WORLD,
                 "rollout/length": all_sum(rolls.completion_mask.sum(-1).float().mean()).item() / WORLD}

        if args.method in ("bc", "kto"):
            # 2-4) no reward model: behaviour cloning on the expert trajectories, or KTO on the rollouts labelled by r_o
            stats |= (bc_step(policy, opt, experts, args, args.grad_clip) if args.method == "bc"
                      else kto_step(policy, opt, ref, rolls, r_o, args))
            t_prm = t_score = 0.0
        else:
            # 2) reward-model update (Eqn 5 for rePIRL)
            t1 = time.time()
            if uses_prm and not args.freeze_prm:
                stats |= update_reward_model(prm, prm_opt, ref, policy, experts, rolls, rolls.logp, r_o, args,
                                             tok=tok, task=task, examples=examples, it=it)
            # 3) score rollouts with the updated reward model: token rewards (N, T)
            t2 = time.time()
            r_phi = (process_rewards(prm, ref, rolls, rolls.logp, args, tok) if uses_prm
                     else torch.zeros(rolls.ids.shape, device=DEVICE))           # (N, T)
            t_prm, t_score = t2 - t1, time.time() - t2
            # 4) policy update (RLOO; --estimator ppo: GAE on the critic, which takes its own steps first)
            outcome, alpha = method_rewards(args, r_o)
            in_return = args.entropy == "return"
            if critic is None:
                adv, s = rloo.advantages(outcome, r_phi, rolls.completion_mask, args.k, alpha, args.estimator,
                                         rolls.logp if in_return else None, args.ent_coef if in_return else 0.0)
            else:
                adv, s = critic_advantages(critic, critic_opt, outcome, r_phi, rolls, rolls.logp, alpha, args)
            stats |= s | policy_update(policy, opt, rolls, logp_old, adv, policy_ref, args)
        t_total = time.time() - t0

        # 5) log (and, every --eval-every iterations, held-out greedy accuracy)
        n_tokens = all_sum(rolls.completion_mask.sum().float()).item()
        stats |= {"iteration": it + 1, "time/rollout": t_rollout, "time/prm": t_prm, "time/score": t_score,
                  "time/policy": t_total - t_rollout - t_prm - t_score, "time/iteration": t_total,
                  "rollout/tokens_per_s": n_tokens / t_total}
        if args.eval_every and ((it + 1) % args.eval_every == 0 or it + 1 == args.iterations):
            stats["eval/accuracy"] = greedy_accuracy(policy, tok, task, task.test, args)
        log_iteration(args, it, stats, rolls, r_o)
        bad = bad + 1 if any(k.endswith("grad_norm") and math.isnan(v) for k, v in stats.items()) else 0
        if bad >= args.max_bad_steps:
            raise SystemExit(f"non-finite gradients in {bad} iterations in a row (skipped, never applied); "
                             f"the last checkpoint in {args.out} is intact: lower --lr/--prm-lr and --resume")
        bar.set_postfix(acc=f"{stats['rollout/accuracy']:.2f}")

        # 6) checkpoint (every rank takes part: a SIGTERM seen by any rank stops them all after this iteration)
        stopping = all_sum(torch.tensor(float(stop.is_set()), device=DEVICE)).item() > 0
        if (it + 1) % args.save_every == 0 or it + 1 == args.iterations or stopping:
            save_checkpoint(args, it + 1, policy, prm, opt, prm_opt, tok, acc_start, critic, critic_opt)
        if stopping:
            print0(f"SIGTERM: saved iteration {it + 1}; continue with --resume")
            raise SystemExit(143)

    last = stats.get("eval/accuracy") if start < args.iterations else None   # measured after the last iteration
    acc_end = greedy_accuracy(policy, tok, task, task.test, args) if last is None else last
    auc = prm_auc(policy, prm, tok, task, task.test[:64], args) if args.method in ("repirl", "prm-only") else float("nan")
    summary = {"eval/accuracy_start": acc_start, "eval/accuracy_end": acc_end, "eval/prm_auc": auc}
    write_summary(args, summary)
    stop_processes()
    return summary


if __name__ == "__main__":
    main(parse_args())
