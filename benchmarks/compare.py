"""Every method of the papers on equal footing: same warm start, prompts, rollouts, budget and seeds.

Trains each method with train.py (one subprocess per method and seed, so nothing leaks between
runs), then prints and saves a table shaped like rePIRL's Table 2: held-out greedy accuracy and its
change from each seed's warm start, as mean and standard deviation over seeds, beside the signal
the outcome reward cannot give (the share of groups whose k rollouts all fail, early and late), the
PRM's AUC and the wall time per run.

    python benchmarks/compare.py --methods bc,rloo,repirl,repirl-dense   # the README's comparison (3 seeds, ~30 min on 2 CPU cores)
    python benchmarks/compare.py                              # every method (hours on 2 CPU cores)
    python benchmarks/compare.py --quick                      # 1 seed, 20 iterations: a smoke run in minutes
    python benchmarks/compare.py --extra "--n-terms 4"        # another setting, same flags for every method
    python benchmarks/compare.py --methods bc,rloo,repirl,repirl-policy --iterations 100 \
        --extra "--bc-stop-early 0.99" --out runs/compare-sparse   # the README's sparse-outcome comparison

The table goes to <out>/table.md, every run's final metrics to <out>/results.json, and
<out>/report.html draws held-out accuracy and the all-fail share against iteration for every
method (mean over seeds, each seed faint). A run that finished (its <out>/<method>/seed<S>/compare.json)
is not run again: a killed comparison resumes.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli  # noqa: E402  (the project's modules live one folder up)
import report  # noqa: E402

METHODS = {                                       # key -> (row name, train.py flags)
    "bc": ("behaviour cloning (bc)", ["--method", "bc"]),
    "rloo": ("RLOO, outcome only", ["--method", "rloo"]),
    "ppo": ("PPO, outcome only (learned critic)", ["--method", "rloo", "--estimator", "ppo"]),
    "prime": ("PRIME (implicit PRM)", ["--method", "prime"]),
    "airl": ("AIRL (token discriminator)", ["--method", "airl"]),
    "mcts": ("Math-Shepherd (Monte Carlo step labels)", ["--method", "mcts"]),
    "kto": ("KTO (rollouts labelled by the outcome)", ["--method", "kto"]),
    "tango": ("RL Tango (verifier trained by RL on outcomes)", ["--method", "tango"]),
    "prm-only": ("rePIRL, PRM only (4.4)", ["--method", "prm-only"]),
    "no-pseudo-expert": ("rePIRL, no pseudo-expert (D.2)", ["--method", "repirl", "--pseudo-expert", "off"]),
    "grpo": ("rePIRL, GRPO advantages (T3)", ["--method", "repirl", "--estimator", "grpo"]),
    "reinforce": ("rePIRL, REINFORCE (T3)", ["--method", "repirl", "--estimator", "reinforce"]),
    "repirl-ppo": ("rePIRL, PPO with a critic (GAE)", ["--method", "repirl", "--estimator", "ppo"]),
    "repirl-dense": ("rePIRL, alpha 1 and PRM lr 1e-3", ["--method", "repirl", "--alpha", "1", "--prm-lr", "1e-3"]),
    "rloo-entropy": ("RLOO, entropy in the return (repirl-maxent's control, no PRM)",
                     ["--method", "rloo", "--entropy", "return", "--ent-coef", "0.1"]),
    "repirl-maxent": ("rePIRL, entropy in the return (ent_coef = alpha), pseudo-expert both",
                      ["--method", "repirl", "--entropy", "return", "--ent-coef", "0.1", "--pseudo-expert", "both"]),
    "repirl-policy": ("rePIRL, log Z under the policy (--partition policy)", ["--method", "repirl", "--partition", "policy"]),
    "repirl": ("rePIRL", ["--method", "repirl"]),
}


@dataclass
class Args:
    seeds: int = 3
    """seeds 0 .. seeds-1 of every method"""
    iterations: int = 150
    """iterations of every run"""
    extra: str = ""
    """flags passed to every train.py run, e.g. "--n-terms 4" """
    methods: str = ",".join(METHODS)
    """comma-separated keys of the rows to run, in this order"""
    out: str = "runs/compare"
    """where runs, table.md, results.json and report.html go"""
    quick: bool = False
    """1 seed, 20 iterations"""
    early: int = 25
    """the table also gives held-out accuracy after this many iterations (a multiple of train.py's --eval-every)"""


def run(key: str, seed: int, a: Args) -> dict:
    """One finished train.py run: its final metrics, wall time and per-iteration records, read from
    <out>/compare.json when an earlier invocation with the same command finished it."""
    out = os.path.join(a.out, key, f"seed{seed}")
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *METHODS[key][1], "--seed", str(seed), "--out", out,
           "--iterations", str(a.iterations), *a.extra.split()]
    done = os.path.join(out, "compare.json")
    if os.path.exists(done):
        with open(done) as f:
            record = json.load(f)
        if record["cmd"] == cmd[1:]:
            return record["final"] | {"curve": read_curve(out)}
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        final = json.loads(f.readlines()[-1]) | {"wall_s": time.time() - start}
    with open(done, "w") as f:
        json.dump({"cmd": cmd[1:], "final": final}, f)
    return final | {"curve": read_curve(out)}


def read_curve(out: str) -> list:
    """The per-iteration records of a run's metrics.jsonl, after one for iteration 0 (the warm start)."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    start = next(r["eval/accuracy_start"] for r in records if "eval/accuracy_start" in r)
    return [{"iteration": 0, "eval/accuracy": start}] + [r for r in records if "iteration" in r]


def mean_sd(xs: list, sign: str = "") -> str:
    return f"{statistics.mean(xs):{sign}.3f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def all_fail_share(curve: list, first: bool, window: int = 25) -> float:
    """Mean share of all-fail groups over the first (or last) `window` iterations; nan for bc (no groups scored)."""
    xs = [r["policy/all_fail_groups"] for r in curve if "policy/all_fail_groups" in r]
    xs = xs[:window] if first else xs[-window:]
    return statistics.mean(xs) if xs else float("nan")


def table(results: dict, a: Args) -> str:
    lines = [f"| method | held-out accuracy at iteration {a.early} | held-out accuracy at the end (mean +- sd) | "
             "change from the warm start | all-fail groups, first 25 / last 25 iterations | PRM AUC | wall s / run |",
             "|---|---|---|---|---|---|---|"]
    for key, rs in results.items():
        early = [next((r["eval/accuracy"] for r in run["curve"] if r["iteration"] == a.early), float("nan")) for run in rs]
        acc = [r["eval/accuracy_end"] for r in rs]
        gain = [r["eval/accuracy_end"] - r["eval/accuracy_start"] for r in rs]     # seeds' warm starts differ
        auc = [r["eval/prm_auc"] for r in rs if r["eval/prm_auc"] == r["eval/prm_auc"]]   # nan: no PRM
        fails = [statistics.mean(all_fail_share(r["curve"], first) for r in rs) for first in (True, False)]
        fail_text = "-" if fails[0] != fails[0] else f"{fails[0]:.2f} / {fails[1]:.2f}"
        lines.append(f"| {METHODS[key][0]} | {mean_sd(early)} | {mean_sd(acc)} | {mean_sd(gain, '+')} | {fail_text} | "
                     f"{f'{statistics.mean(auc):.3f}' if auc else '-'} | {statistics.mean(r['wall_s'] for r in rs):.0f} |")
    starts = [r["eval/accuracy_start"] for rs in results.values() for r in rs[:a.seeds]]
    return "\n".join(lines + [f"\nwarm starts {', '.join(f'{s:.3f}' for s in starts[:a.seeds])} (seeds 0-{a.seeds - 1}); "
                              f"{a.iterations} iterations; extra flags: {a.extra or 'none'}"])


def main(a: Args):
    unknown = set(a.methods.split(",")) - set(METHODS)
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    if a.quick:
        a.seeds, a.iterations = 1, 20
    results = {key: [run(key, s, a) for s in range(a.seeds)] for key in a.methods.split(",")}   # in the order given
    text = table(results, a)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({key: [{k: v for k, v in r.items() if k != "curve"} for r in rs] for key, rs in results.items()}, f, indent=1)
    with open(os.path.join(a.out, "report.html"), "w") as f:
        f.write(report.comparison_html({METHODS[key][0]: [r["curve"] for r in rs] for key, rs in results.items()}, text))
    print(text)


if __name__ == "__main__":
    main(Args(**vars(cli.dataclass_parser(Args, __doc__.split("\n\n")[0]).parse_args())))
