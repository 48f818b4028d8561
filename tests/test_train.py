"""train.py end to end in subprocesses, on tiny budgets: every method changes what it should."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import prm as prm_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = ["--bc-steps", "3", "--iterations", "2", "--prompts", "4", "--k", "2", "--n-test", "8",
            "--max-new-tokens", "12", "--save-every", "1", "--lr", "1e-3", "--prm-lr", "1e-3"]
ENV = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One warm start shared by the runs of this module (train.py caches it by its settings)."""
    return tmp_path_factory.mktemp("cache")


def run(tmp_path, cache, *extra, out=None):
    out = out or tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *TINY_RUN, "--out", str(out), "--cache", str(cache), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def warm_start(cache):
    return next(p for p in cache.iterdir() if p.name.startswith("tiny-bc-"))


def test_repirl_run_changes_policy_and_prm_and_writes_metrics(tmp_path, cache):
    out, proc = run(tmp_path, cache)
    warm, ckpt = warm_start(cache), out / "ckpt-000002"
    assert not torch.equal(params(AutoModelForCausalLM.from_pretrained(warm)),
                           params(AutoModelForCausalLM.from_pretrained(ckpt / "policy")))
    assert not torch.equal(params(prm_lib.load_prm(str(warm))), params(prm_lib.load_prm(str(ckpt / "prm"))))
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["iteration"] for r in records[:2]] == [1, 2]
    for key in ("rollout/accuracy", "irl/loss", "irl/ess", "policy/loss", "policy/entropy", "policy/clip_frac",
                "rollout/tokens_per_s", "time/rollout", "time/prm", "time/policy"):
        assert key in records[0]
    assert "eval/accuracy_end" in records[-1] and "eval/prm_auc" in records[-1]
    assert (out / "samples.jsonl").read_text().count("\n") == 4
    assert "PRM AUC" in proc.stdout


@pytest.mark.parametrize("method, changes_prm", [("rloo", None), ("bc", None), ("prm-only", True),
                                                 ("airl", True), ("prime", True), ("mcts", True)])
def test_each_method_trains_what_it_should(tmp_path, cache, method, changes_prm):
    out, _ = run(tmp_path, cache, "--method", method)
    warm, ckpt = warm_start(cache), out / "ckpt-000002"
    assert not torch.equal(params(AutoModelForCausalLM.from_pretrained(warm)),
                           params(AutoModelForCausalLM.from_pretrained(ckpt / "policy")))
    assert not (ckpt / "critic").exists()                                   # only --estimator ppo has one
    if changes_prm is None:
        assert not (ckpt / "prm").exists()                                  # no reward model kept or trained
    else:
        load = (lambda p: AutoModelForCausalLM.from_pretrained(p)) if method == "prime" else (lambda p: prm_lib.load_prm(str(p)))
        assert not torch.equal(params(load(warm)), params(load(ckpt / "prm")))
    if method == "mcts":                                                    # continuations were sampled and judged
        records = [json.loads(line) for line in open(out / "metrics.jsonl")][:2]
        assert sum(r["irl/mc_prefixes"] for r in records) > 0 and all(0 <= r["irl/step_label"] <= 1 for r in records)


def test_ppo_trains_its_critic_and_resumes_exactly(tmp_path, cache):
    """--estimator ppo: the critic (a policy copy with a value head) trains beside the policy and is saved
    with its optimiser, so a run resumed from iteration 2 ends exactly where the uninterrupted run does."""
    out, _ = run(tmp_path, cache, "--estimator", "ppo", "--iterations", "3")  # rePIRL: process rewards, so V moves
    warm, ckpt = warm_start(cache), out / "ckpt-000003"
    assert not torch.equal(params(AutoModelForCausalLM.from_pretrained(warm)),
                           params(AutoModelForCausalLM.from_pretrained(ckpt / "policy")))
    for part in ("prm", "critic"):
        assert not torch.equal(params(prm_lib.load_prm(str(warm))), params(prm_lib.load_prm(str(ckpt / part)))), part
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    shutil.rmtree(cut / "ckpt-000003")
    run(tmp_path, cache, "--estimator", "ppo", "--iterations", "3", "--resume", "true", out=cut)
    for part, load in (("policy", AutoModelForCausalLM.from_pretrained), ("prm", lambda p: prm_lib.load_prm(str(p))),
                       ("critic", lambda p: prm_lib.load_prm(str(p)))):
        assert torch.equal(params(load(ckpt / part)), params(load(cut / "ckpt-000003" / part))), part
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if not k.startswith("time/") and "per_s" not in k}
                          for line in open(path)]
    assert strip(cut / "metrics.jsonl") == strip(out / "metrics.jsonl")


def test_frozen_prm_on_test_prompts_leaves_the_prm_alone(tmp_path, cache):
    """Test-time training: prompts from the held-out split, PRM scores but is never updated."""
    out, _ = run(tmp_path, cache, "--method", "prm-only", "--train-on", "test", "--freeze-prm", "true")
    warm, ckpt = warm_start(cache), out / "ckpt-000002"
    assert torch.equal(params(prm_lib.load_prm(str(warm))), params(prm_lib.load_prm(str(ckpt / "prm"))))
    assert not torch.equal(params(AutoModelForCausalLM.from_pretrained(warm)),
                           params(AutoModelForCausalLM.from_pretrained(ckpt / "policy")))


def test_real_task_path_with_filtering_runs(tmp_path, cache):
    """GSM8K-shaped local files, group filtering and the 'both' pseudo-expert form, end to end."""
    fixtures = os.path.join(ROOT, "tests", "fixtures")
    out, proc = run(tmp_path, cache, "--task", "gsm8k", "--data", os.path.join(fixtures, "gsm8k_train.jsonl"),
                    "--test-data", os.path.join(fixtures, "gsm8k_test.jsonl"), "--prompts", "2",
                    "--filter-groups", "mixed", "--pseudo-expert", "both")
    assert (out / "ckpt-000002" / "prm").exists() and "held-out greedy accuracy" in proc.stdout


def test_non_finite_gradient_is_skipped_and_overflow_stops():
    import train
    model = torch.nn.Linear(2, 1)
    before = params(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e21)
    model.weight.grad = torch.full_like(model.weight, float("nan"))
    model.bias.grad = torch.zeros_like(model.bias)
    assert math.isnan(train.apply_gradients(model, opt, max_norm=1e40))
    assert torch.equal(params(model), before)                               # nothing applied
    model.weight.grad = torch.full_like(model.weight, 1e18)                 # finite, but the step overflows
    with pytest.raises(SystemExit, match="non-finite"):
        train.apply_gradients(model, opt, max_norm=1e40)


@pytest.mark.parametrize("flags, message", [(["--k", "1"], "--k 1"), (["--alpha", "-1"], "--alpha -1"),
                                            (["--method", "nope"], "--method 'nope'"),
                                            (["--task", "math500", "--test-data", "x.jsonl"], "training split")])
def test_bad_flags_name_the_flag(tmp_path, cache, flags, message):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *TINY_RUN, "--out", str(tmp_path / "r"),
           "--cache", str(cache), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
