"""Every flag of train.py's `Args` is set to a value other than its default in at least one run of
train.py here, so a flag that crashes the loop (as `--keep-warm-optimizer true` did, before its first
iteration) fails a test. The runs are grouped: each one sets many flags, and checks what they should do.

Run: OMP_NUM_THREADS=1 python -m pytest -q tests/test_flags.py   (CPU, no downloads, ~1.5 min; train.py in
subprocesses on tiny budgets, TINY_RUN of test_train.py)
"""
import json
import os
from dataclasses import fields

import pytest
import torch
from transformers import AutoModelForCausalLM

import cli
import loop_data
import prm as prm_lib
import tasks
import train
import warmstart
from test_train import TINY_RUN, assert_resumed, logged_iterations, params, run

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
EXPERT_TASK = ["--n-terms", "2", "--lo", "2", "--hi", "8", "--n-train", "50", "--seed", "1"]


def policy_changed(start, ckpt) -> bool:
    return not torch.equal(params(AutoModelForCausalLM.from_pretrained(start)),
                           params(AutoModelForCausalLM.from_pretrained(ckpt / "policy")))


def prm_changed(start, ckpt) -> bool:
    return not torch.equal(params(prm_lib.load_prm(str(start))), params(prm_lib.load_prm(str(ckpt / "prm"))))


def records(out) -> list[dict]:
    return [r for r in map(json.loads, open(out / "metrics.jsonl")) if "iteration" in r]


def check_rloo(out, procs, start):
    """Outcome RLOO from the warm start's AdamW moments, GRPO baseline, 2 epochs of 2 minibatches, then a
    resume: no PRM, one checkpoint kept, one sample logged per iteration; the resume runs iteration 3 only."""
    assert policy_changed(start, out / "ckpt-000003") and not (out / "ckpt-000003" / "prm").exists()
    assert sorted(c.name for c in out.glob("ckpt-*")) == ["ckpt-000003"]                     # --keep 1
    assert (out / "samples.jsonl").read_text().count("\n") == 3                              # --log-samples 1
    assert logged_iterations(procs[0].stdout) == [1, 2]
    assert_resumed(procs[1].stdout, out, 2, 3)


def check_memory(out, procs, start):
    """bf16 autocast, checkpointed layers and micro-batches of a few rows, through every phase of the loop; a
    warm start from a half-careless teacher; held-out accuracy after every iteration."""
    assert policy_changed(start, out / "ckpt-000002") and prm_changed(start, out / "ckpt-000002")
    assert [r["iteration"] for r in records(out) if "eval/accuracy" in r] == [1, 2]


def check_temperature(out, procs, start):
    """Sampling at 0.7, R_phi a mean, no pseudo-expert, entropy in the return, a KL anchor: the first step's
    ratios are exactly 1 (log pi_old and log pi both at 0.7), and every policy sample is in Eqn 5."""
    first = records(out)[0]
    assert first["policy/clip_frac"] == 0 and abs(first["policy/approx_kl"]) < 1e-6, first
    assert first["irl/n_policy"] == 8                                                        # 4 prompts x k 2
    assert policy_changed(start, out / "ckpt-000002") and prm_changed(start, out / "ckpt-000002")


def check_airl(out, procs, start):
    """A plain classifier as the discriminator, GAE on a critic with its own learning rate."""
    ckpt = out / "ckpt-000002"
    assert prm_changed(start, ckpt) and (ckpt / "critic").exists()
    assert all(r["critic/grad_norm"] > 0 for r in records(out))


def check_prime(out, procs, start):
    """PRIME at beta 0.1 on groups some rollout solves, drawn from 3 times the prompts."""
    ckpt = out / "ckpt-000002"
    assert policy_changed(start, ckpt)
    assert not torch.equal(params(AutoModelForCausalLM.from_pretrained(start)),
                           params(AutoModelForCausalLM.from_pretrained(ckpt / "prm")))


def check_mcts(out, procs, start):
    """Math-Shepherd on every rollout (--mc-rollouts 0), 2 continuations a prefix, soft labels."""
    rows = records(out)
    assert sum(r["irl/mc_prefixes"] for r in rows) > 0 and prm_changed(start, out / "ckpt-000002")


def check_kto(out, procs, start):
    """KTO at beta 0.5: the policy moves, no reward model is kept, and --estimator ppo builds no critic (KTO
    takes no RLOO step); the reference point is a clamped KL estimate."""
    ckpt = out / "ckpt-000002"
    assert policy_changed(start, ckpt) and not (ckpt / "prm").exists() and not (ckpt / "critic").exists()
    assert all(r["kto/z_ref"] >= 0 and r["policy/grad_norm"] > 0 for r in records(out))


def check_tango(out, procs, start):
    """RL Tango with 3 verdict sequences a rollout: the verifier (a causal LM) and the policy both move."""
    ckpt = out / "ckpt-000002"
    assert policy_changed(start, ckpt)
    assert not torch.equal(params(AutoModelForCausalLM.from_pretrained(start)),
                           params(AutoModelForCausalLM.from_pretrained(ckpt / "prm")))
    assert all(r["irl/grad_norm"] > 0 for r in records(out))


def check_test_time(out, procs, start):
    """Test-time training: a given policy and PRM, prompts from the held-out split, the PRM scores but is
    never updated."""
    ckpt = out / "ckpt-000002"
    assert not prm_changed(start, ckpt) and policy_changed(start, ckpt)


def check_expert(out, procs, start):
    """An expert file with one bad line, skipped and reported; its trajectories train the PRM."""
    assert "skipped 1 bad records in" in procs[0].stderr and "expert.jsonl:51: not a JSON record" in procs[0].stderr
    assert prm_changed(start, out / "ckpt-000002")


def check_gsm8k(out, procs, start):
    """GSM8K-shaped local files in the plain prompt style (183 to 246 tokens: none over 300), group filtering
    and the 'both' pseudo-expert form with Eqn 5's log Z under the policy."""
    assert (out / "ckpt-000002" / "prm").exists() and "held-out greedy accuracy" in procs[0].stdout


# name: (command lines run one after the other in one folder (after TINY_RUN), check). {tiny}: the tiny
# model's folder, {expert}: an expert file of the arithmetic task of EXPERT_TASK, {fixtures}: tests/fixtures.
RUNS = {
    "rloo-warm-optimizer": ([
        ["--method", "rloo", "--keep-warm-optimizer", "true", "--estimator", "grpo", "--ppo-epochs", "2",
         "--minibatches", "2", "--clip", "0.1", "--grad-clip", "0.5", "--ent-coef", "0.01", "--gen-chunk", "2",
         "--log-samples", "1", "--keep", "1", "--max-bad-steps", "2", "--fsdp", "true"],
        ["--method", "rloo", "--keep-warm-optimizer", "true", "--estimator", "grpo", "--ppo-epochs", "2",
         "--minibatches", "2", "--clip", "0.1", "--grad-clip", "0.5", "--ent-coef", "0.01", "--gen-chunk", "2",
         "--log-samples", "1", "--keep", "1", "--max-bad-steps", "2", "--resume", "true", "--iterations", "3"],
    ], check_rloo),
    "memory": ([["--bf16", "true", "--grad-checkpoint", "true", "--micro-batch-tokens", "64", "--micro-batch", "3",
                 "--bc-stop-early", "0.5", "--eval-every", "1"]], check_memory),
    "temperature": ([["--temperature", "0.7", "--reduce", "mean", "--pseudo-expert", "off", "--entropy", "return",
                      "--kl-coef", "0.05", "--alpha", "0.5", "--prm-grad-clip", "1.0", "--estimator", "reinforce",
                      "--prm-lr", "2e-3"]],
                    check_temperature),
    "airl-ppo": ([["--method", "airl", "--airl-form", "sigmoid", "--estimator", "ppo", "--critic-lr", "1e-3",
                   "--gae-lambda", "0.9"]], check_airl),
    "prime-filtered": ([["--method", "prime", "--prime-beta", "0.1", "--filter-groups", "some-correct",
                         "--oversample", "3"]], check_prime),
    "mcts-soft": ([["--method", "mcts", "--mc-rollouts", "0", "--mc-n", "2", "--mc-soft", "true"]], check_mcts),
    "kto": ([["--method", "kto", "--kto-beta", "0.5", "--estimator", "ppo"]], check_kto),
    "tango": ([["--method", "tango", "--tango-samples", "3"]], check_tango),
    "test-time": ([["--policy", "{tiny}", "--prm", "{tiny}", "--method", "prm-only", "--train-on", "test",
                    "--freeze-prm", "true"]], check_test_time),
    "expert-file": ([["--expert", "{expert}", "--skip-bad", "true", *EXPERT_TASK, "--max-new-tokens", "20",
                      "--bc-lr", "1e-3", "--bc-batch", "16"]], check_expert),
    "gsm8k": ([["--task", "gsm8k", "--data", "{fixtures}/gsm8k_train.jsonl", "--test-data",
                "{fixtures}/gsm8k_test.jsonl", "--prompts", "2", "--filter-groups", "mixed", "--pseudo-expert", "both",
                "--partition", "policy", "--prompt-style", "plain", "--max-prompt-tokens", "300"]], check_gsm8k),
}


def fill(argv: list[str], **values) -> list[str]:
    return [a.format(**values) for a in argv]


def test_every_flag_of_args_is_set_by_some_run():
    """Each field of Args differs from its default in some run above (TINY_RUN, --out and --cache included)."""
    default = train.Args()
    changed = set()
    for commands, _ in RUNS.values():
        for argv in commands:
            args = train.parse_args(TINY_RUN + fill(argv, tiny="t", expert="e", fixtures=FIXTURES)
                                    + ["--out", "o", "--cache", "c"])
            changed |= {f.name for f in fields(train.Args) if getattr(args, f.name) != getattr(default, f.name)}
    missing = [cli.flag(f.name) for f in fields(train.Args) if f.name not in changed]
    assert not missing, f"no run of tests/test_flags.py sets {', '.join(missing)}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The warm starts of this module's runs (train.py caches them by their settings)."""
    return tmp_path_factory.mktemp("cache")


def expert_file(path) -> str:
    """The expert trajectories of the training prompts of EXPERT_TASK, and one line that is not JSON."""
    task = tasks.get_task("arithmetic", **vars(train.parse_args(EXPERT_TASK + ["--n-test", "8"])))
    lines = [json.dumps({"prompt": ex.prompt, "response": ex.solution}) for ex in task.train] + ["{not json"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("name", list(RUNS))
def test_flag_group_runs(tmp_path, cache, tiny_path, name):
    commands, check = RUNS[name]
    values = dict(tiny=tiny_path, expert=expert_file(tmp_path / "expert.jsonl"), fixtures=FIXTURES)
    procs = [run(tmp_path, cache, *fill(argv, **values))[1] for argv in commands]
    out = tmp_path / "run"
    start = tiny_path if "{tiny}" in commands[0] else warm_start_of(cache, fill(commands[0], **values))
    check(out, procs, start)


def warm_start_of(cache, argv) -> str:
    """The cached warm start a run used: the one written for its settings (warmstart.warm_start's key)."""
    args = train.parse_args(TINY_RUN + argv + ["--cache", str(cache)])
    return warmstart.warm_start_path(args, loop_data.load_task(args))
