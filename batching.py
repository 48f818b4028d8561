"""Micro-batching: every forward pass of the loop runs on bounded pieces of a batch.

A batch of rollouts or expert trajectories can be far larger than one forward pass may hold. Its rows
are sorted by length and packed into micro-batches of at most --micro-batch rows and
--micro-batch-tokens tokens (rows x padded length), all-pad columns trimmed (`micro_batches`); a
per-token quantity is computed on each and put back in place (`per_token`), as the no-grad log-probs
and PRM token rewards are (`sequence_logprobs`, `prm_rewards`); so is a per-row one (`per_row`), as
the PRM step's R_phi(tau). A loss is normalised by whole-batch counts, so the micro-batches'
gradients add up to the whole batch's, and their statistics merge (`merge_stats`). `ppo_minibatches` cuts a batch into the rows of each optimizer step.
"""
import torch

import prm as prm_lib
import rollout
from distributed import all_max, sharded


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


def per_row(fn, parts: list) -> torch.Tensor:
    """fn(part) -> (n,) on every micro-batch of `micro_batches(batch, args)`, put back in batch order: (N,).
    Differentiable when fn is (the PRM step's R_phi with grad)."""
    values = [(rows, fn(part)) for rows, _, part in parts]                      # [((n,), (n,))]
    rows = torch.cat([r for r, _ in values])                                    # (N,) a permutation
    return torch.cat([v for _, v in values])[rows.argsort()]                    # (N,)


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
