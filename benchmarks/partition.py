"""Where Eqn 5's partition estimate points the PRM on the default task: do the rollouts that go on
(as the expert does) weigh in the importance weights, and does a trained PRM rank them above those
that stop early?

    python benchmarks/partition.py                                  # weights at R_phi = 0, default warm start
    python benchmarks/partition.py --bc-stop-early 0.97             # a warm start that goes on more rarely
    python benchmarks/partition.py --bc-stop-early 0.97 --rank runs/a,runs/b   # trained PRMs, same rollouts

Weights: 8 batches of 64 rollouts of the warm start (train.py's sampling), R_phi = 0, so each failed
rollout weighs exp(-log pi_theta(tau)), normalised over the batch's failed rollouts as in Eqn 5 with
the paper's pseudo-expert correction. Printed: the share of failed rollouts that go on to a second
step, and the share of the weight they carry.

Ranking (--rank): 8 rollouts of the same warm start on 100 held-out prompts, scored by each run's
last PRM. Printed: of the pairs (failed rollout that goes on, failed rollout that stops early) of one
prompt, the share in which the first scores higher; and the AUC of R_phi for correct against wrong.
Any train.py flag (--seed, --bc-stop-early, ...) selects the warm start, as it does for train.py.
"""
import os
import sys
from dataclasses import dataclass

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli  # noqa: E402  (the project's modules live one folder up)
import prm as prm_lib  # noqa: E402
import rollout  # noqa: E402
import train  # noqa: E402
from batching import prm_rewards  # noqa: E402
from checkpoint import checkpoints  # noqa: E402
from loop_data import load_task, load_tokenizer, outcome_rewards, sample_groups  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from warmstart import warm_start  # noqa: E402


@dataclass
class Args:
    rank: str = ""
    """comma-separated run folders whose last PRMs rank the same rollouts (empty: the weights at R_phi = 0)"""


def goes_on(completions: list[str]) -> torch.Tensor:
    """(N,) bool: the rollout writes a second step (two '=' signs), as the expert does."""
    return torch.tensor([c.count("=") >= 2 for c in completions])


def weight_shares(policy, tok, task, args, batches: int = 8):
    """Share of the failed rollouts that go on, and share of Eqn 5's weight they carry at R_phi = 0."""
    n = n_on = weight_on = 0.0
    for b in range(batches):
        rolls, r_o, _ = sample_groups(policy, tok, task, 1000 + b, args)
        logp_tau = (rolls.logp * rolls.completion_mask).sum(-1)                 # (N,) log pi_theta(tau)
        failed, on = r_o < 0.5, goes_on(rolls.completions)                      # (N,), (N,)
        w = (-logp_tau[failed]).softmax(0)                                      # (P,) exp(R - log pi), R = 0
        n, n_on = n + failed.sum().item(), n_on + on[failed].sum().item()
        weight_on += w[on[failed]].sum().item()
    return n_on / n, weight_on / batches


def ranking(run: str, rolls, r_o, on, k: int, args):
    """Pairs (goes on, stops early) of failed rollouts of one prompt ranked right by the run's PRM, and its AUC."""
    prm = prm_lib.load_prm(os.path.join(checkpoints(run)[-1], "prm")).eval()
    R = prm_lib.trajectory_reward(prm_rewards(prm, rolls, args), rolls.completion_mask, args.reduce)  # (N,) R_phi(tau)
    right = pairs = 0
    for g in range(len(R) // k):
        rows = slice(g * k, (g + 1) * k)
        failed = r_o[rows] < 0.5
        a, b = R[rows][failed & on[rows]], R[rows][failed & ~on[rows]]
        right, pairs = right + (a[:, None] > b[None, :]).sum().item(), pairs + a.numel() * b.numel()
    return right, pairs, prm_lib.auc(R.tolist(), r_o.tolist())


@torch.no_grad()
def main():
    flags = cli.dataclass_parser((Args, train.Args), __doc__.split("\n\n")[0]).parse_args()
    runs, args = [r for r in cli.split(flags, Args).rank.split(",") if r], cli.split(flags, train.Args)
    train.check_args(args)
    task = load_task(args)
    path = warm_start(args, task)
    tok = load_tokenizer(args, task, path)
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    if not runs:
        share, weight = weight_shares(policy, tok, task, args)
        print(f"failed rollouts that go on: {share:.3f} of them, {weight:.3f} of Eqn 5's weight at R_phi = 0")
        return
    k, examples = 8, task.test[:100]
    torch.manual_seed(0)
    rolls = rollout.generate(policy, tok, [task.render(ex, tok) for ex in examples], k, args.max_new_tokens, 1.0)
    r_o = torch.tensor(outcome_rewards(task, rolls.completions, [examples[i // k] for i in range(len(rolls))]))
    on = goes_on(rolls.completions)
    print(f"warm start rollouts: accuracy {r_o.mean():.3f}, going on {on.float().mean():.3f}")
    for run in runs:
        right, pairs, auc = ranking(run, rolls, r_o, on, k, args)
        print(f"{run}: pairs ranked right {right}/{pairs} = {right / max(pairs, 1):.3f}; "
              f"AUC correct vs wrong {auc:.3f}")


if __name__ == "__main__":
    main()
