"""The loop's data: the task loaded and checked, the prompts of each iteration, their outcome rewards
and the expert trajectories of the same prompts.

`load_task` builds the task of tasks.py from the flags, attaches an --expert file, and refuses what the
loop cannot train on with a one-line message (too few prompts, no held-out prompts, no expert solutions
for a method that reads them, a PRM whose tokenizer differs from the policy's: `load_tokenizer`). Iteration `it` draws
consecutive slices of per-epoch shuffles (`iteration_prompts`), a function of the seed and the
iteration alone, so a resumed run replays exactly; `sample_groups` draws the k rollouts of each of them
(phase 1 of Algorithm 1, with --filter-groups), `outcome_rewards` is r_o, `expert_batch` tau^E.
"""
import functools
import random
from dataclasses import asdict

import torch
from transformers import AutoTokenizer

import rollout
import tasks
import tiny
from distributed import DEVICE, RANK, WORLD, sampling_seed, sharded


def load_task(args):
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


def check_prompts(task, args, hint_pool: str, hint_test: str):
    """Refuse a task with fewer prompts than an iteration samples, or no held-out prompts (reading, and so
    checking, the test source now, not after training); `hint_*` say what to do."""
    pool = task.test if args.train_on == "test" else task.train
    needed = args.prompts * (args.oversample if args.filter_groups != "off" else 1)
    if len(pool) < needed:
        raise SystemExit(f"--task {args.task}: {len(pool)} {args.train_on} prompts, fewer than the {needed} an "
                         f"iteration samples ({hint_pool})")
    if not task.test:
        raise SystemExit(f"--task {args.task}: no held-out prompts ({hint_test})")


def needs_experts(args) -> bool:
    """Whether the loop reads expert trajectories: to clone them, or to train a reward model on them."""
    return args.method == "bc" or (args.method in ("repirl", "prm-only", "airl") and not args.freeze_prm)


def check_prm_tokenizer(args, tok):
    """A PRM of another size is fine; one that reads tokens differently is not."""
    if args.prm and args.method in ("repirl", "prm-only", "airl", "prime", "mcts", "tango"):
        prm_vocab = AutoTokenizer.from_pretrained(args.prm).get_vocab()
        if prm_vocab != tok.get_vocab():
            raise SystemExit(f"--prm {args.prm}: its tokenizer differs from the policy's ({len(prm_vocab)} vs "
                             f"{len(tok.get_vocab())} tokens); the PRM must score the policy's token ids")


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


@torch.no_grad()
def sample_groups(policy, tok, task, it: int, args):
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


def outcome_rewards(task, completions: list[str], examples: list) -> list[float]:
    """r_o of each completion; batched when the task can (code tasks run their programs in parallel)."""
    if hasattr(task, "rewards"):
        return task.rewards(completions, examples)
    return [task.reward(c, ex) for c, ex in zip(completions, examples)]


def expert_batch(tok, task, examples) -> rollout.Batch:
    """The expert trajectories tau^E of the given examples, as a Batch."""
    return rollout.encode(tok, [task.render(ex, tok) for ex in examples], [ex.solution for ex in examples])


def load_tokenizer(args, task, policy_path: str):
    """The policy's tokenizer (with a pad token), checked against the PRM's; prompts over --max-prompt-tokens
    are dropped from the task, and the task checked again."""
    tok = AutoTokenizer.from_pretrained(policy_path)
    if tok.pad_token is None:                                                   # Llama, Mistral, GPT-2 ship none
        tok.pad_token = tok.eos_token
    check_prm_tokenizer(args, tok)
    if args.max_prompt_tokens:
        tasks.drop_long_prompts(task, tok, args.max_prompt_tokens)
        hint = f"after dropping those over --max-prompt-tokens {args.max_prompt_tokens}"
        check_prompts(task, args, hint, hint)
    return tok
