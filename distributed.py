"""Distributed plumbing: the torchrun environment, sums and gathers over ranks, FSDP sharding, and the
one place gradients are summed, clipped and applied.

    python train.py                                   # one process: every helper here is the identity
    torchrun --nproc_per_node 2 train.py              # gloo on CPU, NCCL on GPU

How the loop uses it: prompts are split by rank in contiguous blocks, all k samples of a prompt on one
rank (RLOO stays local). Every loss is normalised by whole-batch counts (`all_sum` of the token or
sequence count) and gradients are SUMMED over ranks (`apply_gradients`), so N processes take the step
one process would take on the whole batch. The Eqn 5 partition estimate couples all samples: its
gradient is taken on the gathered per-trajectory rewards R_phi (`all_gather`, scalars), and each rank
back-propagates its own slice. Sampling is seeded per (seed, iteration, generation chunk)
(`sampling_seed`), so the rollouts do not depend on how many processes share the work, and a resumed
run replays exactly.

With --fsdp every model is sharded over the ranks (FSDP2, `fully_shard` per decoder layer, `shard`), its
reduce-scatter set to sum; every rank then runs the same forward passes (generation synced, equal
micro-batch counts: `sharded`), and checkpoints hold full weights, loadable with or without FSDP.
`prepare` makes a loaded model ready: eval mode, --grad-checkpoint, sharded or moved to the device,
--bf16 autocast (log-softmax in float32; the sampler's cached passes and the recomputed full ones then
round differently, so PPO ratios start at 1 up to bfloat16).
"""
import hashlib
import os
import warnings

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from tqdm import tqdm


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


def init_processes():
    """Join the torchrun process group (NCCL on GPU, gloo on CPU); nothing on one process."""
    if WORLD > 1 and not dist.is_initialized():
        if DEVICE.type == "cuda":
            torch.cuda.set_device(DEVICE)                                       # NCCL and FSDP use the current device
        dist.init_process_group("nccl" if DEVICE.type == "cuda" else "gloo")


def stop_processes():
    """Leave the process group once every rank is done."""
    if WORLD > 1:
        dist.barrier()                      # no rank tears its sockets down while another is still writing or talking
        dist.destroy_process_group()
