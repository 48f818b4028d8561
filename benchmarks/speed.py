"""Seconds per iteration of this project's loop against TRL's trainers on identical work (issue 8).

    python benchmarks/speed.py --trl --scaling --repeats 3     # the full measurement (quiet machine, ~25 min)
    python benchmarks/speed.py --quick --trl --scaling         # a smoke run of everything (~3 min)
    python benchmarks/speed.py                                 # our rows and the generate floor only

Rows, each one process (benchmarks/speed_worker.py or benchmarks/trl_bench.py), all on the same
model folder (the warm-started tiny default of train.py, or --policy), the same prompts in the same
order, the same k, completion length, learning rate and micro-batch, no KL:
- this project's outcome-only RLOO (`train.py --method rloo`) and rePIRL (`--method repirl`), the
  loop run unchanged; phase times are the ones train.py writes to metrics.jsonl;
- a bare `model.generate` on the same batch: the floor of the generation phase;
- TRL's GRPOTrainer and RLOOTrainer (`--trl`), in their own virtual environment (runs/trl-venv,
  made on first use with the same torch; TRL never becomes a dependency of the project).

Lengths are matched by forcing them: every row generates exactly --max-new-tokens tokens per
completion (min_new_tokens = max_new_tokens), so identical work does not depend on when a model
happens to emit EOS (--free-length turns this off). Every number is a median over the iterations
after --warmup, pooled over --repeats runs of each row (interleaved, so a slow spell of the
machine hits every row alike). Peak RSS is the process's high-water mark from the first iteration
to the last (reset just before the loop; the RSS at that point, imports and models, is given too).

Columns (seconds per iteration, medians, so the phases need not add up to the total exactly):
generate = the sampling call (ours: rollout.generate; TRL and the floor: model.generate);
score = the rest of the rollout phase (outcome reward, decoding, old log-probs where computed);
PRM update / PRM score = rePIRL's Eqn 5 step and its token rewards for the rollouts;
policy update = advantages, forward/backward and the optimizer step; CPU/wall = CPU seconds of the
process over wall seconds (1.0 on a quiet machine with one thread; lower: the machine was shared).

--scaling adds: our RLOO at k = 2, 4, 8, 16 and at lengths L, 2L, 4L (the ratio per doubling, 2.0
being linear), and peak RSS of our RLOO and rePIRL as the prompts double from one full micro-batch
(--micro-batch / k prompts) to 8 of them, generation chunked to the same budget (--gen-chunk).
The memory runs are made twice: with glibc's default allocator, which keeps freed blocks (so RSS
also grows with how many micro-batches ran), and with MALLOC_MMAP_THRESHOLD_ set so that freed
blocks go back to the system and RSS follows what the loop holds. (--quick: k up to 8, lengths
L/2 and L, half the micro-batch and 3 sizes for memory.) Output: a markdown report printed and
written to <out>/speed.md, every per-iteration record to <out>/speed.json.
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
import cli  # noqa: E402
from speed_worker import Completions  # noqa: E402

MMAP_THRESHOLD = 131072                               # bytes: glibc returns every freed block at least this large
TARGETS = {"rloo_vs_grpo": 0.5, "repirl_vs_rloo": 1.35, "generate_vs_floor": 1.2, "per_doubling": 2.2,
           "memory_flat": 1.1}


@dataclass
class Args(Completions):
    """The completions of every row (k, L, --free-length: speed_worker.Completions), then this measurement's own."""
    prompts: int = 16
    """prompts per iteration"""
    micro_batch: int = 64
    """sequences per forward/backward pass"""
    lr: float = 1e-5
    """policy learning rate (all rows)"""
    iterations: int = 10
    """measured iterations per run"""
    warmup: int = 2
    """iterations run first and not measured"""
    repeats: int = 1
    """runs of each row, interleaved; medians pooled"""
    threads: int = 1
    """torch threads of every row (OMP_NUM_THREADS)"""
    policy: str = ""
    """model folder; empty: train.py's warm-started tiny default"""
    trl: bool = False
    """add TRL's GRPOTrainer and RLOOTrainer rows"""
    trl_venv: str = "runs/trl-venv"
    """virtual environment for TRL (made if missing)"""
    trl_spec: str = "trl"
    """what pip installs there, e.g. trl==1.16.0"""
    scaling: bool = False
    """add the k, length and memory scaling runs"""
    quick: bool = False
    """few iterations and smaller scaling grids: a smoke run (3 iterations, 1 warm-up, 1 repeat)"""
    out: str = "runs/bench"
    """report, results and logs (relative: to the repository)"""


def parse_args(argv=None) -> Args:
    """The CLI from `Args` (cli.py); --quick then sets the iteration counts."""
    args = Args(**vars(cli.dataclass_parser(Args, __doc__.split("\n\n")[0]).parse_args(argv)))
    if args.quick:
        args.iterations, args.warmup, args.repeats = 3, 1, 1
    if (args.prompts * args.k) % min(args.micro_batch, args.prompts * args.k):
        raise SystemExit(f"--prompts {args.prompts} x --k {args.k} must be a multiple of --micro-batch "
                         f"{args.micro_batch} (TRL's gradient accumulation needs it)")
    return args


# ----------------------------------------------------------------------------- preparation

def prepare(args) -> tuple[str, str]:
    """The model folder and a JSON file of the prompts (and answers) of every iteration, in order."""
    import train                                      # the project's own data path, so the prompts are the loop's
    import loop_data
    import warmstart
    flags = ["--prompts", str(args.prompts)] + (["--policy", args.policy] if args.policy else [])
    targs = train.parse_args(flags)
    task = loop_data.load_task(targs)
    policy = args.policy or warmstart.warm_start(targs, task)
    n = args.warmup + args.iterations
    examples = [loop_data.iteration_prompts(task.train, it, args.prompts, targs.seed) for it in range(n)]
    path = os.path.join(args.out, "prompts.json")
    with open(path, "w") as f:
        json.dump({"prompts": [[task.render(ex) for ex in exs] for exs in examples],
                   "answers": [[ex.answer for ex in exs] for exs in examples],
                   "task_args": {"n_terms": targs.n_terms, "lo": targs.lo, "hi": targs.hi, "seed": targs.seed}}, f)
    return os.path.abspath(policy), path


def trl_python(args) -> str:
    """The TRL venv's python; the venv is made on first use with this project's torch, then TRL."""
    venv = os.path.abspath(args.trl_venv)
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py) and subprocess.run([py, "-c", "import trl"], capture_output=True).returncode == 0:
        return py
    from importlib.metadata import version
    torch_version = version("torch").split("+")[0]    # the same torch on both sides; pip takes the CPU wheel on disk
    print(f"making {venv}: torch=={torch_version}, then {args.trl_spec} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + [f"torch=={torch_version}"], check=True)
    constraints = os.path.join(venv, "constraints.txt")
    with open(constraints, "w") as f:                 # TRL must take the torch already there, never a CUDA build
        f.write(f"torch=={torch_version}\n")
    subprocess.run(pip + ["-c", constraints, args.trl_spec], check=True)
    return py


# ----------------------------------------------------------------------------- one measured process

def run(args, name: str, cmd: list, env: dict | None = None) -> dict:
    """Run one measured process; its JSON result, or stop with the tail of its log."""
    result = os.path.join(args.out, "results", name + ".json")
    log = os.path.join(args.out, "logs", name + ".log")
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                        "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"} | (env or {})
    start = time.time()
    with open(log, "w") as f:
        code = subprocess.run(cmd + ["--result", result] if "--" not in cmd else
                              cmd[:cmd.index("--")] + ["--result", result] + cmd[cmd.index("--"):],
                              stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if code:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"{name} failed (exit {code}); end of {log}:\n{tail}")
    with open(result) as f:
        out = json.load(f)
    print(f"  {name}: {time.time() - start:.0f} s", flush=True)
    return out


def ours(args, name, policy, method, prompts=None, k=None, length=None, micro=None, gen_chunk=0, iterations=None,
         env=None):
    flags = ["--method", method, "--policy", policy, "--prompts", str(prompts or args.prompts), "--k", str(k or args.k),
             "--max-new-tokens", str(length or args.max_new_tokens), "--micro-batch", str(micro or args.micro_batch),
             "--lr", str(args.lr), "--iterations", str(iterations or args.warmup + args.iterations),
             "--gen-chunk", str(gen_chunk), "--kl-coef", "0", "--save-every", "1000000", "--log-samples", "0",
             "--out", os.path.join(args.out, "runs", name)]
    shutil.rmtree(os.path.join(args.out, "runs", name), ignore_errors=True)
    return run(args, name, [sys.executable, os.path.join(HERE, "speed_worker.py"), "ours",
                            *(["--free-length"] if args.free_length else []), "--", *flags], env)


def floor(args, name, policy, prompts_file):
    return run(args, name, [sys.executable, os.path.join(HERE, "speed_worker.py"), "generate", "--policy", policy,
                            "--prompts-file", prompts_file, "--k", str(args.k), "--max-new-tokens",
                            str(args.max_new_tokens), "--iterations", str(args.warmup + args.iterations),
                            *(["--free-length"] if args.free_length else [])])


def trl(args, name, py, trainer, policy, prompts_file):
    return run(args, name, [py, os.path.join(HERE, "trl_bench.py"), "--trainer", trainer, "--policy", policy,
                            "--prompts-file", prompts_file, "--k", str(args.k), "--max-new-tokens",
                            str(args.max_new_tokens), "--lr", str(args.lr), "--micro-batch", str(args.micro_batch),
                            "--iterations", str(args.warmup + args.iterations),
                            "--out", os.path.join(args.out, "runs", name),
                            *(["--free-length"] if args.free_length else [])])


# ----------------------------------------------------------------------------- summaries

def phases(rec: dict, method: str = "") -> dict:
    """One iteration's phases (s) in the table's columns, whoever measured it."""
    total = rec["time/iteration"]
    out = {"total": total, "generate": rec["time/generate"], "cpu": rec["cpu/iteration"],
           "cpu_generate": rec["cpu/generate"], "cpu_ratio": rec["cpu/iteration"] / total,
           "tok_s": rec["gen_tokens"] / total, "gen_tokens": rec["gen_tokens"]}
    if "time/rollout" in rec:                                     # ours: the loop's own phase times
        out |= {"score": rec["time/rollout"] - rec["time/generate"], "policy": rec["time/policy"]}
        if method != "rloo":                                      # methods with a reward model
            out |= {"prm": rec["time/prm"], "prm_score": rec["time/score"]}
    elif "time/gen_and_score" in rec:                             # TRL: generation and scoring, then the step
        out |= {"score": rec["time/gen_and_score"] - rec["time/generate"],
                "policy": total - rec["time/gen_and_score"]}
    return out


def summarise(results: list, warmup: int) -> dict:
    """Medians over the measured iterations of every run of a row; peak memory over all its iterations."""
    recs = [phases(r, res.get("method", "")) for res in results for r in res["iterations"][warmup:]]
    keys = sorted({k for r in recs for k in r})
    out = {k: statistics.median(r[k] for r in recs if k in r) for k in keys}
    out["n"] = len(recs)
    out["peak_mb"] = max(r["peak_mb"] for res in results for r in res["iterations"])
    out["start_mb"] = statistics.median(res["rss_start_mb"] for res in results)
    return out


def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def main_table(rows: dict) -> list:
    lines = ["| row | s / iter | generate | score | PRM update | PRM score | policy update | completion tok/s "
             "| CPU s / iter | CPU/wall | peak RSS MB | RSS at loop start MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {fmt(s['total'])} | {fmt(s['generate'])} | {fmt(s.get('score'))} | "
                     f"{fmt(s.get('prm'))} | {fmt(s.get('prm_score'))} | {fmt(s.get('policy'))} | "
                     f"{s['tok_s']:.0f} | {fmt(s['cpu'])} | {s['cpu_ratio']:.2f} | {s['peak_mb']:.0f} | "
                     f"{s['start_mb']:.0f} |")
    return lines


def verdict(value, target, cpu=None):
    """met / missed on the wall-clock ratio; the CPU-time ratio's verdict added when it differs (shared machine)."""
    if value is None:
        return "not measured"
    wall = "met" if value <= target else "**missed**"
    by_cpu = None if cpu is None else ("met" if cpu <= target else "**missed**")
    return wall if by_cpu in (None, wall) else f"{wall} (by CPU time: {by_cpu})"


def ratio(rows, a, b, key):
    x, y = rows.get(a, {}).get(key), rows.get(b, {}).get(key)
    return x / y if x and y else None


def targets_table(rows: dict, scaling: dict) -> list:
    """Each target as measured in wall time and, less sensitive to a shared machine, in CPU time."""
    checks = [("outcome-only RLOO / TRL GRPOTrainer, s / iter", ROW_RLOO, ROW_GRPO, "total", "cpu", "rloo_vs_grpo"),
              ("outcome-only RLOO / TRL RLOOTrainer, s / iter (the GRPO target)", ROW_RLOO, ROW_TRL_RLOO, "total", "cpu",
               "rloo_vs_grpo"),
              ("rePIRL / outcome-only RLOO, s / iter", ROW_REPIRL, ROW_RLOO, "total", "cpu", "repirl_vs_rloo")]
    checks += [(f"generation phase of {name} / bare model.generate", name, ROW_FLOOR, "generate", "cpu_generate",
                "generate_vs_floor") for name in (ROW_RLOO, ROW_REPIRL)]
    lines = ["| target | measured (wall) | measured (CPU) | at most | verdict |", "|---|---|---|---|---|"]
    for label, a, b, wall, cpu, target in checks:
        w, c = ratio(rows, a, b, wall), ratio(rows, a, b, cpu)
        lines.append(f"| {label} | {fmt(w, 2)} | {fmt(c, 2)} | {TARGETS[target]} | {verdict(w, TARGETS[target], c)} |")
    for axis in ("k", "length"):
        if scaling.get(axis):
            w = max(r["ratio"] for r in scaling[axis][1:])
            c = max(r["cpu_ratio_prev"] for r in scaling[axis][1:])
            lines.append(f"| our RLOO, worst ratio per doubling of {axis} (linear: 2.0) | {fmt(w, 2)} | {fmt(c, 2)} | "
                         f"{TARGETS['per_doubling']} | {verdict(w, TARGETS['per_doubling'], c)} |")
    for method, allocator in sorted({(r["method"], r["allocator"]) for r in scaling.get("memory", [])}):
        peaks = [r["peak_mb"] for r in scaling["memory"] if r["method"] == method and r["allocator"] == allocator]
        m = max(peaks) / min(peaks)
        lines.append(f"| peak RSS of our {method}, largest / smallest batch ({allocator}) | {fmt(m, 2)} | | "
                     f"{TARGETS['memory_flat']} | {verdict(m, TARGETS['memory_flat'])} |")
    return lines


def scaling_tables(scaling: dict) -> list:
    lines = []
    for axis, label in (("k", "k (completions per prompt)"), ("length", "completion length")):
        if not scaling.get(axis):
            continue
        lines += ["", f"Our RLOO as {label} doubles (ratio: s / iter over the previous row; linear is 2.0):", "",
                  f"| {axis} | completions | s / iter | generate | score | policy update | CPU s / iter "
                  "| ratio (wall) | ratio (CPU) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in scaling[axis]:
            lines.append(f"| {r['value']} | {r['completions']} | {fmt(r['total'])} | {fmt(r['generate'])} | "
                         f"{fmt(r['score'])} | {fmt(r['policy'])} | {fmt(r['cpu'])} | {fmt(r.get('ratio'), 2)} | "
                         f"{fmt(r.get('cpu_ratio_prev'), 2)} |")
    if scaling.get("memory"):
        lines += ["", "Peak memory of our loop as the batch grows at a fixed micro-batch budget (generation chunked "
                  "to the same budget). glibc: the default allocator; returned: the same with "
                  f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}, so freed blocks go back to the system and RSS follows "
                  "what the loop holds (slower: its times are not comparable):", "",
                  "| method | allocator | prompts | completions | micro-batch | prompts per generate call | peak RSS MB "
                  "| RSS at loop start MB | peak - start MB | s / iter |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in scaling["memory"]:
            lines.append(f"| {r['method']} | {r['allocator']} | {r['value']} | {r['completions']} | {r['micro']} | "
                         f"{r['gen_chunk']} | {r['peak_mb']:.0f} | {r['start_mb']:.0f} | "
                         f"{r['peak_mb'] - r['start_mb']:.0f} | {fmt(r['total'])} |")
    return lines


ROW_RLOO, ROW_REPIRL = "ours: RLOO, outcome only", "ours: rePIRL"
ROW_FLOOR, ROW_GRPO, ROW_TRL_RLOO = "bare model.generate (floor)", "TRL GRPOTrainer", "TRL RLOOTrainer"


# ----------------------------------------------------------------------------- main

def main():
    args = parse_args()
    os.chdir(ROOT)                                    # relative paths (--out, --trl-venv, runs/cache) are the repo's
    args.out = os.path.abspath(args.out)
    for sub in ("results", "logs", "runs"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    load_start = os.getloadavg()
    policy, prompts_file = prepare(args)
    py = trl_python(args) if args.trl else None
    print(f"model {policy}; {args.prompts} prompts x k {args.k}, L {args.max_new_tokens}, micro-batch "
          f"{args.micro_batch}; {args.warmup} warm-up + {args.iterations} measured iterations x {args.repeats}", flush=True)

    plan = {ROW_RLOO: lambda r: ours(args, f"rloo-{r}", policy, "rloo"),
            ROW_REPIRL: lambda r: ours(args, f"repirl-{r}", policy, "repirl"),
            ROW_FLOOR: lambda r: floor(args, f"generate-{r}", policy, prompts_file)}
    if py:
        plan[ROW_GRPO] = lambda r: trl(args, f"trl-grpo-{r}", py, "grpo", policy, prompts_file)
        plan[ROW_TRL_RLOO] = lambda r: trl(args, f"trl-rloo-{r}", py, "rloo", policy, prompts_file)
    raw = {name: [] for name in plan}
    for r in range(args.repeats):                                  # interleaved: drift hits every row alike
        for name, go in plan.items():
            raw[name].append(go(r))
    rows = {name: summarise(res, args.warmup) for name, res in raw.items()}
    versions = next((res[0]["versions"] for name, res in raw.items() if res and "versions" in res[0]), None)

    expected = args.prompts * args.k * args.max_new_tokens
    mismatched = [n for n, s in rows.items() if not args.free_length and s["gen_tokens"] != expected]

    scaling = {}
    if args.scaling:
        scaling = run_scaling(args, policy)

    cpu_walls = [s["cpu_ratio"] for s in rows.values()] + [r["cpu_ratio"] for axis in ("k", "length")
                                                             for r in scaling.get(axis, [])]
    shared = load_start[0] > 0.5 * (os.cpu_count() or 1) or min(cpu_walls) < 0.9
    from importlib.metadata import version
    lines = ["# Speed of one iteration (issue 8)", "",
             f"`python benchmarks/speed.py {' '.join(sys.argv[1:])}` on {platform.node() or 'this machine'}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} cores, {args.threads} torch thread(s) per row; "
             f"load average {load_start[0]:.1f} before the runs"
             + (" (**the machine was shared: absolute times are inflated, ratios less so; a row's CPU/wall below "
                "0.9 says it was slowed by other jobs**)" if shared else "") + ".",
             f"Identical work per iteration: {args.prompts} prompts x k {args.k} = {args.prompts * args.k} completions of "
             + (f"exactly {args.max_new_tokens} tokens" if not args.free_length else f"at most {args.max_new_tokens} tokens")
             + f", micro-batch {args.micro_batch}, lr {args.lr}, no KL, one optimizer step; model {os.path.relpath(policy, ROOT)}. "
             f"Medians of {args.iterations} iterations after {args.warmup} of warm-up, {args.repeats} run(s) per row.",
             f"Ours: torch {version('torch')}, transformers {version('transformers')}."
             + (f" TRL venv: trl {versions['trl']}, transformers {versions['transformers']}, torch {versions['torch']}."
                if versions else ""), ""]
    lines += main_table(rows)
    if mismatched:
        lines += ["", f"WARNING: rows whose generated tokens differ from {expected} per iteration: {', '.join(mismatched)}"]
    lines += ["", "Targets (ratios of the medians above, same run, same machine):", ""]
    lines += targets_table(rows, scaling)
    lines += scaling_tables(scaling)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "speed.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "speed.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows, "scaling": scaling, "versions": versions, "raw": raw}, f, indent=1)
    print("\n" + text)


def run_scaling(args, policy) -> dict:
    """Our RLOO as k and L double; peak RSS as the batch doubles at a fixed micro-batch."""
    out = {"k": [], "length": [], "memory": []}
    ks = (2, 4, 8) if args.quick else (2, 4, 8, 16)
    lengths = [args.max_new_tokens // 2, args.max_new_tokens] if args.quick else \
        [args.max_new_tokens, 2 * args.max_new_tokens, 4 * args.max_new_tokens]
    for axis, values in (("k", ks), ("length", lengths)):
        for v in values:
            res = [ours(args, f"scale-{axis}{v}-{r}", policy, "rloo", k=v if axis == "k" else None,
                        length=v if axis == "length" else None) for r in range(args.repeats)]
            s = summarise(res, args.warmup)
            row = {"value": v, "completions": args.prompts * (v if axis == "k" else args.k)} | s
            if out[axis]:
                row["ratio"] = s["total"] / out[axis][-1]["total"]
                row["cpu_ratio_prev"] = s["cpu"] / out[axis][-1]["cpu"]
            out[axis].append(row)
    micro = max(args.k, args.micro_batch // 2 if args.quick else args.micro_batch)
    chunk = micro // args.k                                  # prompts per generate call: the same budget
    sizes = [chunk * 2 ** i for i in range(3 if args.quick else 4)]   # from one full micro-batch up
    for allocator, env in (("glibc", None), ("returned", {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)})):
        for method in ("rloo", "repirl"):
            for n in sizes:
                c = chunk
                res = ours(args, f"memory-{allocator}-{method}-p{n}", policy, method, prompts=n, micro=micro,
                           gen_chunk=c, iterations=args.warmup + (1 if args.quick else 2), env=env)
                out["memory"].append({"method": method, "allocator": allocator, "value": n, "completions": n * args.k,
                                      "micro": micro, "gen_chunk": c} | summarise([res], args.warmup))
    return out


if __name__ == "__main__":
    main()
