"""Held-out measurements the loop logs: greedy accuracy (eval/accuracy, at the start, every
--eval-every iterations and at the end) and the PRM's AUC separating correct from incorrect rollouts;
the run's closing record and table (`write_summary`).

Both split the prompts over ranks and sum or gather the results, with as many generate calls on
every rank (FSDP needs them in step). eval.py measures more (pass@k, best-of-N, weighted vote,
localisation) on saved checkpoints.
"""
import json
import math
import os

import torch

import prm as prm_lib
import rollout
from batching import prm_rewards
from distributed import DEVICE, RANK, WORLD, all_gather, all_sum, print0, sampling_seed, sharded
from loop_data import outcome_rewards


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


def write_summary(args, summary: dict):
    """The run's last record in metrics.jsonl (rank 0) and its before/after table on the console."""
    if RANK == 0:
        with open(os.path.join(args.out, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(summary) + "\n")
    acc_start, acc_end, auc = summary["eval/accuracy_start"], summary["eval/accuracy_end"], summary["eval/prm_auc"]
    rows = [("warm start", f"{acc_start:7.3f}"), (f"{args.method} (trained)", f"{acc_end:7.3f}"),
            ("gain", f"{acc_end - acc_start:+7.3f}"), ("PRM AUC (correct vs wrong)", f"{auc:7.3f}")]
    print0(f"\n| {'held-out greedy accuracy':<28} | {'value':>7} |\n|{'-' * 30}|{'-' * 9}|\n"
           + "\n".join(f"| {name:<28} | {value} |" for name, value in rows))
