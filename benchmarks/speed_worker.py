"""One measured process for benchmarks/speed.py: this project's loop, or the bare `generate` floor.

    python benchmarks/speed_worker.py ours --result r.json -- --method rloo --policy P --iterations 12 ...
    python benchmarks/speed_worker.py generate --result r.json --policy P --prompts-file p.json --k 4 \
        --max-new-tokens 40 --iterations 12

`ours` runs `train.main` unchanged in this process, with four things wrapped around it from outside
(train.py itself is not edited):
1. every `model.generate` call is timed, its generated columns counted, and (unless --free-length)
   given `min_new_tokens = max_new_tokens`, so every row of every benchmark makes completions of
   exactly the same length whatever the model (the TRL helper asks for the same through
   `generation_kwargs`);
2. `rollout.generate`, the loop's sampling call, is timed (tokenisation, generate, decode, batch);
3. the held-out evaluations before and after the loop (`greedy_accuracy`, `prm_auc`) are skipped:
   they are not part of an iteration. Skipping the first is also where the peak-RSS mark is reset
   (`/proc/self/clear_refs`), so the reported peak is that of the iterations (plus the imports and
   models already resident, given separately as the RSS at loop start);
4. `train.log_iteration` hands each iteration's stats (the record it writes to metrics.jsonl) to this file.

`generate` times one plain `model.generate` call per iteration on the same prompts, k and length,
the input tensors built before the clock starts: the floor for the generation phase.

The result is a JSON file: per-iteration times and the memory marks. Linux only (/proc).
"""
import copy
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli  # noqa: E402

MODES = ("ours", "generate")


@dataclass
class Completions:
    """What every row of speed.py generates for a prompt, the same in all rows: k completions of L tokens. speed.py,
    this file and trl_bench.py take these flags alike; speed.py passes its values on to each row's process."""
    k: int = 4
    """completions per prompt"""
    max_new_tokens: int = 40
    """completion length L (forced unless --free-length)"""
    free_length: bool = False
    """let completions stop at EOS (false: every completion is forced to its full length)"""


@dataclass
class Args:
    mode: str
    """ours (train.main on the flags after --, which give its k and L) or generate (the bare model.generate floor)"""
    result: str
    """JSON file to write"""
    policy: str = ""
    """generate: model folder"""
    prompts_file: str = ""
    """generate: JSON {prompts: [[text, ...] per iteration]}"""
    temperature: float = 1.0
    """generate: sampling temperature"""
    iterations: int = 10
    """generate: iterations (one generate call each)"""


# ----------------------------------------------------------------------------- memory marks

def rss_mb() -> dict:
    """Current and peak resident memory of this process (MB), from /proc/self/status."""
    with open("/proc/self/status") as f:
        text = f.read()
    kb = {k: int(re.search(k + r":\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}
    return {"rss_mb": kb["VmRSS"] / 1024, "peak_mb": kb["VmHWM"] / 1024}


def reset_peak() -> float:
    """Reset the peak-RSS mark to the current RSS (Linux clear_refs 5); return the current RSS (MB)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:                                   # not allowed here: the peak then includes start-up
        pass
    return rss_mb()["rss_mb"]


# ----------------------------------------------------------------------------- generate timing

class GenerateClock:
    """Wraps transformers' `GenerationMixin.generate` for every model: time, generated columns, forced length."""

    def __init__(self, force_length: bool):
        from transformers.generation.utils import GenerationMixin
        self.seconds, self.cpu, self.tokens, self.force = 0.0, 0.0, 0, force_length
        original = GenerationMixin.generate
        clock = self

        def generate(model, *a, **kw):
            if clock.force:
                config = kw.get("generation_config")
                if config is not None:
                    config = kw["generation_config"] = copy.deepcopy(config)
                    config.min_new_tokens = config.max_new_tokens
                elif "max_new_tokens" in kw:
                    kw["min_new_tokens"] = kw["max_new_tokens"]
            prompt_len = (kw.get("input_ids") if kw.get("input_ids") is not None else a[0]).shape[1]
            t0, c0 = time.perf_counter(), time.process_time()
            out = original(model, *a, **kw)
            clock.seconds += time.perf_counter() - t0
            clock.cpu += time.process_time() - c0
            ids = out if hasattr(out, "shape") else out.sequences
            clock.tokens += ids.shape[0] * (ids.shape[1] - prompt_len)
            return out

        GenerationMixin.generate = generate

    def take(self) -> tuple[float, float, int]:
        """(wall s, CPU s, generated tokens) since the last take."""
        out = self.seconds, self.cpu, self.tokens
        self.seconds, self.cpu, self.tokens = 0.0, 0.0, 0
        return out


# ----------------------------------------------------------------------------- modes

def run_ours(completions: Completions, train_flags: list) -> dict:
    """train.main on the given flags, one record per iteration."""
    import rollout
    import train
    clock = GenerateClock(not completions.free_length)
    marks, records = {}, []
    outer = {"s": 0.0, "gen_cpu": 0.0, "cpu": time.process_time()}

    sample = rollout.generate
    def timed_generate(*a, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        out = sample(*a, **kw)
        outer["s"] += time.perf_counter() - t0
        outer["gen_cpu"] += time.process_time() - c0
        return out
    rollout.generate = timed_generate

    def skipped_eval(*a, **kw):                       # before the loop: start the memory mark here
        if "rss_start_mb" not in marks:
            marks["rss_start_mb"] = reset_peak()
            clock.take()
            outer.update(s=0.0, gen_cpu=0.0, cpu=time.process_time())
        return math.nan
    train.greedy_accuracy = skipped_eval
    train.prm_auc = lambda *a, **kw: math.nan

    log = train.log_iteration
    def timed_log(args, it, stats, *a, **kw):         # called once per iteration, before any checkpoint
        inner_s, inner_cpu, tokens = clock.take()
        cpu = time.process_time()
        marks.setdefault("rss_start_mb", rss_mb()["rss_mb"])   # if the loop no longer evaluates first
        records.append({k: v for k, v in stats.items() if isinstance(v, (int, float))}
                       | {"time/generate": outer["s"], "time/model_generate": inner_s, "cpu/generate": outer["gen_cpu"],
                          "cpu/model_generate": inner_cpu,
                          "cpu/iteration": cpu - outer["cpu"], "gen_tokens": tokens} | rss_mb())
        outer.update(s=0.0, gen_cpu=0.0, cpu=cpu)
        return log(args, it, stats, *a, **kw)
    train.log_iteration = timed_log

    args = train.parse_args(train_flags)
    train.main(args)
    return {"iterations": records, **marks, "method": args.method}


def run_generate(opts: Args, completions: Completions) -> dict:
    """A bare `model.generate` per iteration on the same prompts, k and length as the loop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    clock = GenerateClock(not completions.free_length)
    tok = AutoTokenizer.from_pretrained(opts.policy)
    model = AutoModelForCausalLM.from_pretrained(opts.policy).eval()
    with open(opts.prompts_file) as f:
        prompts = json.load(f)["prompts"]                                       # (iterations, G) text
    config = GenerationConfig(do_sample=True, temperature=opts.temperature, top_k=None, top_p=None,
                              max_new_tokens=completions.max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
    inputs, k = [], completions.k
    for texts in prompts[:opts.iterations]:
        enc = tok(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
        inputs.append((enc.input_ids.repeat_interleave(k, 0), enc.attention_mask.repeat_interleave(k, 0)))
    marks, records = {"rss_start_mb": reset_peak()}, []
    with torch.no_grad():
        for it, (ids, mask) in enumerate(inputs):
            torch.manual_seed(it)
            model.generate(input_ids=ids, attention_mask=mask, generation_config=config)   # (N, P + L)
            s, cpu, n = clock.take()
            records.append({"time/generate": s, "time/model_generate": s, "time/iteration": s,
                            "cpu/generate": cpu, "cpu/model_generate": cpu, "cpu/iteration": cpu,
                            "gen_tokens": n} | rss_mb())
    return {"iterations": records, **marks}


def main():
    argv = sys.argv[1:]
    train_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = cli.dataclass_parser((Args, Completions), __doc__.split("\n\n")[0], positional=("mode",))
    flags = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    opts, completions = cli.split(flags, Args), cli.split(flags, Completions)
    if opts.mode not in MODES:
        raise SystemExit(f"mode {opts.mode!r}: expected one of {', '.join(MODES)}")
    os.chdir(ROOT)
    result = run_ours(completions, train_flags) if opts.mode == "ours" else run_generate(opts, completions)
    with open(opts.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
