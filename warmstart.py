"""The tiny default's warm start: behaviour cloning from scratch, cached by its settings.

The paper starts from instruct or base models that can already reason; the embedded tiny model starts
from nothing, so `python train.py` first clones demonstrations for --bc-steps (warmup, then cosine
decay of --bc-lr) and caches the policy, with its AdamW state, in a folder under --cache named by a
hash of what it depends on (`warm_start_path`). On the arithmetic task the demonstrations come from
its careless teacher at --bc-stop-early (`tasks.Arithmetic.careless`), so the warm policy has one
coherent habit to unlearn (README).
"""
import hashlib
import json
import math
import os
import random

import torch
import torch.distributed as dist
from tqdm import tqdm

import tiny
from baselines import bc_step
from checkpoint import save_atomic
from distributed import DEVICE, RANK, WORLD, print0
from loop_data import expert_batch


def careless_share(args, task) -> float:
    """--bc-stop-early where the task has a careless teacher (the arithmetic task), else 0."""
    return args.bc_stop_early if hasattr(task, "careless") else 0.0


def warm_start_path(args, task) -> str:
    """Where the warm start of these settings is cached: a folder named by a hash of what it depends on."""
    stop_early = careless_share(args, task)
    settings = {k: getattr(args, k) for k in ("task", "data", "expert", "n_terms", "lo", "hi", "seed", "bc_steps",
                                              "bc_lr", "bc_batch")} | ({"bc_stop_early": stop_early} if stop_early else {})
    if stop_early and args.n_terms > 3:       # never one cached when the teacher stopped after step 1 only
        settings["careless"] = "each step"
    key = json.dumps(settings, sort_keys=True)
    return os.path.join(args.cache, "tiny-bc-" + hashlib.sha256(key.encode()).hexdigest()[:12])


def warm_start(args, task) -> str:
    """The tiny default policy: behaviour cloning from scratch for `bc_steps`, cached by its settings. With
    --bc-stop-early p, the demonstrations come from the task's careless teacher (`careless`)."""
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
            examples = [task.careless(ex, rng, stop_early) for ex in examples]
        stats = bc_step(policy, opt, expert_batch(tok, task, examples[RANK::WORLD]).to(DEVICE), args, grad_clip=1.0)
        sched.step()
        bar.set_postfix(nll=f"{stats['bc/nll']:.3f}")
    if RANK == 0:
        save_atomic(path, {"policy": policy}, tok, None, extra={"optimizer.pt": opt.state_dict()})
    if WORLD > 1:
        dist.barrier()
    return path
