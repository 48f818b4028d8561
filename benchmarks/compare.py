"""Every method of the papers on equal footing: same warm start, prompts, rollouts, budget and seeds.

Trains each method with train.py (one subprocess per method and seed, so nothing leaks between
runs), then prints and saves a table shaped like rePIRL's Table 2: held-out greedy accuracy as
mean and standard deviation over seeds, with the wall time per run.

    python benchmarks/compare.py                 # 3 seeds, the default budget (tens of minutes on 2 CPU cores)
    python benchmarks/compare.py --quick         # 1 seed, 20 iterations: a smoke run in minutes
    python benchmarks/compare.py --extra "--n-terms 4"   # a harder setting, same flags for every method
    python benchmarks/compare.py --methods bc,rloo,repirl   # some rows only

The table goes to <out>/table.md and every run's final metrics to <out>/results.json. A run that
finished (its <out>/<method>/seed<S>/compare.json) is not run again: a killed comparison resumes.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {                                       # key -> (row name, train.py flags)
    "bc": ("behaviour cloning (bc)", ["--method", "bc"]),
    "rloo": ("RLOO, outcome only", ["--method", "rloo"]),
    "ppo": ("PPO, outcome only (learned critic)", ["--method", "rloo", "--estimator", "ppo"]),
    "prime": ("PRIME (implicit PRM)", ["--method", "prime"]),
    "airl": ("AIRL (token discriminator)", ["--method", "airl"]),
    "mcts": ("Math-Shepherd (Monte Carlo step labels)", ["--method", "mcts"]),
    "prm-only": ("rePIRL, PRM only (4.4)", ["--method", "prm-only"]),
    "no-pseudo-expert": ("rePIRL, no pseudo-expert (D.2)", ["--method", "repirl", "--pseudo-expert", "off"]),
    "grpo": ("rePIRL, GRPO advantages (T3)", ["--method", "repirl", "--estimator", "grpo"]),
    "reinforce": ("rePIRL, REINFORCE (T3)", ["--method", "repirl", "--estimator", "reinforce"]),
    "repirl-ppo": ("rePIRL, PPO with a critic (GAE)", ["--method", "repirl", "--estimator", "ppo"]),
    "repirl": ("rePIRL", ["--method", "repirl"]),
}


def run(name: str, flags: list, seed: int, args) -> dict:
    """One finished train.py run: its final metrics and wall time, from <out>/compare.json when an
    earlier invocation with the same command finished it (so a killed comparison resumes)."""
    out = os.path.join(args.out, name.split(" (")[0].replace(" ", "_").replace(",", ""), f"seed{seed}")
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *flags, "--seed", str(seed), "--out", out,
           "--iterations", str(args.iterations), *args.extra.split()]
    done = os.path.join(out, "compare.json")
    if os.path.exists(done):
        with open(done) as f:
            record = json.load(f)
        if record["cmd"] == cmd[1:]:
            return record["final"]
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        final = json.loads(f.readlines()[-1]) | {"wall_s": time.time() - start}
    with open(done, "w") as f:
        json.dump({"cmd": cmd[1:], "final": final}, f)
    return final


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--extra", default="", help="flags passed to every train.py run")
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--quick", action="store_true", help="1 seed, 20 iterations")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated keys of the rows to run")
    args = p.parse_args()
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    if args.quick:
        args.seeds, args.iterations = 1, 20
    results = {METHODS[key][0]: [run(*METHODS[key], s, args) for s in range(args.seeds)]
               for key in args.methods.split(",")}                             # in the order given
    lines = ["| method | held-out accuracy (mean +- sd) | change from the warm start (mean +- sd) | PRM AUC | "
             "wall s / run |", "|---|---|---|---|---|"]
    for name, rs in results.items():
        acc = [r["eval/accuracy_end"] for r in rs]
        gain = [r["eval/accuracy_end"] - r["eval/accuracy_start"] for r in rs]   # seeds' warm starts differ
        sd, gain_sd = (statistics.stdev(acc), statistics.stdev(gain)) if len(acc) > 1 else (0.0, 0.0)
        auc = [r["eval/prm_auc"] for r in rs if r["eval/prm_auc"] == r["eval/prm_auc"]]   # nan: no PRM
        auc_text = f"{statistics.mean(auc):.3f}" if auc else "-"
        wall = statistics.mean(r["wall_s"] for r in rs)
        lines.append(f"| {name} | {statistics.mean(acc):.3f} +- {sd:.3f} | {statistics.mean(gain):+.3f} +- {gain_sd:.3f} "
                     f"| {auc_text} | {wall:.0f} |")
    start = statistics.mean(r["eval/accuracy_start"] for rs in results.values() for r in rs)
    table = "\n".join(lines + [f"\nwarm start: {start:.3f}; {args.seeds} seed(s), {args.iterations} iterations; "
                               f"extra flags: {args.extra or 'none'}"])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(table)


if __name__ == "__main__":
    main()
