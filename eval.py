"""Using a learned PRM: pass@k, test-time scaling, PRM quality, error localisation, heatmaps.

A token-level reward r_phi(s_t, a_t) learned by rePIRL (arXiv 2602.07832) is worth what it can do
after training. This file measures it the ways the two papers use one: rePIRL section 4.3
(best-of-N and PRM-weighted voting over N samples; test-time training on unlabeled prompts) and
R-AIRL (Fanconi et al., arXiv 2510.01857: reranking, the reward's agreement with correctness,
locating the first wrong step of a trace, token-reward heatmaps).

    python eval.py --run runs/default                     # newest checkpoint of a run: everything, ~1-2 min on CPU
    python eval.py --run runs/default --prompts 200 --n 1,2,4,8,16,32
    python eval.py --policy runs/cache/tiny-bc-XXXX --prm runs/default/ckpt-000150/prm --out runs/bc-eval
    python eval.py --policy Qwen/Qwen2.5-3B-Instruct --task gsm8k --out runs/qwen   # no PRM: pass@k, majority vote
    python eval.py --run runs/default --ttt-after runs/ttt/ckpt-000050/policy       # test-time training gain

It writes <out>/eval.json (every number), <out>/report.html (tables, inline-SVG scaling and
training curves, heatmap excerpts), <out>/heatmap-<set>.html and heatmap-<set>-discounted.html,
and prints a compact table. <out> is the run folder unless --out says otherwise. Without --run,
--policy names any checkpoint (a path or a hub name) and the task comes from --task/--task-kwargs.

The rules every number below depends on:

Steps. prm.py defines them (its docstring gives the rules, shared with training): a step ends
  after ". " or a newline, so "37+25=62. 62-18=44. Answer: 44" has three steps, the last one being
  the answer; EOS is part of the last step. A step's score is the sum of its token rewards
  (prm.step_scores).
Trajectory scores for best-of-N: "sum" = R_phi(tau) (sum of token rewards), "mean" (per token),
  "min step" (lowest step score), "last step" (score of the final step, the answer and EOS).
Ties. Every selector returns the LOWEST sample index among equal-best samples; between answer
  groups with equal votes (or equal weight), the group whose first member comes first wins.
  Scores compare exactly (no tolerance). Samples without a parsable answer do not vote; when no
  sample has one, the vote returns index 0.
PRM-weighted vote. Group the samples by final answer (exact string), sum the weights
  w_i = exp(R_i - max_j R_j) per group, take the heaviest group, then its highest-R member. R_phi
  is a log-density (Eqn 5 treats exp(R_phi) as an unnormalised trajectory probability), so summing
  exp(R) picks the mode of the answers under pi_theta(tau) exp(R_phi(tau)) (the samples come from
  pi_theta). Summing raw R_phi instead would be wrong for signed scores: a larger group of
  negative scores would LOSE to a smaller one.
Sub-sampling. max(--n) samples per prompt are drawn once; for every smaller N the accuracy is the
  mean over --subsets random subsets of size N (without replacement, seeded) of each prompt's
  samples; N = max(--n) uses all of them. "oracle" is the unbiased pass@N of the same samples,
  "random" is pass@1 (what a selector that ignores the PRM would get).
Step labels (step-level AUC). Steps before the first wrong step are correct (positive), the
  first wrong step is wrong (negative), later steps are dropped (a consistent continuation of a
  wrong value is neither clearly right nor wrong); a trace without a wrong step is all positive.
Error localisation. Accuracy = fraction of traces whose lowest-scoring step (ties: earliest) is
  the known first wrong step; chance = mean over the same traces of 1 / number of steps (every
  step, the answer step included, is a candidate). Three trace sets:
  - "injected" (synthetic task): the expert solution with an arithmetic error at step j (the
    result off by one of +-1, +-2, +-10), every later step continuing consistently from the wrong
    value; j uniform over the computation steps;
  - "rollouts" (synthetic task): the policy's own wrong samples; recomputing every "a op b = c."
    step finds the first wrong one (wrong result, wrong operand, or a copy error: a must equal the
    previous result, or the first number at step 0; the answer step must state the last result);
  - "perturbed" (any task whose examples carry a gold solution): one number of the gold solution
    changed (a number right after "=" when there is one, else any number), nothing else; its step
    is the first wrong one.
Heatmaps. Tokens are coloured by their reward standardised over the page (z = (r - mean) / std over
  all completion tokens shown), red below the mean, blue above, clipped at |z| = 2.5. The
  discounted pages show the discounted reward-to-go G_t = sum_{t' >= t} gamma^(t' - t) r_t'
  (gamma = --gamma, 0.9 as R-AIRL shows it): what the rest of the trace from token t is worth.
All-fail groups (the early-signal claim). Each prompt's samples are split into consecutive groups
  of k (the run's k). In a group whose k samples all fail, outcome RLOO has zero advantage; the
  PRM still orders them. Reported: the fraction of all-fail groups, the spread (std) of R_phi
  inside them, and (synthetic task) the concordance of R_phi with progress (number of correct
  steps before the first wrong one) over pairs of failures with different progress: 0.5 is no
  signal, 1 means closer failures always score higher.
Test-time training (rePIRL abstract). PRM-only RL on the held-out prompts, with no answers used,
  is a train.py run (see the note in `test_time_training`); this file measures a given
  checkpoint before and after on those prompts: greedy pass@1 and mean R_phi of the greedy traces.

Choices and deviations from the papers:
1. The weighted vote sums exp(R_phi), not the scores themselves: rePIRL's PRM scores are not
   probabilities, and R_phi is a log-density up to a constant (see "PRM-weighted vote" above).
2. A step's score is the sum of its token rewards, like R_phi; the mean would favour short steps
   less but would no longer add up to R_phi.
3. Error localisation counts the answer step as a candidate (the policy's own errors can be
   there), so injected errors, which never are, have a stricter chance rate than 1 / #steps:
   the "best fixed step" baseline is reported beside it.
4. Sampled pass@k, the scaling curves and the AUCs come from one set of max(--n) samples per
   prompt, so their noise is shared; the tables report the number of prompts and samples.
"""
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

import cli
import grader
import prm as prm_lib
import report
import rollout
import tasks


# ----------------------------------------------------------------------------- 1) runs, checkpoints, models

@dataclass
class Args:
    run: str = ""
    """run folder of train.py: its newest checkpoint, args.json and metrics.jsonl"""
    policy: str = ""
    """policy: a path or hub name (empty: <newest checkpoint>/policy of --run)"""
    prm: str = ""
    """PRM: a path or hub name (empty: <newest checkpoint>/prm of --run; none there: skip the PRM parts)"""
    task: str = ""
    """a task of tasks.py (empty: the run's task, else arithmetic)"""
    task_kwargs: str = "{}"
    """JSON settings of the task, over those of the run's args.json"""
    out: str = ""
    """where eval.json and the HTML go (empty: the --run folder)"""
    prompts: int = 200
    """held-out prompts (the first ones of task.test)"""
    n: str = "1,2,4,8,16"
    """sample counts N of the scaling curves; max(N) samples are drawn per prompt"""
    subsets: int = 32
    """random subsets per prompt for every N < max(N)"""
    k: int = 0
    """group size for the all-fail analysis (0: the run's k, else 4)"""
    temperature: float = -1.0
    """sampling temperature (<0: the run's, else 1.0)"""
    max_new_tokens: int = 0
    """completion length limit (0: the run's, else 40)"""
    gamma: float = 0.9
    """discount of the discounted heatmaps (reward-to-go)"""
    heatmap_pairs: int = 16
    """trace pairs per heatmap page (the report shows the first 4)"""
    ttt_after: str = ""
    """policy after test-time training on the held-out prompts: measure the gain"""
    gen_chunk: int = 32
    """prompts per generate call"""
    micro_batch: int = 128
    """sequences per PRM forward pass"""
    seed: int = 0
    """seed of sampling, subsets and error injection"""


def parse_args(argv=None) -> Args:
    """The CLI is generated from `Args` (cli.py): one flag per field, its docstring as help."""
    args = Args(**vars(cli.dataclass_parser(Args, __doc__.split("\n\n")[0]).parse_args(argv)))
    if not (args.run or args.policy):
        raise SystemExit("give --run (a train.py run folder) or --policy (a checkpoint path or hub name)")
    return args


def checkpoints(run: str) -> list:
    """Complete checkpoints ckpt-NNNNNN of a run folder, oldest first (a torn `.tmp` is never listed)."""
    if not os.path.isdir(run):
        return []
    return sorted(os.path.join(run, n) for n in os.listdir(run) if n.startswith("ckpt-") and not n.endswith(".tmp"))


def model_path(path: str, part: str) -> str:
    """A train.py checkpoint folder holds policy/ and prm/; any other path or hub name is the model itself."""
    return os.path.join(path, part) if os.path.isdir(os.path.join(path, part)) else path


def run_settings(run: str) -> dict:
    """The run's Args as train.py wrote them (args.json), or {} without a run."""
    path = os.path.join(run, "args.json") if run else ""
    return json.load(open(path)) if path and os.path.exists(path) else {}


def load_policy(path: str):
    """A causal LM and its tokenizer from a path or hub name, in eval mode."""
    tok = AutoTokenizer.from_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path).eval(), tok


def answer_of(task, completion: str):
    """The final answer a completion states: the key votes group by (None: no answer).

    The task's own `extract_answer` when it has one; the synthetic task's "Answer: N" (the regex its
    reward reads); else grader's extraction, normalised. Groups are exact strings, so answers that
    are equal only symbolically ("0.5", "1/2") vote apart.
    """
    if hasattr(task, "extract_answer"):
        return task.extract_answer(completion)
    if task.name == "arithmetic":
        match = tasks.ANSWER_RE.search(completion.strip())
        return match.group(1) if match else None
    answer = grader.extract_answer(completion)
    return None if answer is None else grader.normalize(answer)


# ----------------------------------------------------------------------------- 2) traces with a known first wrong step

STEP_RE = re.compile(r"(-?\d+)\s*([+-])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.")      # one "a op b = c." step
FINAL_RE = re.compile(r"Answer:\s*(-?\d+)")
DELTAS = (-10, -2, -1, 1, 2, 10)                                              # injected arithmetic slips


def parse_problem(prompt: str):
    """Numbers and operators of an arithmetic prompt: 'What is 37+25-18?' -> [37, 25, 18], ['+', '-']."""
    expr = re.search(r"-?\d+(?:\s*[+-]\s*-?\d+)+", prompt).group(0)
    first = re.match(r"-?\d+", expr)
    pairs = re.findall(r"([+-])\s*(-?\d+)", expr[first.end():])
    return [int(first.group(0))] + [int(n) for _, n in pairs], [op for op, _ in pairs]


def write_trace(nums: list[int], ops: list[str], values: list[int]) -> str:
    """A trace in the expert's format with the given running values (tasks.write_steps when correct)."""
    steps = [f"{values[i]}{op}{n}={values[i + 1]}." for i, (op, n) in enumerate(zip(ops, nums[1:]))]
    return " ".join(steps) + f" Answer: {values[-1]}"


def inject_error(nums: list[int], ops: list[str], j: int, delta: int) -> str:
    """The expert trace with step j's result off by `delta`, later steps consistent with the wrong value."""
    assert 0 <= j < len(ops) and delta != 0
    right = tasks.solve(nums, ops)
    values = right[:j + 1] + [right[j + 1] + delta]
    for op, n in zip(ops[j + 1:], nums[j + 2:]):
        values.append(values[-1] + n if op == "+" else values[-1] - n)
    return write_trace(nums, ops, values)


def first_wrong_step(text: str, nums: list[int], ops: list[str]):
    """Index of the first wrong step of an arithmetic trace, by recomputation; None if none is wrong.

    Step i < len(ops) must read "a op b = c." with a the previous correct result (the first number
    at step 0), op and b the problem's, c = a op b; step len(ops) must be "Answer: <final value>";
    any step after it is wrong. A trace that stops early with every step right has no wrong step.
    """
    values = tasks.solve(nums, ops)
    for i, (s, e) in enumerate(prm_lib.split_steps(text)):
        step = text[s:e].strip()
        if i < len(ops):
            m = STEP_RE.fullmatch(step)
            ok = m is not None and (int(m[1]), m[2], int(m[3]), int(m[4])) == (values[i], ops[i], nums[i + 1], values[i + 1])
        elif i == len(ops):
            m = FINAL_RE.fullmatch(step)
            ok = m is not None and int(m[1]) == values[-1]
        else:
            ok = False
        if not ok:
            return i
    return None


def step_labels(n_steps: int, first_wrong) -> list:
    """1 for steps before the first wrong one, 0 for it, None (dropped) after it."""
    j = n_steps if first_wrong is None else first_wrong
    return [1 if i < j else (0 if i == j else None) for i in range(n_steps)]


NUMBER_RE = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")


def perturb_number(solution: str, rng: random.Random):
    """Change one number of a gold solution: (new text, index of the step that holds it) or None.

    The number is one right after "=" (or "= -") when there is any (a computed result), else any
    number; its magnitude's integer part moves by one of DELTAS (kept >= 0), its sign, decimals and
    the rest of the text are unchanged.
    """
    numbers = list(NUMBER_RE.finditer(solution))
    results = [m for m in numbers if re.search(r"=\s*-?\s*$", solution[:m.start()])]
    if not numbers:
        return None
    m = rng.choice(results or numbers)
    value, delta = int(m.group(1).replace(",", "")), rng.choice(DELTAS)
    new = value + delta if value + delta >= 0 else value + abs(delta)
    text = solution[:m.start()] + str(new) + (m.group(2) or "") + solution[m.end():]
    return text, prm_lib.step_of_char(text, m.start())


def known_error_sets(tok, task, examples, seed: int) -> dict:
    """name -> (Batch, prompts, first wrong steps) for 'expert' (no wrong step), 'injected'
    (synthetic task only) and 'perturbed', from the examples that carry a gold solution."""
    rng = random.Random(f"errors/{seed}")
    gold = [ex for ex in examples if ex.solution]
    if not gold:
        return {}
    encode = lambda exs, texts: rollout.encode(tok, [task.render(ex, tok) for ex in exs], texts)
    sets = {"expert": (encode(gold, [ex.solution for ex in gold]), [ex.prompt for ex in gold], [None] * len(gold))}
    if task.name == "arithmetic":
        injected = []
        for ex in gold:
            nums, ops = parse_problem(ex.prompt)
            j = rng.randrange(len(ops))
            injected.append((inject_error(nums, ops, j, rng.choice(DELTAS)), j))
        sets["injected"] = (encode(gold, [t for t, _ in injected]), [ex.prompt for ex in gold], [j for _, j in injected])
    perturbed = [(ex, perturb_number(ex.solution, rng)) for ex in gold]
    perturbed = [(ex, p) for ex, p in perturbed if p is not None]
    if perturbed:
        sets["perturbed"] = (encode([ex for ex, _ in perturbed], [p[0] for _, p in perturbed]),
                             [ex.prompt for ex, _ in perturbed], [p[1] for _, p in perturbed])
    return sets


# ----------------------------------------------------------------------------- 3) sampling and scoring

@torch.no_grad()
def sample(policy, tok, task, examples, n: int, max_new_tokens: int, temperature: float, seed: int,
           chunk: int) -> rollout.Batch:
    """n completions per example (temperature 0: greedy, n = 1), rows of one prompt adjacent."""
    parts = []
    for c in range(0, len(examples), chunk):
        torch.manual_seed(seed * 1_000_003 + c)
        parts.append(rollout.generate(policy, tok, [task.render(ex, tok) for ex in examples[c:c + chunk]], n,
                                      max_new_tokens, temperature))
    return rollout.concat(parts, tok.pad_token_id)


@torch.no_grad()
def score(prm, batch: rollout.Batch, micro_batch: int) -> torch.Tensor:
    """r_phi(s_t, a_t) of every completion token, 0 elsewhere: (N, T)."""
    return torch.cat([prm_lib.token_rewards(prm, batch.ids[i:i + micro_batch], batch.attention_mask[i:i + micro_batch],
                                            batch.completion_mask[i:i + micro_batch])
                      for i in range(0, len(batch), micro_batch)])


@dataclass
class Scored:
    """Traces with their PRM token rewards, steps and (when known) first wrong steps."""
    batch: rollout.Batch
    prompts: list[str]              # (N,) the question of every row
    r: torch.Tensor                 # (N, T) r_phi, 0 off completion
    step_id: torch.Tensor           # (N, T) step index of completion tokens, -1 elsewhere
    pieces: list[list[str]]         # (N,) text of every completion token
    steps: list[torch.Tensor]       # N x (n_steps,) step scores (sum of token rewards)
    first_wrong: list               # (N,) first wrong step, None: no wrong step (or unknown)


def score_set(prm, tok, batch: rollout.Batch, prompts: list[str], first_wrong: list, micro_batch: int) -> Scored:
    r = score(prm, batch, micro_batch)                                        # (N, T)
    step_id, pieces = prm_lib.batch_steps(tok, batch)                         # (N, T)
    return Scored(batch, prompts, r, step_id, pieces, prm_lib.step_scores(r, step_id), first_wrong)


def aggregate(r: torch.Tensor, batch: rollout.Batch, step_id: torch.Tensor) -> dict:
    """The four trajectory scores of every row: {'sum', 'mean', 'min step', 'last step'} -> (N,)."""
    steps = prm_lib.step_scores(r, step_id)                                   # N x (n_steps,)
    return {"sum": prm_lib.trajectory_reward(r, batch.completion_mask, "sum"),           # (N,)
            "mean": prm_lib.trajectory_reward(r, batch.completion_mask, "mean"),         # (N,)
            "min step": torch.stack([s.min() for s in steps]),                           # (N,)
            "last step": torch.stack([s[-1] for s in steps])}                            # (N,)


# ----------------------------------------------------------------------------- 4) pass@1 and pass@k

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n - c, k) / C(n, k) (Chen et al. 2021)."""
    assert 0 <= c <= n and 1 <= k <= n
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


# ----------------------------------------------------------------------------- 5) selectors and test-time scaling

def best_of_n(scores: list[float]) -> int:
    """Index of the highest score; ties: the lowest index."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def answer_groups(answers: list) -> dict:
    """answer -> indices of the samples stating it, groups ordered by first appearance; None votes nowhere."""
    groups = {}
    for i, a in enumerate(answers):
        if a is not None:
            groups.setdefault(a, []).append(i)
    return groups


def majority_vote(answers: list) -> int:
    """First sample of the most frequent answer; ties: the group that appears first; no answers: 0."""
    groups = answer_groups(answers)
    return max(groups.values(), key=len)[0] if groups else 0      # max keeps the first maximal group


def weighted_vote(answers: list, scores: list[float], log_weights: bool = True) -> int:
    """PRM-weighted majority vote: the heaviest answer group, then its highest-scoring member.

    log_weights=True: scores are log-weights (R_phi), weights exp(score - max score);
    False: scores are weights already (must be >= 0) and are summed as they are.
    Ties: the group that appears first; within the group, the lowest index; no answers: best_of_n.
    """
    groups = answer_groups(answers)
    if not groups:
        return best_of_n(scores)
    top = max(scores)
    weights = [math.exp(s - top) for s in scores] if log_weights else list(scores)
    assert min(weights) >= 0, "weights must be non-negative: pass log-weights with log_weights=True"
    best = max(groups.values(), key=lambda idx: sum(weights[i] for i in idx))
    return max(best, key=lambda i: (scores[i], -i))


def selectors(reduce: str) -> dict:
    """name -> function(view) -> chosen index, where a view holds one prompt's (sub)set of samples."""
    R = "sum" if reduce == "sum" else "mean"
    return {"best-of-N sum": lambda v: best_of_n(v["sum"]),
            "best-of-N mean": lambda v: best_of_n(v["mean"]),
            "best-of-N min step": lambda v: best_of_n(v["min step"]),
            "best-of-N last step": lambda v: best_of_n(v["last step"]),
            "majority vote": lambda v: majority_vote(v["answer"]),
            "PRM-weighted vote": lambda v: weighted_vote(v["answer"], v[R])}


def scaling_curves(samples: list[dict], Ns: list[int], subsets: int, select: dict, seed: int) -> dict:
    """Accuracy against N for every selector, plus 'oracle' (pass@N) and 'random' (pass@1).

    samples: one dict per prompt with lists over its n samples: 'correct' (0/1), 'answer', and one
    score list per key a selector reads. N < n: mean over `subsets` random subsets of size N.
    """
    rng = random.Random(f"subsets/{seed}")
    curves = {name: [] for name in select} | {"oracle (pass@N)": [], "random (pass@1)": []}
    for N in Ns:
        hits = {name: 0.0 for name in select}
        for s in samples:
            n = len(s["correct"])
            draws = [list(range(n))] if N == n else [rng.sample(range(n), N) for _ in range(subsets)]
            for idx in draws:
                view = {key: [vals[i] for i in idx] for key, vals in s.items()}
                for name, choose in select.items():
                    hits[name] += view["correct"][choose(view)] / len(draws)
        for name in select:
            curves[name].append(hits[name] / len(samples))
        curves["oracle (pass@N)"].append(sum(pass_at_k(len(s["correct"]), int(sum(s["correct"])), N) for s in samples) / len(samples))
        curves["random (pass@1)"].append(sum(pass_at_k(len(s["correct"]), int(sum(s["correct"])), 1) for s in samples) / len(samples))
    return curves


# ----------------------------------------------------------------------------- 6) PRM quality

def step_auc(step_scores: list[torch.Tensor], first_wrong: list) -> dict:
    """AUC of step scores separating correct steps (before the first wrong one) from first wrong steps."""
    xs, ys = [], []
    for s, j in zip(step_scores, first_wrong):
        for x, y in zip(s.tolist(), step_labels(len(s), j)):
            if y is not None:
                xs.append(x)
                ys.append(y)
    return {"auc": prm_lib.auc(xs, ys), "steps": len(xs), "wrong_steps": ys.count(0)}


# ----------------------------------------------------------------------------- 7) error localisation

def lowest_step(s: torch.Tensor) -> int:
    """Index of the lowest step score; ties: the earliest step."""
    values = s.tolist()
    return values.index(min(values))


def histogram(xs: list[int]) -> list[int]:
    return [xs.count(i) for i in range(max(xs) + 1)] if xs else []


def localisation(step_scores: list[torch.Tensor], first_wrong: list[int]) -> dict:
    """How often the lowest-scoring step is the first wrong one, next to two baselines.

    chance: mean of 1 / #steps (a uniformly random step); best_fixed_step: always naming the most
    frequent first-wrong index of the set (a positional guess that knows the set's statistics: a
    PRM that only learned where errors usually are scores this much). Histograms (count per step
    index) of the first wrong step and of the PRM's lowest step show such a bias.
    """
    if not first_wrong:
        return {"accuracy": float("nan"), "chance": float("nan"), "best_fixed_step": float("nan"), "n": 0}
    lowest = [lowest_step(s) for s in step_scores]
    hits = [low == j for low, j in zip(lowest, first_wrong)]
    return {"accuracy": sum(hits) / len(hits), "chance": sum(1 / len(s) for s in step_scores) / len(hits),
            "best_fixed_step": max(histogram(first_wrong)) / len(hits), "n": len(hits),
            "first_wrong_hist": histogram(first_wrong), "lowest_hist": histogram(lowest)}


# ----------------------------------------------------------------------------- 8) all-fail groups (early signal)

def all_fail_stats(correct: list[list[int]], R: list[list[float]], k: int, progress=None) -> dict:
    """Groups of k consecutive samples per prompt; in groups where all fail, what R_phi still says.

    correct, R (and progress: correct steps before the first wrong one) are lists over prompts of
    lists over samples. Concordance: over pairs of failures in one all-fail group with different
    progress, the fraction R_phi orders like progress (R ties count 1/2).
    """
    groups = [(c[g:g + k], r[g:g + k], None if progress is None else progress[p][g:g + k])
              for p, (c, r) in enumerate(zip(correct, R)) for g in range(0, len(c) - k + 1, k)]
    fail = [grp for grp in groups if not any(grp[0])]
    mixed = [grp for grp in groups if any(grp[0]) and not all(grp[0])]
    std = lambda xs: torch.tensor(xs, dtype=torch.float64).std(unbiased=False).item()
    out = {"k": k, "groups": len(groups), "all_fail_fraction": len(fail) / max(1, len(groups)),
           "R_std_all_fail": sum(std(r) for _, r, _ in fail) / len(fail) if fail else float("nan"),
           "R_std_mixed": sum(std(r) for _, r, _ in mixed) / len(mixed) if mixed else float("nan")}
    if progress is not None:
        agree, pairs = 0.0, 0
        for _, r, prog in fail:
            for i in range(k):
                for j in range(k):
                    if prog[i] > prog[j]:
                        pairs += 1
                        agree += 1.0 if r[i] > r[j] else (0.5 if r[i] == r[j] else 0.0)
        out |= {"closer_failure_concordance": agree / pairs if pairs else float("nan"), "pairs": pairs}
    return out


# ----------------------------------------------------------------------------- 9) test-time training

@torch.no_grad()
def test_time_training(before, after, prm, tok, task, examples, a: Args, micro_batch: int) -> dict:
    """Greedy pass@1 and mean R_phi of the greedy traces on held-out prompts, before and after.

    The training itself is PRM-only RL on the held-out prompts with the PRM frozen, a train.py run:
    no outcome reward and no expert trajectory of those prompts may enter it (the PRM update of
    Eqn 5 needs both, so it is skipped: the PRM learned on the training prompts is the reward).
    """
    out = {}
    for name, policy in (("before", before), ("after", after)):
        b = sample(policy, tok, task, examples, 1, a.max_new_tokens, 0.0, a.seed, a.gen_chunk)
        out[f"greedy_pass@1_{name}"] = sum(task.reward(c, ex) for c, ex in zip(b.completions, examples)) / len(examples)
        if prm is not None:
            out[f"R_greedy_{name}"] = prm_lib.trajectory_reward(score(prm, b, micro_batch), b.completion_mask).mean().item()
    out["gain"] = out["greedy_pass@1_after"] - out["greedy_pass@1_before"]
    return out


# ----------------------------------------------------------------------------- 10) which traces the heatmaps show

def traces(sc: Scored, labels: list[str], correct: list, rows=None) -> list[report.Trace]:
    """Trace records of some rows of a scored set (all rows by default)."""
    out = []
    for i in range(len(sc.batch)) if rows is None else rows:
        cols = sc.batch.completion_mask[i]                                    # (T,)
        out.append(report.Trace(sc.prompts[i], sc.pieces[i], sc.r[i, cols].tolist(), sc.step_id[i, cols].tolist(), labels[i],
                         bool(correct[i]), sc.first_wrong[i]))
    return out


def rollout_pairs(rolls: list[report.Trace], n: int, expert: dict, limit: int) -> list[tuple]:
    """(correct, wrong) pairs of one prompt's samples: its first wrong sample next to its first sample
    that is right in every step, else next to the expert trace; pairs of two samples come first."""
    pairs = []
    for p in range(0, len(rolls), n):
        group = rolls[p:p + n]
        wrong = [t for t in group if not t.correct]
        right = [t for t in group if t.correct and t.first_wrong is None]
        if wrong:
            pairs.append((right[0] if right else expert.get(wrong[0].prompt), wrong[0]))
    return sorted(pairs, key=lambda pair: pair[0] is None or pair[0].label.startswith("expert"))[:limit]


# ----------------------------------------------------------------------------- 11) the whole evaluation

LM_REWARD_MODELS = {"prime": "PRIME's implicit PRM (a causal LM read against pi_ref)",
                    "tango": "RL Tango's verifier (a causal LM that says '+' or '-')"}


def main(a: Args) -> dict:
    hf_logging.set_verbosity_error()
    t_start = time.time()
    # 0) what to evaluate: the run's newest checkpoint unless --policy / --prm say otherwise, with the run's settings
    settings = run_settings(a.run)
    ckpt = checkpoints(a.run)[-1] if a.run and checkpoints(a.run) else ""
    if a.run and not ckpt and not a.policy:
        raise SystemExit(f"--run {a.run}: no checkpoint ckpt-NNNNNN in it")
    if not (a.out or a.run):
        raise SystemExit("--out is needed without --run")
    policy_path = model_path(a.policy, "policy") if a.policy else os.path.join(ckpt, "policy")
    prm_path = (model_path(a.prm, "prm") if a.prm else
                os.path.join(ckpt, "prm") if ckpt and os.path.isdir(os.path.join(ckpt, "prm")) else None)
    method = settings.get("method", "repirl")
    if prm_path and not a.prm and method in LM_REWARD_MODELS:
        print(f"--run {a.run}: trained with --method {method}, whose prm folder is {LM_REWARD_MODELS[method]}, "
              f"not a token-reward PRM; the PRM parts are skipped (--prm scores with one)")
        prm_path = None
    a.task = a.task or settings.get("task", "arithmetic")
    a.k = a.k or settings.get("k", 4)
    a.temperature = a.temperature if a.temperature >= 0 else settings.get("temperature", 1.0)
    a.max_new_tokens = a.max_new_tokens or settings.get("max_new_tokens", 40)
    reduce = settings.get("reduce", "sum")                   # how the run made R_phi: the weighted vote uses the same
    Ns = sorted({int(x) for x in a.n.split(",")})
    n = Ns[-1]
    task = tasks.get_task(a.task, **(settings | json.loads(a.task_kwargs)))
    synthetic = task.name == "arithmetic"
    examples = task.test[:a.prompts]
    P = len(examples)
    by_prompt = lambda xs: [xs[p * n:(p + 1) * n] for p in range(P)]         # (P*n,) -> P x (n,)
    policy, tok = load_policy(policy_path)
    prm = prm_lib.load_prm(prm_path).eval() if prm_path else None
    res = {"policy": policy_path, "prm": prm_path, "task": a.task, "prompts": P, "n_samples": n,
           "subsets": a.subsets, "temperature": a.temperature, "k": a.k, "reduce": reduce}
    print(f"policy {policy_path} | PRM {prm_path} | {a.task}: {P} prompts x {n} samples at T={a.temperature:g}")

    # 1) greedy pass@1; n samples per prompt; pass@k from them
    greedy = sample(policy, tok, task, examples, 1, a.max_new_tokens, 0.0, a.seed, a.gen_chunk)
    res["greedy_pass@1"] = sum(task.reward(c, ex) for c, ex in zip(greedy.completions, examples)) / P
    rolls = sample(policy, tok, task, examples, n, a.max_new_tokens, a.temperature, a.seed + 1, a.gen_chunk)
    prompt_of = [examples[i // n] for i in range(len(rolls))]                                    # (P*n,)
    correct = [task.reward(c, ex) for c, ex in zip(rolls.completions, prompt_of)]                 # (P*n,)
    answers = [answer_of(task, c) for c in rolls.completions]                                    # (P*n,)
    res["pass@k"] = {k: sum(pass_at_k(n, int(sum(c)), k) for c in by_prompt(correct)) / P for k in Ns}
    samples = [{"correct": c, "answer": ans} for c, ans in zip(by_prompt(correct), by_prompt(answers))]
    print(f"  sampled {len(rolls)} rollouts, {time.time() - t_start:.0f}s")
    heatmaps = {}
    if prm is None:                                          # no PRM: majority vote is the only selector
        res["scaling"] = {"N": Ns} | scaling_curves(samples, Ns, a.subsets, {"majority vote": lambda v: majority_vote(v["answer"])}, a.seed)
    else:
        # 2) score the rollouts: token rewards, steps, first wrong steps (synthetic task), trajectory scores
        first_wrong = ([first_wrong_step(c, *parse_problem(ex.prompt)) for c, ex in zip(rolls.completions, prompt_of)]
                       if synthetic else [None] * len(rolls))
        ro = score_set(prm, tok, rolls, [ex.prompt for ex in prompt_of], first_wrong, a.micro_batch)
        agg = {key: v.tolist() for key, v in aggregate(ro.r, rolls, ro.step_id).items()}       # key -> (P*n,)

        # 3) test-time scaling curves
        samples = [s | {key: v[p * n:(p + 1) * n] for key, v in agg.items()} for p, s in enumerate(samples)]
        res["scaling"] = {"N": Ns} | scaling_curves(samples, Ns, a.subsets, selectors(reduce), a.seed)
        print(f"  scaling curves, {time.time() - t_start:.0f}s")

        # 4) traces with a known first wrong step: expert (none), injected, perturbed
        sets = {name: score_set(prm, tok, batch, prompts, fw, a.micro_batch)
                for name, (batch, prompts, fw) in known_error_sets(tok, task, examples, a.seed).items()}

        # 5) PRM quality: AUCs
        res["auc"] = {"n_rollouts": len(rolls), "trajectory": {key: prm_lib.auc(v, correct) for key, v in agg.items()},
                      "step": {}}
        if synthetic:
            res["auc"]["step"]["rollouts"] = step_auc(ro.steps, first_wrong)
        if "expert" in sets and "injected" in sets:
            res["auc"]["step"]["expert + injected"] = step_auc(sets["expert"].steps + sets["injected"].steps,
                                                               sets["expert"].first_wrong + sets["injected"].first_wrong)

        # 6) error localisation
        res["localisation"] = {name: localisation(sets[name].steps, sets[name].first_wrong)
                               for name in ("injected", "perturbed") if name in sets}
        if synthetic:
            own = [i for i in range(len(rolls)) if not correct[i] and first_wrong[i] is not None]
            res["localisation"]["rollouts"] = localisation([ro.steps[i] for i in own], [first_wrong[i] for i in own])

        # 7) all-fail groups; progress = correct steps before the first wrong one (all of them if none is wrong)
        progress = by_prompt([len(s) if fw is None else fw for fw, s in zip(first_wrong, ro.steps)]) if synthetic else None
        res["all_fail"] = all_fail_stats(by_prompt(correct), by_prompt(agg["sum" if reduce == "sum" else "mean"]), a.k, progress)

        # 8) heatmap pages: (correct, wrong) pairs per trace set
        expert = {t.prompt: t for t in traces(sets["expert"], ["expert solution"] * len(sets["expert"].prompts),
                                              [1] * len(sets["expert"].prompts))} if "expert" in sets else {}
        roll_traces = traces(ro, [f"sample {i % n}" for i in range(len(rolls))], correct)
        heatmaps["rollouts"] = (rollout_pairs(roll_traces, n, expert, a.heatmap_pairs),
                                ("correct sample (every step right), else the expert", "wrong sample"))
        for name, what in (("injected", "error injected"), ("perturbed", "one number perturbed")):
            if name in sets:
                sc = sets[name]
                wrong = traces(sc, [f"{what} at step {j}" for j in sc.first_wrong], [0] * len(sc.prompts))
                heatmaps[name] = ([(expert.get(t.prompt), t) for t in wrong][:a.heatmap_pairs],
                                  ("expert solution (correct)", f"{name} (wrong)"))

    # 9) test-time training gain on the held-out prompts
    if a.ttt_after:
        after, _ = load_policy(model_path(a.ttt_after, "policy"))
        res["ttt"] = {"after": model_path(a.ttt_after, "policy")} | test_time_training(policy, after, prm, tok, task, examples, a, a.micro_batch)
    res["seconds"] = round(time.time() - t_start, 1)

    # 10) write eval.json, the heatmap pages, the report
    out_dir = a.out or a.run
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "eval.json"), "w") as f:
        json.dump(res, f, indent=1)
    for name, (pairs, headers) in heatmaps.items():
        for suffix, gamma in (("", 0.0), ("-discounted", a.gamma)):
            with open(os.path.join(out_dir, f"heatmap-{name}{suffix}.html"), "w") as f:
                f.write(report.page(f"Token rewards: {name}" + (f", discounted (gamma = {gamma:g})" if gamma else ""),
                             report.heatmap_table(pairs, headers, gamma)))
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(report.report_html(res, heatmaps, os.path.join(a.run, "metrics.jsonl") if a.run else ""))
    print_summary(res)
    print(f"wrote {out_dir}/eval.json, report.html, heatmap-*.html in {res['seconds']:.0f}s")
    return res


def print_summary(res: dict):
    """The compact console table."""
    print(f"\ngreedy pass@1 {res['greedy_pass@1']:.3f} | " + " ".join(f"pass@{k} {v:.3f}" for k, v in res["pass@k"].items()))
    sc = res["scaling"]
    print(f"{'selector':<22}" + "".join(f"{'N=' + str(n):>8}" for n in sc["N"]))
    for name, ys in sc.items():
        if name != "N":
            print(f"{name:<22}" + "".join(f"{y:8.3f}" for y in ys))
    if "auc" in res:
        print("AUC trajectory: " + " ".join(f"{k} {v:.3f}" for k, v in res["auc"]["trajectory"].items())
              + " | step: " + " ".join(f"{k} {v['auc']:.3f}" for k, v in res["auc"]["step"].items()))
    for name, v in res.get("localisation", {}).items():
        print(f"localisation {name:<10} accuracy {v['accuracy']:.3f} | chance {v['chance']:.3f} | best fixed step "
              f"{v['best_fixed_step']:.3f} | n={v['n']} | first wrong per step {v.get('first_wrong_hist')} "
              f"| PRM lowest per step {v.get('lowest_hist')}")
    if "all_fail" in res:
        print("all-fail groups: " + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in res["all_fail"].items()))
    if res.get("ttt"):
        print("test-time training: " + " ".join(f"{k} {v:.3f}" for k, v in res["ttt"].items() if isinstance(v, float)))


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
