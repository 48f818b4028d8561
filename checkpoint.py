"""Checkpoints: writing them atomically, loading them on any number of processes, resuming exactly.

A checkpoint `ckpt-<iteration>` holds the policy, the PRM and PPO's critic through `save_pretrained`
(loadable by any Hugging Face user, with or without FSDP), the optimisers' states keyed by parameter
name and the loop's state in `state.pt`; it is written to a temp folder and renamed, so a torn write is
never read (`save_atomic`, `checkpoints`). Nothing else is needed to resume exactly: sampling seeds and
prompt order are functions of the iteration, not of a running random state. A resumed run refuses
settings that change the maths (`check_resume`), drops the log records after its checkpoint
(`truncate_log`), and a SIGTERM makes the loop checkpoint and exit after the iteration
(`install_sigterm_handler`). `load_models` builds a run's models and optimisers, from the start or
from a checkpoint; `open_run_folder` starts or continues its folder, `log_iteration` adds each
iteration's line, metrics record and sample rollouts.
"""
import json
import os
import shutil
import signal
import threading
from dataclasses import asdict

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)
from transformers import AutoModelForCausalLM

import prm as prm_lib
from cli import flag
from distributed import RANK, WORLD, prepare, print0


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


RESUMABLE = ("out", "cache", "resume", "iterations", "save_every", "keep", "max_bad_steps", "log_samples",
             "eval_every", "micro_batch", "micro_batch_tokens", "fsdp", "grad_checkpoint", "skip_bad")
"""The flags a resumed run may change: where it writes, how long it runs, what it logs, how its forward
passes are cut, sharded and checkpointed. Every other flag changes the maths."""


def check_resume(saved: dict, args):
    """Refuse to continue a checkpoint trained with other settings (`saved`: its args), naming each flag."""
    given = asdict(args)
    diffs = [f"{flag(k)}: saved {saved[k]!r}, given {given[k]!r}" for k in given
             if k in saved and k not in RESUMABLE and saved[k] != given[k]]
    if diffs:
        raise SystemExit(f"--resume: the checkpoint in {args.out} was trained with other settings: {'; '.join(diffs)} "
                         f"(give the saved values, or a new --out)")


def load_models(args, policy_path: str, ckpt: str | None, state: dict) -> tuple:
    """The run's models, prepared (distributed.prepare), and their AdamW optimisers: from the starting
    weights, or from checkpoint `ckpt` (`state`: its state.pt) with the optimisers' states.

    The policy; the reward model: a causal LM with a scalar head per token (rePIRL, prm-only, AIRL's
    discriminator, Math-Shepherd) or a causal LM (PRIME's implicit PRM, RL Tango's verifier); a frozen
    reference (the KL anchor, PRIME's and KTO's pi_ref); PPO's critic, a policy copy with a value head
    (not for bc and kto, which take no RLOO step). Returns (policy, prm, ref, critic,
    opt, prm_opt, critic_opt), None where the method has no such model.
    """
    policy = prepare(AutoModelForCausalLM.from_pretrained(os.path.join(ckpt, "policy") if ckpt else policy_path), args)
    prm_path = os.path.join(ckpt, "prm") if ckpt else (args.prm or policy_path)
    if args.method in ("repirl", "prm-only", "airl", "mcts"):                   # token-level scalar head
        prm = prepare(prm_lib.load_prm(prm_path), args)
    elif args.method in ("prime", "tango"):                                     # implicit PRM, Tango's verifier: LMs
        prm = prepare(AutoModelForCausalLM.from_pretrained(prm_path), args)
    else:
        prm = None
    ref_path = (args.prm or policy_path) if args.method == "prime" else policy_path
    ref = (prepare(AutoModelForCausalLM.from_pretrained(ref_path), args)       # frozen: KL anchor, PRIME's, KTO's ref
           if args.kl_coef > 0 or args.method in ("prime", "kto") else None)
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)   # every method, bc included
    prm_opt = torch.optim.AdamW(prm.parameters(), lr=args.prm_lr, weight_decay=0.0) if prm is not None else None
    critic = (prepare(prm_lib.load_prm(os.path.join(ckpt, "critic") if ckpt else policy_path), args)
              if args.estimator == "ppo" and args.method not in ("bc", "kto") else None)
    critic_opt = (torch.optim.AdamW(critic.parameters(), lr=args.critic_lr or args.prm_lr, weight_decay=0.0)
                  if critic is not None else None)
    if ckpt:
        for model, optimizer, key in ((policy, opt, "opt"), (prm, prm_opt, "prm_opt"),
                                      (critic, critic_opt, "critic_opt")):
            if optimizer is not None and state[key] is not None:               # None: saved before its first step
                load_optimizer(model, optimizer, state[key])
    elif args.keep_warm_optimizer and os.path.exists(os.path.join(policy_path, "optimizer.pt")):
        load_optimizer(policy, opt, torch.load(os.path.join(policy_path, "optimizer.pt"), weights_only=True))
        for group in opt.param_groups:                                          # the warm start's moments, our lr
            group["lr"] = args.lr
    return policy, prm, ref, critic, opt, prm_opt, critic_opt


def open_run_folder(args, start: int):
    """Rank 0: the run folder with args.json, and its logs cut back to iteration `start` (the checkpoint's)."""
    if RANK == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(asdict(args), f, indent=1)
        for name in ("metrics.jsonl", "samples.jsonl"):                          # drop what the checkpoint lacks
            truncate_log(os.path.join(args.out, name), start)


def log_iteration(args, it, stats, rolls, r_o):
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
