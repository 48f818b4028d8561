"""rePIRL, end to end: learn a token-level PRM from expert trajectories by inverse RL, alternating
PRM updates (Eqn 5) and policy updates (RLOO), as Algorithm 1 of arXiv 2602.07832.

    python train.py                                   # embedded default: tiny model, arithmetic, CPU, minutes
    python train.py --method rloo                     # a baseline in the same loop (see --help)
    torchrun --nproc_per_node 2 train.py              # the same run on 2 processes (gloo on CPU, NCCL on GPU)
    torchrun --nproc_per_node 8 train.py --policy Qwen/Qwen2.5-3B-Instruct --task gsm8k --expert expert.jsonl
    torchrun --nproc_per_node 8 train.py ... --fsdp true --grad-checkpoint true --bf16 true    # 7B models: README

One iteration, in the phases the loop below is labelled with:
  1) rollout: k samples per prompt from pi_theta; outcome reward r_o; log pi_theta(tau) at the
     sampling temperature (also the PPO old log-probs, so ratios start at exactly 1);
  2) PRM update on Eqn 5 (irl.repirl_loss): expert trajectories of the same prompts, plus the
     correct rollouts when pseudo-expert correction is on; the failed rollouts are the policy
     samples of the partition estimate;
  3) score every rollout with the updated PRM: token rewards r_phi(s_t, a_t);
  4) policy update: RLOO advantages of r_o + alpha * r_phi, PPO clip, entropy bonus (rloo.py);
  5) log one line and a JSON record; 6) checkpoint atomically.

Methods in the same loop (--method): `repirl`; `rloo` (outcome only, no PRM); `prm-only` (rePIRL
without the outcome reward, paper 4.4); `bc` (behaviour cloning on the same prompts' expert data);
`airl` (token discriminator, R-AIRL); `prime` (implicit PRM on outcome labels); `mcts` (Math-Shepherd:
step labels from Monte Carlo continuations by the policy, the step probability as reward). Advantages
(--estimator): `rloo`, `grpo`, `reinforce`, or `ppo` (GAE on a learned critic, a copy of the policy
with a value head, saved beside the policy and PRM).

Distributed: prompts are split by rank in contiguous blocks, all k samples of a prompt on one rank.
Every loss is normalised by whole-batch counts and gradients are SUMMED over ranks, so N processes
take the step one process would take on the whole batch. The Eqn 5 partition estimate couples all
samples: its gradient is taken on the gathered per-trajectory rewards R_phi (scalars), and each rank
back-propagates its own slice. Sampling is seeded per (seed, iteration, generation chunk), so the
rollouts do not depend on how many processes share the work, and a resumed run replays exactly.
With --fsdp every model is sharded over the ranks (FSDP2, `fully_shard` per decoder layer), its
reduce-scatter set to sum; every rank then runs the same forward passes (generation synced, equal
micro-batch counts), and checkpoints hold full weights, loadable with or without FSDP.

Memory: forward passes run in micro-batches of at most --micro-batch-tokens tokens (rows sorted by
length, all-pad columns trimmed); --grad-checkpoint recomputes each decoder layer in the backward
pass; --bf16 runs forward passes under bfloat16 autocast (log-softmax in float32; the sampler's cached
passes and the recomputed full ones then round differently, so PPO ratios start at 1 up to bfloat16).

Deviations from the paper (the maths ones are listed in irl.py and rloo.py):
1. The embedded default warm-starts its tiny policy by behaviour cloning (the paper starts from
   instruct or base models that can already reason); the PRM starts from the same weights. Its
   demonstrations come from a careless teacher on 9 of 10 problems (--bc-stop-early 0.9: the first
   step, then its value as the answer), the expert trajectories of the loop from the careful one,
   so the warm policy has one coherent habit to unlearn, answering too early (README).
2. The policy's learning rate is 3e-5, from issue 14's probe (RLOO from a careless warm start: 0.190
   at 1e-5, 0.205 at 3e-5), not tuned further; the paper's 1e-6 is for 3B-4B models. Alpha 0.1, the
   PRM's 1e-4, the clip, the entropy bonus and k = 4 are the paper's.
3. The PRM step recomputes R_phi under grad in micro-batches after a no-grad pass (the weights need
   the whole batch), so memory is bounded by the micro-batch; the gradient is exactly Eqn 5's.
"""
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

import cli
import irl
import prm as prm_lib
import rloo
import rollout
import tasks
import tiny


@dataclass
class Args:
    method: str = "repirl"
    """repirl | rloo | prm-only | bc | airl | prime | mcts"""
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
    """tiny default: fraction of the warm start's demonstrations that stop after the first step (a careless teacher)"""

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


CHOICES = {"method": ("repirl", "rloo", "prm-only", "bc", "airl", "prime", "mcts"),
           "estimator": ("rloo", "grpo", "reinforce", "ppo"),
           "reduce": ("sum", "mean"), "pseudo_expert": ("paper", "both", "off"), "entropy": ("bonus", "return"),
           "train_on": ("train", "test"), "airl_form": ("airl", "sigmoid"), "filter_groups": tuple(tasks.GROUP_FILTERS)}
AT_LEAST = {"k": 1, "prompts": 1, "iterations": 0, "max_new_tokens": 1, "max_prompt_tokens": 0, "gen_chunk": 0,
            "oversample": 1, "micro_batch": 1, "micro_batch_tokens": 1, "ppo_epochs": 1, "minibatches": 1,
            "bc_steps": 0, "bc_batch": 1, "save_every": 1, "keep": 1, "max_bad_steps": 1, "log_samples": 0, "eval_every": 0,
            "bc_stop_early": 0, "alpha": 0,
            "ent_coef": 0, "kl_coef": 0, "mc_rollouts": 0, "mc_n": 1, "critic_lr": 0, "gae_lambda": 0}
POSITIVE = ("temperature", "lr", "prm_lr", "bc_lr", "clip", "grad_clip", "prm_grad_clip", "prime_beta")


def flag(name: str) -> str:
    """The command-line flag of an Args field: max_new_tokens -> --max-new-tokens."""
    return "--" + name.replace("_", "-")


def check_args(args: Args):
    """Refuse values the loop cannot honour, naming the flag, the value and what was expected."""
    for name, choices in CHOICES.items():
        if getattr(args, name) not in choices:
            raise SystemExit(f"{flag(name)} {getattr(args, name)!r}: expected one of {', '.join(choices)}")
    for name, low in AT_LEAST.items():
        if not getattr(args, name) >= low:                                      # NaN fails too
            raise SystemExit(f"{flag(name)} {getattr(args, name)}: expected >= {low}")
    for name in POSITIVE:
        if not getattr(args, name) > 0:
            raise SystemExit(f"{flag(name)} {getattr(args, name)}: expected > 0")
    if args.bc_stop_early > 1:
        raise SystemExit(f"--bc-stop-early {args.bc_stop_early}: expected a fraction in [0, 1]")
    if args.estimator == "rloo" and args.k < 2:
        raise SystemExit(f"--k {args.k}: RLOO needs at least 2 rollouts per prompt")
    if args.prompts % WORLD:
        raise SystemExit(f"--prompts {args.prompts}: expected a multiple of the number of processes ({WORLD})")
    if (args.prompts // WORLD) % (args.gen_chunk or args.prompts // WORLD):
        raise SystemExit(f"--gen-chunk {args.gen_chunk}: expected a divisor of the prompts per process "
                         f"({args.prompts // WORLD})")


# ----------------------------------------------------------------------------- distributed plumbing

RANK, WORLD = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
LOCAL_RANK = int(os.environ.get("LOCAL_RANK", 0))
DEVICE = torch.device(f"cuda:{LOCAL_RANK}" if torch.cuda.is_available() else "cpu")


def print0(*a, **kw):
    if RANK == 0:
        tqdm.write(" ".join(str(x) for x in a), **kw)


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a copy; identity on one process)."""
    x = x.clone()
    if WORLD > 1:
        dist.all_reduce(x)
    return x


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped tensors of all ranks along dim 0, in rank order (detached)."""
    if WORLD == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(WORLD)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


def all_max(n: int) -> int:
    """The largest of an integer over ranks."""
    x = torch.tensor(n, device=DEVICE)
    if WORLD > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return int(x)


def sharded(args) -> bool:
    """Whether the models are sharded over ranks (--fsdp on several processes): then every rank must run
    the same forward passes, since each one gathers a model's weights from all ranks."""
    return args.fsdp and WORLD > 1


def shard(model):
    """FSDP2: each decoder layer, then the rest of the model, becomes a unit whose weights, gradients and
    optimiser states are split over the ranks and gathered for its forward and backward passes.

    FSDP averages gradients over ranks; this code's losses are normalised by whole-batch counts and want
    their SUM (as `apply_gradients` takes it without FSDP), so every unit's reduce-scatter sums.
    """
    # FSDP2 warns when a unit returns a view (every Linear on (B, T, d) input does): an in-place op on it would
    # skip the all-gather. Nothing here writes model outputs in place, and the 2-process tests check FSDP's
    # steps against one process's, so the warning is noise
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    for unit in model.modules():
        if isinstance(unit, FSDPModule):
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)                        # plain SUM: gloo has no PREMUL_SUM
    return model


def decoder_layers(model) -> list:
    """The repeated blocks of a transformer (Qwen2DecoderLayer, LlamaDecoderLayer, ...): the unit of FSDP
    sharding and of activation checkpointing."""
    names = set(model._no_split_modules or ())
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer") or type(m).__name__ in names]


def local(t: torch.Tensor) -> torch.Tensor:
    """The part of a tensor this rank holds: its shard for an FSDP parameter or gradient (DTensor)."""
    return t.to_local() if isinstance(t, DTensor) else t


def apply_gradients(model, opt, max_norm: float) -> float:
    """Sum gradients over ranks (every loss is normalised by whole-batch counts), clip, step.

    An FSDP model's gradients arrive summed and sharded (`shard`); `clip_grad_norm_` then returns the
    norm as a DTensor whose full value is the norm over all shards. A non-finite gradient is never
    applied: the step is skipped and the returned norm is nan, which the loop counts (it stops after
    `max_bad_steps` in a row, the last checkpoint intact).
    """
    fsdp = isinstance(model, FSDPModule)
    if WORLD > 1 and not fsdp:
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
    if not torch.isfinite(norm):
        opt.zero_grad(set_to_none=True)
        return float("nan")
    opt.step()
    overflow = torch.tensor(float(not all(torch.isfinite(local(p)).all() for p in model.parameters())), device=DEVICE)
    if (all_sum(overflow) if fsdp else overflow) > 0:                          # a finite step can still overflow
        raise SystemExit(f"{type(model).__name__}: parameters became non-finite after an optimizer step "
                         "(learning rate too high?); nothing was checkpointed after it, resume from the last one")
    return norm.item()


def sampling_seed(seed: int, iteration: int, chunk: int, stream: str = "") -> int:
    """The seed of one generate call, a function of where it sits in the run only.

    `stream` names a sampler other than the rollouts (Math-Shepherd's continuations: "mc"), so its
    seeds never coincide with theirs.
    """
    key = f"{seed}/{iteration}/{chunk}" + (f"/{stream}" if stream else "")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


# ----------------------------------------------------------------------------- data

def iteration_prompts(train: list, it: int, n: int, seed: int) -> list:
    """The n training examples of iteration `it`: consecutive slices of per-epoch shuffles."""
    epoch, pos = divmod(it, len(train) // n)
    order = epoch_order(len(train), seed, epoch)
    return [train[i] for i in order[pos * n:(pos + 1) * n]]


@functools.lru_cache(maxsize=2)
def epoch_order(size: int, seed: int, epoch: int) -> list:
    """The shuffle of one epoch, made once (a data set of 500k prompts costs a fraction of a second)."""
    order = list(range(size))
    random.Random(f"{seed}/epoch{epoch}").shuffle(order)
    return order


def outcome_rewards(task, completions: list[str], examples: list) -> list[float]:
    """r_o of each completion; batched when the task can (code tasks run their programs in parallel)."""
    if hasattr(task, "rewards"):
        return task.rewards(completions, examples)
    return [task.reward(c, ex) for c, ex in zip(completions, examples)]


def expert_batch(tok, task, examples) -> rollout.Batch:
    """The expert trajectories tau^E of the given examples, as a Batch."""
    return rollout.encode(tok, [task.render(ex, tok) for ex in examples], [ex.solution for ex in examples])


def micro_batches(batch, args, rows=None) -> list:
    """The micro-batches of a batch's `rows` (default all): (rows, cols, part) triples.

    Rows are sorted by length and packed while rows x width stays within --micro-batch-tokens and
    the rows within --micro-batch (a row longer than the budget goes alone), so peak memory follows
    the budget, not the batch. `part` is the sub-batch (rollout.select): the micro-batch's rows, in
    batch order, trimmed to the columns `cols` they use, so short rows do not pay for long ones;
    any other (N, T) tensor of the batch is read at [rows, cols]. Sharded, every rank runs as many
    micro-batches as the rank that needs most: its largest are halved until the counts match (every
    rank holds as many rows, so one of two rows or more is always left to halve; halves fit the budget).
    """
    rows = torch.arange(len(batch), device=batch.ids.device) if rows is None else rows
    real = batch.attention_mask[rows].bool()                                    # (n, T)
    first = real.long().argmax(1).tolist()                                      # (n,) first real column of each row
    last = (real.shape[1] - 1 - real.flip(1).long().argmax(1)).tolist()         # (n,) last real column

    groups, lo, hi = [], 0, 0                                                   # lo, hi: the open group's columns
    for i in sorted(range(len(first)), key=lambda i: last[i] - first[i]):      # shortest first
        width = max(hi, last[i]) - min(lo, first[i]) + 1                       # once trimmed, with row i
        if not groups or len(groups[-1]) == args.micro_batch or (len(groups[-1]) + 1) * width > args.micro_batch_tokens:
            groups.append([])
            lo, hi = first[i], last[i]
        groups[-1].append(i)
        lo, hi = min(lo, first[i]), max(hi, last[i])
    if sharded(args):
        for _ in range(all_max(len(groups)) - len(groups)):
            largest = max(groups, key=len)
            groups.remove(largest)
            groups += [largest[:len(largest) // 2], largest[len(largest) // 2:]]
    out = []
    for group in groups:
        mine = rows[sorted(group)]                                              # (n_mb,) in batch order
        cols = slice(min(first[i] for i in group), max(last[i] for i in group) + 1)
        out.append((mine, cols, rollout.select(batch, mine)))
    return out


def per_token(fn, batch, args) -> torch.Tensor:
    """fn(part) -> (n, t) on every micro-batch, put back in place: (N, T), 0 on columns a part trims."""
    out = torch.zeros(batch.ids.shape, device=batch.ids.device)                 # (N, T)
    for rows, cols, part in micro_batches(batch, args):
        out[rows, cols] = fn(part)                                              # (n, t)
    return out


# ----------------------------------------------------------------------------- model passes

@torch.no_grad()
def sequence_logprobs(model, batch, args, temperature=None):
    """Token log-probs (N, T) of a batch, by default at the sampling temperature, in micro-batches, no grad."""
    return per_token(lambda part: rollout.token_logprobs(model, part.ids, part.attention_mask,
                                                         temperature or args.temperature), batch, args)


@torch.no_grad()
def prm_rewards(prm, batch, args):
    """Token rewards r_phi (N, T) of a batch, in micro-batches, no grad."""
    return per_token(lambda part: prm_lib.token_rewards(prm, part.ids, part.attention_mask, part.completion_mask),
                     batch, args)


@torch.no_grad()
def sample_groups(policy, tok, task, it: int, args: Args):
    """k rollouts for each of this rank's prompts of iteration `it`, and their outcome rewards.

    Each generate call is seeded by (seed, iteration, chunk index over all ranks), so the rollouts
    do not depend on the number of processes. With --filter-groups, `oversample` times more prompts
    are sampled and the groups the filter keeps (tasks.GROUP_FILTERS) come first; the batch is then
    filled in order, so every rank keeps exactly its share of prompts.
    """
    filtering = args.filter_groups != "off"
    per_rank = args.prompts // WORLD
    n = per_rank * (args.oversample if filtering else 1)
    pool = task.test if args.train_on == "test" else task.train
    examples = iteration_prompts(pool, it, n * WORLD, args.seed)[RANK * n:(RANK + 1) * n]
    chunk = args.gen_chunk or per_rank
    parts = []
    for c in range(0, n, chunk):
        torch.manual_seed(sampling_seed(args.seed, it, (RANK * n + c) // chunk))
        parts.append(rollout.generate(policy, tok, [task.render(ex, tok) for ex in examples[c:c + chunk]],
                                      args.k, args.max_new_tokens, args.temperature, sharded(args)))
    rolls = rollout.concat(parts, tok.pad_token_id).to(DEVICE)
    r_o = torch.tensor(outcome_rewards(task, rolls.completions, [examples[i // args.k] for i in range(len(rolls))]),
                       device=DEVICE)                                           # (N,)
    if filtering:
        keep = tasks.filter_groups(r_o, args.k, *tasks.GROUP_FILTERS[args.filter_groups])  # (n,) prompts kept
        order = sorted(range(n), key=lambda g: not keep[g])[:per_rank]          # kept first, stable
        rows = torch.tensor([g * args.k + j for g in order for j in range(args.k)], device=DEVICE)
        rolls, r_o, examples = rollout.select(rolls, rows), r_o[rows], [examples[g] for g in order]
    return rolls, r_o, examples


def update_reward_model(prm, prm_opt, ref, policy, experts, rolls, logp_old, r_o, args, *, tok, task, examples, it):
    """2) One step of the method's reward model: Eqn 5 (rePIRL), the AIRL discriminator, PRIME's BCE, or
    Math-Shepherd's step BCE (which samples continuations: hence the tokenizer, task, examples, iteration)."""
    if args.method in ("repirl", "prm-only"):
        logp_tau = (logp_old * rolls.completion_mask).sum(-1)                   # (N,) log pi_theta(tau)
        return prm_update(prm, prm_opt, experts, rolls, logp_tau, r_o > 0.5, args)
    if args.method == "airl":
        return airl_update(prm, prm_opt, policy, experts, rolls, logp_old, args)
    if args.method == "mcts":
        return mcts_update(prm, prm_opt, policy, tok, task, examples, rolls, r_o, it, args)
    return prime_update(prm, prm_opt, ref, rolls, r_o, args)


@torch.no_grad()
def process_rewards(prm, ref, rolls, logp_old, args, tok):
    """3) Token rewards (N, T) of the rollouts for the policy step, in the method's own form."""
    mask = rolls.completion_mask
    if args.method == "prime":                                                  # beta log(pi_psi / pi_ref)
        return irl.prime_rewards(sequence_logprobs(prm, rolls, args, 1.0), sequence_logprobs(ref, rolls, args, 1.0),
                                 mask, args.prime_beta)
    r_phi = prm_rewards(prm, rolls, args)                                       # (N, T)
    if args.method == "airl":                                                   # log D - log(1 - D)
        return irl.airl_reward(r_phi, logp_old, mask, args.airl_form)
    if args.method == "mcts":                                                   # sigmoid(z_s) on each step's last token
        return irl.mc_step_rewards(r_phi, irl.step_end_positions(prm_lib.batch_steps(tok, rolls)[0]))
    if args.reduce == "mean":                                                   # the policy sees the R_phi Eqn 5 trained
        r_phi = r_phi / mask.sum(-1, keepdim=True).clamp(min=1)
    return r_phi


def airl_update(prm, prm_opt, policy, experts, rolls, logp_old, args):
    """2) AIRL: the PRM's token output is the discriminator logit f; expert tokens 1, policy tokens 0."""
    logp_E = sequence_logprobs(policy, experts, args)                           # (E, T_E) at the sampling temperature
    n_E = all_sum(experts.completion_mask.sum().float())                        # whole-batch normalisers
    n_pi = all_sum(rolls.completion_mask.sum().float())
    prm_opt.zero_grad(set_to_none=True)
    loss_total, none = 0.0, torch.zeros(0, device=DEVICE)
    for batch, logp, is_expert in ((experts, logp_E, True), (rolls, logp_old, False)):
        for rows, cols, part in micro_batches(batch, args):
            m = part.completion_mask
            f = prm_lib.token_rewards(prm, part.ids, part.attention_mask, m)[m]  # (n_tokens,)
            sides = (f, logp[rows, cols][m], none, none) if is_expert else (none, none, f, logp[rows, cols][m])
            loss, _ = irl.airl_loss(*sides, form=args.airl_form, n_E=n_E, n_pi=n_pi)
            loss.backward()
            loss_total += loss.item()
    return finish_reward_step(prm, prm_opt, args, {"irl/loss": loss_total})


def prime_update(prm, prm_opt, ref, rolls, r_o, args):
    """2) PRIME: cross-entropy of sigmoid(beta sum_t log pi_psi / pi_ref) against the outcome labels."""
    n_seq = all_sum(torch.tensor(float(len(rolls)), device=DEVICE))
    prm_opt.zero_grad(set_to_none=True)
    loss_total = 0.0
    for rows, _, part in micro_batches(rolls, args):
        logp_psi = rollout.token_logprobs(prm, part.ids, part.attention_mask)                      # (n, t)
        with torch.no_grad():
            logp_ref = rollout.token_logprobs(ref, part.ids, part.attention_mask)                  # (n, t)
        loss, _ = irl.prime_loss(logp_psi, logp_ref, part.completion_mask, r_o[rows], args.prime_beta, n_seq)
        loss.backward()
        loss_total += loss.item()
    return finish_reward_step(prm, prm_opt, args, {"irl/loss": loss_total})


def mcts_update(prm, prm_opt, policy, tok, task, examples, rolls, r_o, it, args):
    """2) Math-Shepherd: Monte Carlo labels for the steps of some rollouts, then BCE on the PRM's step logits.

    The first `mc_rollouts` rollouts of each prompt are cut into steps (prm.batch_steps); every step
    but the last is labelled by `mc_n` continuations of its prefix (`mc_correct_counts`), the last by
    the rollout's own outcome (irl.rollout_step_labels); the PRM's output at each step's last token
    is the step logit, trained with one AdamW step on irl.step_bce_loss (mean over all ranks' steps).
    """
    per_prompt = min(args.mc_rollouts or args.k, args.k)
    rows = torch.tensor([i for i in range(len(rolls)) if i % args.k < per_prompt], device=DEVICE)
    labelled = rollout.select(rolls, rows)
    step_end = irl.step_end_positions(prm_lib.batch_steps(tok, labelled)[0])   # (n, S)
    n_correct, n_prefixes = mc_correct_counts(policy, tok, task, [examples[i // args.k] for i in rows.tolist()],
                                              labelled, step_end, per_prompt, it, args)  # (n, S)
    labels = irl.rollout_step_labels(n_correct, args.mc_n, r_o[rows], step_end, hard=not args.mc_soft)  # (n, S)
    valid = step_end >= 0                                                       # (n, S)
    n_steps = all_sum(valid.sum().float())                                      # whole-batch normaliser
    prm_opt.zero_grad(set_to_none=True)
    loss_total = 0.0
    for rows, cols, part in micro_batches(labelled, args):
        r = prm_lib.token_rewards(prm, part.ids, part.attention_mask, part.completion_mask)  # (n_mb, t)
        z = irl.gather_step_scores(r, step_end[rows] - cols.start)              # (n_mb, S) step logits; -1 stays < 0
        loss, _ = irl.step_bce_loss(z[valid[rows]], labels[rows][valid[rows]], n_steps)
        loss.backward()
        loss_total += loss.item()
    stats = {"irl/loss": loss_total, "irl/step_label": (all_sum(labels[valid].sum()) / n_steps).item(),
             "irl/mc_prefixes": all_sum(torch.tensor(float(n_prefixes), device=DEVICE)).item()}  # over all ranks
    return finish_reward_step(prm, prm_opt, args, stats)


@torch.no_grad()
def mc_correct_counts(policy, tok, task, examples, batch, step_end, per_prompt, it, args):
    """How many of `mc_n` continuations of each step's prefix reach the answer: (n, S), 0 at last steps.

    The prefix of step s is the prompt and the completion tokens up to the step's last token, the
    state the rollout was in after writing the step; the current policy continues it at the sampling
    temperature within what is left of the rollout's token budget, and the task's checker judges the
    whole completion (prefix and continuation). `batch` holds `per_prompt` rows of each of this rank's
    prompts, in prompt order, `examples` the rows' examples. One generate call per generation chunk
    of prompts, seeded by (seed, iteration, chunk, "mc") as the rollouts are, so with the same
    --gen-chunk the labels do not depend on the number of processes. Returns the counts and the
    number of prefixes continued.
    """
    n, S = step_end.shape
    first = int(batch.completion_mask.any(0).long().argmax())                   # first completion column
    start = batch.attention_mask.long().argmax(1)                               # (n,) first real token of each row
    n_steps = (step_end >= 0).sum(1)                                            # (n,)
    per_rank = args.prompts // WORLD
    chunk = args.gen_chunk or per_rank
    counts, n_prefixes = torch.zeros(n, S, device=DEVICE), 0
    for c in range(0, per_rank, chunk):
        torch.manual_seed(sampling_seed(args.seed, it, (RANK * per_rank + c) // chunk, "mc"))
        jobs = [(i, s) for i in range(c * per_prompt, (c + chunk) * per_prompt) for s in range(int(n_steps[i]) - 1)]
        if not (all_max(len(jobs)) if sharded(args) else jobs):                 # every rollout of the chunk is one step
            continue
        if not jobs:                                                            # sharded: join the other ranks' passes
            rollout.generate_from_ids(policy, tok, [batch.ids[0, start[0]:first].tolist()], 1, 1, args.temperature,
                                      synced_gpus=True)                         # (1 row, unused)
            continue
        prefixes = [batch.ids[i, start[i]:step_end[i, s] + 1].tolist() for i, s in jobs]
        used = [int(step_end[i, s]) + 1 - first for i, s in jobs]              # completion tokens written so far
        cont = rollout.generate_from_ids(policy, tok, prefixes, args.mc_n, args.max_new_tokens - min(used),
                                         args.temperature, sharded(args))       # (jobs * mc_n) rows
        texts = []
        for j in range(len(jobs)):
            written = prefixes[j][len(prefixes[j]) - used[j]:]                  # the completion up to the step
            for row in range(j * args.mc_n, (j + 1) * args.mc_n):
                rest = cont.ids[row][cont.completion_mask[row]].tolist()[:args.max_new_tokens - used[j]]
                texts.append(tok.decode(written + rest, skip_special_tokens=True))
        r = outcome_rewards(task, texts, [examples[i] for i, _ in jobs for _ in range(args.mc_n)])
        correct = (torch.tensor(r, device=DEVICE) > 0.5).float().view(len(jobs), args.mc_n).sum(1)  # (jobs,)
        for j, (i, s) in enumerate(jobs):
            counts[i, s] = correct[j]
        n_prefixes += len(jobs)
    return counts, n_prefixes


def finish_reward_step(prm, prm_opt, args, stats):
    """Apply the reward model's gradients; the gradient norm joins the stats."""
    stats["irl/grad_norm"] = apply_gradients(prm, prm_opt, args.prm_grad_clip)
    return stats


def prm_update(prm, prm_opt, experts, rolls, logp_tau, correct, args):
    """2) One AdamW step of the PRM on Eqn 5 over the whole (all-rank) batch.

    The importance weights need every trajectory's R_phi, so: R_phi of all trajectories without
    grad; the loss and its gradient with respect to those scalars on the gathered batch; then each
    micro-batch recomputes its R_phi under grad and back-propagates its slice of that gradient.
    """
    R_E = prm_lib.trajectory_reward(prm_rewards(prm, experts, args), experts.completion_mask, args.reduce)  # (E,)
    R = prm_lib.trajectory_reward(prm_rewards(prm, rolls, args), rolls.completion_mask, args.reduce)        # (N,)
    R_E_all = all_gather(R_E).requires_grad_()                                  # (E * W,) leaves
    R_all = all_gather(R).requires_grad_()                                      # (N * W,)
    correct_all = all_gather(correct)                                           # (N * W,)
    if args.pseudo_expert == "both":                                            # correct: expert side AND policy sample
        loss, stats = irl.repirl_loss(torch.cat([R_E_all, R_all[correct_all]]), R_all, all_gather(logp_tau),
                                      torch.ones_like(correct_all))
    else:                                                                       # paper: ~correct are the policy samples
        is_policy = ~correct_all if args.pseudo_expert == "paper" else torch.ones_like(correct_all)
        loss, stats = irl.repirl_loss(R_E_all, R_all, all_gather(logp_tau), is_policy)
    dR_E, dR = torch.autograd.grad(loss, [R_E_all, R_all])                      # d(-J)/dR_phi per trajectory
    dR_E, dR = dR_E.view(WORLD, -1)[RANK], dR.view(WORLD, -1)[RANK]             # this rank's slices

    prm_opt.zero_grad(set_to_none=True)
    for batch, grad in ((experts, dR_E), (rolls, dR)):
        for rows, _, part in micro_batches(batch, args):
            r = prm_lib.token_rewards(prm, part.ids, part.attention_mask, part.completion_mask)  # (n, t)
            R_mb = prm_lib.trajectory_reward(r, part.completion_mask, args.reduce)  # (n,)
            (R_mb * grad[rows]).sum().backward()                                 # d(-J)/dphi, this slice
    stats["irl/loss"] = loss.item()
    return finish_reward_step(prm, prm_opt, args, stats)


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
    """Whether anything reads log pi_old(a_t | s_t) before the policy's update: Eqn 5's importance
    weights, AIRL's reward, the entropy in the return, GAE's rewards, a reference-free PPO step after
    the first. If not, the loop skips that forward pass (9% of an outcome-RLOO iteration)."""
    return (args.method in ("repirl", "prm-only", "airl") or args.entropy == "return" or args.estimator == "ppo"
            or args.ppo_epochs * args.minibatches > 1)


def ppo_minibatches(n: int, args) -> list:
    """The rows of each optimizer step: `ppo_epochs` passes over n rows, each cut into `minibatches`
    (shuffled, seeded by the pass, when there are several). The policy and the critic share them."""
    steps = []
    for epoch in range(args.ppo_epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)) if args.minibatches > 1 else torch.arange(n)
        steps += order.chunk(args.minibatches)
    return steps


def merge_stats(stats: list, loss_key: str) -> dict:
    """Micro-batch statistics merged: each one's mean, but the loss summed (micro-batch losses add up)."""
    out = {key: sum(s[key] for s in stats) / len(stats) for key in stats[0]}
    out[loss_key] = sum(s[loss_key] for s in stats)
    return out


def critic_advantages(critic, critic_opt, outcome, r_phi, rolls, logp_old, alpha, args):
    """4) --estimator ppo: GAE advantages on the critic's values, then the critic's own steps (rloo.py).

    The values V(s_t) of the batch before any step (prm.state_values) give the advantages and the
    returns G_t (rloo.gae_advantages, gamma = 1, lambda = --gae-lambda) of the same token rewards
    rloo.advantages would baseline; the critic then takes one AdamW step on the clipped value loss
    per policy step, on the same minibatches. Returns the advantages (N, T) and the critic's stats.
    """
    mask = rolls.completion_mask
    in_return = args.entropy == "return"
    rewards = rloo.per_token_rewards(outcome, r_phi, mask, alpha, logp_old if in_return else None,
                                     args.ent_coef if in_return else 0.0)       # (N, T)
    with torch.no_grad():
        v_old = per_token(lambda part: prm_lib.state_values(critic, part.ids, part.attention_mask,
                                                            part.completion_mask), rolls, args)  # (N, T) V(s_t)
    adv, returns = rloo.gae_advantages(rewards, v_old, mask, 1.0, args.gae_lambda)  # (N, T), (N, T)
    stats = []
    for mb in ppo_minibatches(len(rolls), args):
        n_tokens = all_sum(mask[mb].sum().float())                              # whole-batch normaliser
        critic_opt.zero_grad(set_to_none=True)
        for rows, cols, part in micro_batches(rolls, args, mb):
            v = prm_lib.state_values(critic, part.ids, part.attention_mask, part.completion_mask)  # (n, t)
            loss, s = rloo.value_loss(v, v_old[rows, cols], returns[rows, cols], part.completion_mask, args.clip,
                                      n_tokens)
            loss.backward()
            stats.append(s)
        grad_norm = apply_gradients(critic, critic_opt, args.grad_clip)
    n = mask.sum().clamp(min=1).item()
    return adv, merge_stats(stats, "critic/loss") | {"critic/grad_norm": grad_norm,
                                                     "policy/adv_abs": (adv.abs() * mask).sum().item() / n}


def bc_step(policy, opt, batch, args, grad_clip):
    """One behaviour-cloning step on expert trajectories (irl.bc_loss), whole-batch normalised."""
    n_tokens = all_sum(batch.completion_mask.sum().float())
    opt.zero_grad(set_to_none=True)
    stats = []
    for _, _, part in micro_batches(batch, args):
        logp = rollout.token_logprobs(policy, part.ids, part.attention_mask)   # (n, t)
        loss, s = irl.bc_loss(logp, part.completion_mask, n_tokens)
        loss.backward()
        stats.append(s)
    return merge_stats(stats, "bc/nll") | {"policy/grad_norm": apply_gradients(policy, opt, grad_clip)}


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def greedy_accuracy(policy, tok, task, examples, args) -> float:
    """Held-out greedy accuracy; examples are split over ranks and the counts summed."""
    mine = examples[RANK::WORLD]
    calls = math.ceil(len(examples) / WORLD / 100)                              # as many on every rank (FSDP)
    correct = 0.0
    for c in range(calls):
        chunk = mine[c * len(mine) // calls:(c + 1) * len(mine) // calls]      # at most 100 prompts
        b = rollout.generate(policy, tok, [task.render(ex, tok) for ex in chunk], 1, args.max_new_tokens, 0.0,
                             sharded(args))
        correct += sum(outcome_rewards(task, b.completions, chunk))
    return (all_sum(torch.tensor(correct, device=DEVICE)) / len(examples)).item()


@torch.no_grad()
def prm_auc(policy, prm, tok, task, examples, args) -> float:
    """AUC of R_phi(tau) separating correct from incorrect sampled rollouts on held-out prompts."""
    torch.manual_seed(sampling_seed(args.seed, -1, RANK))
    mine = examples[:len(examples) // WORLD * WORLD][RANK::WORLD]              # as many on every rank (all_gather)
    b = rollout.generate(policy, tok, [task.render(ex, tok) for ex in mine], args.k, args.max_new_tokens,
                         args.temperature, sharded(args)).to(DEVICE)
    correct = torch.tensor(outcome_rewards(task, b.completions, [mine[i // args.k] for i in range(len(b))]),
                           device=DEVICE)
    R = prm_lib.trajectory_reward(prm_rewards(prm, b, args), b.completion_mask, args.reduce)
    return prm_lib.auc(all_gather(R).cpu(), all_gather(correct).cpu())


# ----------------------------------------------------------------------------- models and checkpoints

def prepare(model, args):
    """A loaded model made ready for the loop: in eval mode (no dropout anywhere), its decoder layers
    checkpointed (--grad-checkpoint), sharded over the ranks (--fsdp) or moved to the device, and its
    forward under bfloat16 autocast (--bf16)."""
    model.eval()
    if args.grad_checkpoint:
        model.activation_checkpointing_enable({"use_reentrant": False})
        for layer in decoder_layers(model):
            layer.register_forward_pre_hook(checkpoint_when_training)
    model = shard(model) if sharded(args) else model.to(DEVICE)
    if args.bf16:
        # The one place: token_logprobs, the PRM and generate all call forward. No cache of bf16 weight
        # copies: under FSDP it would keep one of every gathered layer until the forward ends.
        model.forward = torch.autocast(DEVICE.type, dtype=torch.bfloat16, cache_enabled=False)(model.forward)
    return model


def checkpoint_when_training(layer, _):
    """Before each call of a decoder layer: checkpoint it when a backward pass will follow.

    transformers (modeling_layers.GradientCheckpointingLayer) checkpoints a layer's forward when the
    layer's own `gradient_checkpointing and training` hold, and then also drops the KV cache, which
    generation needs. The models here stay in eval() (no dropout); this sets `training` on the layer
    alone, not on its children (Qwen2's and Llama's attention dropout reads the attention module's
    flag, and their layers read theirs for nothing else), and only under grad: never while scoring
    or generating.
    """
    layer.training = torch.is_grad_enabled()


def load_task(args: Args):
    """The task, with expert trajectories attached; refuses a task the loop cannot train on, and a
    bad data or expert file (one line: file:line, what was found, what was expected)."""
    try:
        task = tasks.get_task(args.task, **asdict(args))
        if args.expert:                                  # its responses must fit what the policy can write
            tok = AutoTokenizer.from_pretrained(args.policy) if args.policy else tiny.build_tokenizer()
            expert = tasks.load_expert(args.expert, task, tok, args.max_new_tokens, args.skip_bad)
            task.train = tasks.attach_expert(task.train, expert)
        check_prompts(task, args, "a benchmark has no training split: give --data", "give --test-data or --n-test")
        pool = task.test if args.train_on == "test" else task.train
        if needs_experts(args) and any(ex.solution is None for ex in pool):
            raise SystemExit(f"--task {args.task}: the data has no expert solutions; give --expert expert.jsonl "
                             f"(scripts/make_expert.py writes one)")
    except ValueError as e:                              # a bad source or record: its one-line message
        raise SystemExit(str(e)) from None
    return task


def check_prompts(task, args: Args, hint_pool: str, hint_test: str):
    """Refuse a task with fewer prompts than an iteration samples, or no held-out prompts (reading, and so
    checking, the test source now, not after training); `hint_*` say what to do."""
    pool = task.test if args.train_on == "test" else task.train
    needed = args.prompts * (args.oversample if args.filter_groups != "off" else 1)
    if len(pool) < needed:
        raise SystemExit(f"--task {args.task}: {len(pool)} {args.train_on} prompts, fewer than the {needed} an "
                         f"iteration samples ({hint_pool})")
    if not task.test:
        raise SystemExit(f"--task {args.task}: no held-out prompts ({hint_test})")


RESUMABLE = ("out", "cache", "resume", "iterations", "save_every", "keep", "max_bad_steps", "log_samples",
             "micro_batch", "micro_batch_tokens", "fsdp", "grad_checkpoint", "skip_bad")
"""The flags a resumed run may change: where it writes, how long it runs, what it logs, how its forward
passes are cut, sharded and checkpointed. Every other flag changes the maths."""


def check_resume(saved: dict, args: Args):
    """Refuse to continue a checkpoint trained with other settings (`saved`: its args), naming each flag."""
    given = asdict(args)
    diffs = [f"{flag(k)}: saved {saved[k]!r}, given {given[k]!r}" for k in given
             if k in saved and k not in RESUMABLE and saved[k] != given[k]]
    if diffs:
        raise SystemExit(f"--resume: the checkpoint in {args.out} was trained with other settings: {'; '.join(diffs)} "
                         f"(give the saved values, or a new --out)")


def needs_experts(args: Args) -> bool:
    """Whether the loop reads expert trajectories: to clone them, or to train a reward model on them."""
    return args.method == "bc" or (args.method in ("repirl", "prm-only", "airl") and not args.freeze_prm)


def check_prm_tokenizer(args: Args, tok):
    """A PRM of another size is fine; one that reads tokens differently is not."""
    if args.prm and args.method in ("repirl", "prm-only", "airl", "prime", "mcts"):
        prm_vocab = AutoTokenizer.from_pretrained(args.prm).get_vocab()
        if prm_vocab != tok.get_vocab():
            raise SystemExit(f"--prm {args.prm}: its tokenizer differs from the policy's ({len(prm_vocab)} vs "
                             f"{len(tok.get_vocab())} tokens); the PRM must score the policy's token ids")


def careless_share(args: Args, task) -> float:
    """--bc-stop-early where the task has a careless teacher (the arithmetic task), else 0."""
    return args.bc_stop_early if hasattr(task, "stop_early") else 0.0


def warm_start_path(args: Args, task) -> str:
    """Where the warm start of these settings is cached: a folder named by a hash of what it depends on."""
    stop_early = careless_share(args, task)
    settings = {k: getattr(args, k) for k in ("task", "data", "expert", "n_terms", "lo", "hi", "seed", "bc_steps",
                                              "bc_lr", "bc_batch")} | ({"bc_stop_early": stop_early} if stop_early else {})
    key = json.dumps(settings, sort_keys=True)
    return os.path.join(args.cache, "tiny-bc-" + hashlib.sha256(key.encode()).hexdigest()[:12])


def warm_start(args: Args, task) -> str:
    """The tiny default policy: behaviour cloning from scratch for `bc_steps`, cached by its settings. With
    --bc-stop-early p, a share p of the demonstrations come from the task's careless teacher (`stop_early`)."""
    path, stop_early = warm_start_path(args, task), careless_share(args, task)
    if os.path.isdir(path):
        print0(f"warm start: reusing {path}")
        return path
    tok = tiny.build_tokenizer()
    policy = tiny.build_model(tok, seed=args.seed).to(DEVICE)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.bc_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / max(1, args.bc_steps))))
    rng = random.Random(f"bc/{args.seed}")
    bar = tqdm(range(args.bc_steps), desc="warm start (behaviour cloning)", disable=RANK != 0)
    for step in bar:
        examples = rng.choices(task.train, k=args.bc_batch)
        if stop_early:                                                          # the careless teacher's share
            examples = [dataclasses.replace(ex, solution=task.stop_early(ex)) if rng.random() < stop_early else ex
                        for ex in examples]
        stats = bc_step(policy, opt, expert_batch(tok, task, examples[RANK::WORLD]).to(DEVICE), args, grad_clip=1.0)
        sched.step()
        bar.set_postfix(nll=f"{stats['bc/nll']:.3f}")
    if RANK == 0:
        save_atomic(path, {"policy": policy}, tok, None, extra={"optimizer.pt": opt.state_dict()})
    if WORLD > 1:
        dist.barrier()
    return path


def save_atomic(path: str, models: dict, tok, state: dict | None, extra: dict | None = None,
                weights: dict | None = None):
    """Write models (save_pretrained; `weights`: their full state dicts, which a sharded model does not
    hold itself), tokenizer, loop state and extra tensors to a temp folder, then rename."""
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, model in models.items():
        target = tmp if len(models) == 1 and state is None else os.path.join(tmp, name)
        model.save_pretrained(target, state_dict=(weights or {}).get(name))
        tok.save_pretrained(target)
    if state is not None:
        torch.save(state, os.path.join(tmp, "state.pt"))
    for name, obj in (extra or {}).items():
        torch.save(obj, os.path.join(tmp, name))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)


def checkpoints(out: str) -> list:
    """Complete checkpoints in a run folder, oldest first (a torn `.tmp` is never listed)."""
    if not os.path.isdir(out):
        return []
    names = [n for n in os.listdir(out) if n.startswith("ckpt-") and not n.endswith(".tmp")]
    return sorted(os.path.join(out, n) for n in names)


FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
"""Whole tensors, gathered from the FSDP shards (a collective: every rank calls) into rank 0's CPU memory."""


def optimizer_state(model, opt) -> dict | None:
    """An optimiser's full state, keyed by parameter name, so that it loads sharded or not; None before the
    first step (torch would take a step of learning rate 0 to make one, which changes the next step)."""
    return get_optimizer_state_dict(model, opt, options=FULL) if opt is not None and opt.state else None


def load_optimizer(model, opt, saved: dict):
    """Load what `optimizer_state` wrote, or a plain `opt.state_dict()` keyed by position (the warm start's),
    into `opt`; every rank keeps its shard. A group's entries `opt` does not have are dropped: the warm
    start's learning-rate schedule added `initial_lr` to its groups, which torch's loader would look up."""
    if saved["param_groups"][0]["params"] and isinstance(saved["param_groups"][0]["params"][0], int):
        names = [name for name, _ in model.named_parameters()]                 # the order opt was built in
        saved = {"state": {names[i]: s for i, s in saved["state"].items()},
                 "param_groups": [{k: v for k, v in g.items() if k in opt.param_groups[0]}
                                  | {"params": [names[i] for i in g["params"]]} for g in saved["param_groups"]]}
    set_optimizer_state_dict(model, opt, saved, options=StateDictOptions(full_state_dict=True))


def save_checkpoint(args, it, policy, prm, opt, prm_opt, tok, accuracy_start, critic=None, critic_opt=None):
    """Write ckpt-<it>: models via save_pretrained (policy, PRM, PPO's critic), optimisers and loop
    state in state.pt. Every rank calls it (FSDP gathers full weights and optimiser states); rank 0
    writes, so a checkpoint loads with or without --fsdp, on any number of processes.

    Nothing else is needed to resume exactly: sampling seeds and prompt order are functions of the
    iteration (see `sampling_seed`, `iteration_prompts`), not of a running random state.
    """
    models = {name: m for name, m in (("policy", policy), ("prm", prm), ("critic", critic)) if m is not None}
    weights = {name: get_model_state_dict(m, options=FULL) for name, m in models.items()}
    state = {"iteration": it, "opt": optimizer_state(policy, opt), "prm_opt": optimizer_state(prm, prm_opt),
             "critic_opt": optimizer_state(critic, critic_opt), "accuracy_start": accuracy_start, "args": asdict(args)}
    if RANK == 0:
        save_atomic(os.path.join(args.out, f"ckpt-{it:06d}"), models, tok, state, weights=weights)
        for old in checkpoints(args.out)[:-args.keep]:
            shutil.rmtree(old)
    if WORLD > 1:
        dist.barrier()


def truncate_log(path: str, iteration: int):
    """Keep the records of iterations <= `iteration` (a resumed run rewrites what came after)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if json.loads(line).get("iteration", float("inf")) <= iteration]
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


def install_sigterm_handler() -> threading.Event:
    """SIGTERM (a scheduler's pre-emption) sets an event; the loop checkpoints and exits after the iteration."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


# ----------------------------------------------------------------------------- the loop

def main(args: Args):
    if WORLD > 1 and not dist.is_initialized():
        if DEVICE.type == "cuda":
            torch.cuda.set_device(DEVICE)                                       # NCCL and FSDP use the current device
        dist.init_process_group("nccl" if DEVICE.type == "cuda" else "gloo")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    ckpt = checkpoints(args.out)[-1] if args.resume and checkpoints(args.out) else None
    state = torch.load(os.path.join(ckpt, "state.pt"), weights_only=True) if ckpt else {}
    if ckpt:
        check_resume(state["args"], args)
    task = load_task(args)
    policy_path = args.policy or warm_start(args, task)
    tok = AutoTokenizer.from_pretrained(policy_path)
    if tok.pad_token is None:                                                   # Llama, Mistral, GPT-2 ship none
        tok.pad_token = tok.eos_token
    check_prm_tokenizer(args, tok)
    if args.max_prompt_tokens:
        tasks.drop_long_prompts(task, tok, args.max_prompt_tokens)
        hint = f"after dropping those over --max-prompt-tokens {args.max_prompt_tokens}"
        check_prompts(task, args, hint, hint)
    policy = prepare(AutoModelForCausalLM.from_pretrained(os.path.join(ckpt, "policy") if ckpt else policy_path), args)
    prm_path = os.path.join(ckpt, "prm") if ckpt else (args.prm or policy_path)
    if args.method in ("repirl", "prm-only", "airl", "mcts"):                   # token-level scalar head
        prm = prepare(prm_lib.load_prm(prm_path), args)
    elif args.method == "prime":                                                # implicit PRM: a causal LM
        prm = prepare(AutoModelForCausalLM.from_pretrained(prm_path), args)
    else:
        prm = None
    uses_prm = prm is not None
    ref_path = (args.prm or policy_path) if args.method == "prime" else policy_path
    ref = (prepare(AutoModelForCausalLM.from_pretrained(ref_path), args)       # frozen: KL anchor, PRIME's pi_ref
           if args.kl_coef > 0 or args.method == "prime" else None)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)   # every method, bc included
    prm_opt = torch.optim.AdamW(prm.parameters(), lr=args.prm_lr, weight_decay=0.0) if uses_prm else None
    critic = (prepare(prm_lib.load_prm(os.path.join(ckpt, "critic") if ckpt else policy_path), args)
              if args.estimator == "ppo" and args.method != "bc" else None)     # PPO's value head on a policy copy
    critic_opt = (torch.optim.AdamW(critic.parameters(), lr=args.critic_lr or args.prm_lr, weight_decay=0.0)
                  if critic is not None else None)
    policy_ref = ref if args.kl_coef > 0 else None
    if ckpt:
        for model, optimizer, key in ((policy, opt, "opt"), (prm, prm_opt, "prm_opt"),
                                      (critic, critic_opt, "critic_opt")):
            if optimizer is not None and state[key] is not None:               # None: saved before its first step
                load_optimizer(model, optimizer, state[key])
    elif args.keep_warm_optimizer and os.path.exists(os.path.join(policy_path, "optimizer.pt")):
        load_optimizer(policy, opt, torch.load(os.path.join(policy_path, "optimizer.pt"), weights_only=True))
        for group in opt.param_groups:                                          # the warm start's moments, our lr
            group["lr"] = args.lr
    start = state.get("iteration", 0)
    if RANK == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(asdict(args), f, indent=1)
        for name in ("metrics.jsonl", "samples.jsonl"):                          # drop what the checkpoint lacks
            truncate_log(os.path.join(args.out, name), start)
    acc_start = state["accuracy_start"] if ckpt else greedy_accuracy(policy, tok, task, task.test, args)
    print0(f"{args.method}: {WORLD} process(es) on {DEVICE}, start accuracy {acc_start:.3f}"
           + (f", resumed from {ckpt}" if ckpt else ""))
    stop, bad = install_sigterm_handler(), 0

    bar = tqdm(range(start, args.iterations), desc=args.method, disable=RANK != 0, initial=start, total=args.iterations)
    for it in bar:
        t0 = time.time()
        # 1) rollout: k samples per prompt, outcome reward, log pi_theta(tau) at the sampling temperature
        rolls, r_o, examples = sample_groups(policy, tok, task, it, args)
        logp_old = sequence_logprobs(policy, rolls, args) if needs_old_logprobs(args) else None  # (N, T)
        t_rollout = time.time() - t0
        experts = expert_batch(tok, task, examples).to(DEVICE) if needs_experts(args) else None
        stats = {"rollout/accuracy": all_sum(r_o.mean()).item() / WORLD,
                 "rollout/length": all_sum(rolls.completion_mask.sum(-1).float().mean()).item() / WORLD}

        if args.method == "bc":
            # 2-4) behaviour cloning on the expert trajectories of the same prompts
            stats |= bc_step(policy, opt, experts, args, args.grad_clip)
            t_prm = t_score = 0.0
        else:
            # 2) reward-model update (Eqn 5 for rePIRL)
            t1 = time.time()
            if uses_prm and not args.freeze_prm:
                stats |= update_reward_model(prm, prm_opt, ref, policy, experts, rolls, logp_old, r_o, args,
                                             tok=tok, task=task, examples=examples, it=it)
            # 3) score rollouts with the updated reward model: token rewards (N, T)
            t2 = time.time()
            r_phi = (process_rewards(prm, ref, rolls, logp_old, args, tok) if uses_prm
                     else torch.zeros(rolls.ids.shape, device=DEVICE))           # (N, T)
            t_prm, t_score = t2 - t1, time.time() - t2
            # 4) policy update (RLOO; --estimator ppo: GAE on the critic, which takes its own steps first)
            outcome, alpha = method_rewards(args, r_o)
            in_return = args.entropy == "return"
            if critic is None:
                adv, s = rloo.advantages(outcome, r_phi, rolls.completion_mask, args.k, alpha, args.estimator,
                                         logp_old if in_return else None, args.ent_coef if in_return else 0.0)
            else:
                adv, s = critic_advantages(critic, critic_opt, outcome, r_phi, rolls, logp_old, alpha, args)
            stats |= s | policy_update(policy, opt, rolls, logp_old, adv, policy_ref, args)
        t_total = time.time() - t0

        # 5) log (and, every --eval-every iterations, held-out greedy accuracy)
        n_tokens = all_sum(rolls.completion_mask.sum().float()).item()
        stats |= {"iteration": it + 1, "time/rollout": t_rollout, "time/prm": t_prm, "time/score": t_score,
                  "time/policy": t_total - t_rollout - t_prm - t_score, "time/iteration": t_total,
                  "rollout/tokens_per_s": n_tokens / t_total}
        if args.eval_every and ((it + 1) % args.eval_every == 0 or it + 1 == args.iterations):
            stats["eval/accuracy"] = greedy_accuracy(policy, tok, task, task.test, args)
        log(args, it, stats, rolls, r_o)
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
    if RANK == 0:
        with open(os.path.join(args.out, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(summary) + "\n")
    rows = [("warm start", f"{acc_start:7.3f}"), (f"{args.method} (trained)", f"{acc_end:7.3f}"),
            ("gain", f"{acc_end - acc_start:+7.3f}"), ("PRM AUC (correct vs wrong)", f"{auc:7.3f}")]
    print0(f"\n| {'held-out greedy accuracy':<28} | {'value':>7} |\n|{'-' * 30}|{'-' * 9}|\n"
           + "\n".join(f"| {name:<28} | {value} |" for name, value in rows))
    if WORLD > 1:
        dist.barrier()                      # no rank tears its sockets down while another is still writing or talking
        dist.destroy_process_group()
    return summary


def log(args, it, stats, rolls, r_o):
    """One line to the console, one JSON record to metrics.jsonl, a few rollouts to samples.jsonl."""
    if RANK != 0:
        return
    keys = ["rollout/accuracy", "irl/loss", "irl/ess", "policy/loss", "policy/entropy", "policy/clip_frac",
            "rollout/tokens_per_s", "eval/accuracy"]
    print0(f"it {it + 1:4d} | " + " ".join(f"{k.replace('eval/', 'held-out ').split('/')[-1]} {stats[k]:.3g}"
                                           for k in keys if k in stats))
    with open(os.path.join(args.out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(stats) + "\n")
    with open(os.path.join(args.out, "samples.jsonl"), "a") as f:
        for i in range(min(args.log_samples, len(rolls))):
            f.write(json.dumps({"iteration": it + 1, "completion": rolls.completions[i], "reward": r_o[i].item()}) + "\n")


if __name__ == "__main__":
    main(parse_args())
