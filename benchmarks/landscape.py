"""How far can one policy-gradient step go? A line search along the RLOO gradient of the warm start.

On the earlier default task (3 terms of 1..30 and a complete teacher), every method's runs stayed
flat or lost accuracy; the README's careless-teacher default was chosen after this measurement.
This script measures why, without any optimiser in the way: it estimates the outcome-RLOO gradient
g of the warm-started policy on a large batch (`--prompts` x `--k` samples), then moves the
weights by a step of size s along three directions and measures sampled accuracy (temperature 1)
on a separate fixed batch, with the same sampling seed for every step (common random numbers):

    gradient   theta + s * g / |g|            (plain gradient ascent, s = L2 length of the step)
    sign       theta + s * sign(g)            (the first step of a fresh Adam with lr = s)
    random     theta + s * u,  u in {-1, 1}   (a random direction of the sign step's length)

If the gradient direction helps only for very short steps while random directions of a much
larger length cost little, the policy sits in a valley that is steep exactly where the reward
points, and a stochastic estimate of g must take many tiny steps.

    python train.py --bc-stop-early 0 --hi 30 --iterations 0   # the earlier default's warm start, cached
    python benchmarks/landscape.py                     # newest warm start under runs/cache
    python benchmarks/landscape.py --policy PATH --prompts 256 --k 8 --hi 9   # today's default task
"""
import copy
import glob
import os
import random
import sys
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli       # noqa: E402
import rloo      # noqa: E402
import rollout   # noqa: E402
import tasks     # noqa: E402


@dataclass
class Args:
    policy: str = ""
    """policy folder (empty: the newest runs/cache/tiny-bc-*)"""
    prompts: int = 256
    """prompts of the gradient batch (accuracy is measured on all of task.test)"""
    k: int = 8
    """samples per prompt, for the gradient and for the accuracy"""
    hi: int = 30
    """arithmetic: largest number (30: the earlier default task's, which this script measured; today's is 9)"""


def sample(policy, tok, task, examples, k: int, seed: int):
    """k rollouts per example at temperature 1, and their outcome rewards (N,)."""
    torch.manual_seed(seed)
    batch = rollout.generate(policy, tok, [task.render(ex, tok) for ex in examples], k, 40, 1.0)
    r_o = torch.tensor([task.reward(c, examples[i // k]) for i, c in enumerate(batch.completions)])
    return batch, r_o


def rloo_gradient(policy, batch, r_o, k: int, micro_batch: int = 256) -> dict:
    """d E[r_o] / d theta, estimated with RLOO advantages (ascent direction), one tensor per parameter."""
    adv, _ = rloo.advantages(r_o, torch.zeros(batch.ids.shape), batch.completion_mask, k, alpha=0.0)
    n_tokens = batch.completion_mask.sum()
    policy.zero_grad(set_to_none=True)
    for idx in torch.arange(len(batch)).split(micro_batch):
        logp = rollout.token_logprobs(policy, batch.ids[idx], batch.attention_mask[idx])
        loss, _ = rloo.policy_loss(logp, logp.detach(), adv[idx], batch.completion_mask[idx], n_tokens=n_tokens)
        loss.backward()
    return {name: -p.grad.clone() for name, p in policy.named_parameters()}


def stepped(policy, direction: dict, s: float):
    moved = copy.deepcopy(policy)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.add_(s * direction[name])
    return moved


def main(a: Args):
    path = a.policy or max(glob.glob(os.path.join(ROOT, "runs/cache/tiny-bc-*")), key=os.path.getmtime, default="")
    if not path:
        raise SystemExit("no warm start under runs/cache: run `python train.py` once, or give --policy")
    tok = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    task = tasks.Arithmetic(n_terms=3, lo=1, hi=a.hi)
    grad_prompts, eval_prompts = random.Random(1).sample(task.train, 2 * a.prompts)[::2], task.test

    batch, r_o = sample(policy, tok, task, grad_prompts, a.k, seed=0)
    g = rloo_gradient(policy, batch, r_o, a.k)
    norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
    n_params = sum(v.numel() for v in g.values())
    gen = torch.Generator().manual_seed(0)
    directions = {"gradient": {n: v / norm for n, v in g.items()},
                  "sign": {n: v.sign() for n, v in g.items()},
                  "random": {n: torch.randint(0, 2, v.shape, generator=gen).float() * 2 - 1 for n, v in g.items()}}
    base = sample(policy, tok, task, eval_prompts, a.k, seed=123)[1].mean().item()
    print(f"policy {path}\ngradient from {len(batch)} samples (accuracy {r_o.mean():.3f}), |g| = {norm:.4f}, "
          f"{n_params} parameters\nsampled accuracy on {len(eval_prompts)} x {a.k} held-out samples: {base:.4f}\n")
    print("| direction | step s | L2 length | sampled accuracy | change |\n|---|---|---|---|---|")
    steps = {"gradient": [0.003, 0.01, 0.03, 0.1, 0.3], "sign": [1e-5, 3e-5, 1e-4, 3e-4],
             "random": [1e-4, 3e-4, 1e-3, 3e-3]}
    for name, sizes in steps.items():
        for s in sizes:
            acc = sample(stepped(policy, directions[name], s), tok, task, eval_prompts, a.k, seed=123)[1].mean().item()
            length = s if name == "gradient" else s * n_params ** 0.5
            print(f"| {name} | {s:g} | {length:.3g} | {acc:.4f} | {acc - base:+.4f} |", flush=True)


if __name__ == "__main__":
    main(Args(**vars(cli.dataclass_parser(Args, __doc__.split("\n\n")[0]).parse_args())))
