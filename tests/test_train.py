"""train.py end to end in subprocesses, on tiny budgets: every method changes what it should."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import batching
import distributed
import prm as prm_lib
import rollout

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


def logged_iterations(stdout: str) -> list[int]:
    """The iterations a run of train.py printed its line for ("it    3 | accuracy ...")."""
    return [int(n) for n in re.findall(r"^it +(\d+) \|", stdout, re.M)]


def assert_resumed(stdout: str, out, iteration: int, iterations: int):
    """The run said it resumed from ckpt-<iteration> of `out`, and ran the remaining iterations only (a
    resume that ignored the checkpoint would start again from 1, and end on the same metrics and weights)."""
    assert f"resumed from {out / f'ckpt-{iteration:06d}'}" in stdout, stdout[-2000:]
    assert logged_iterations(stdout) == list(range(iteration + 1, iterations + 1)), stdout[-2000:]


def untimed_metrics(out) -> list[dict]:
    """A run's metrics.jsonl without its timing fields (a resumed run must reproduce everything else)."""
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/") and "per_s" not in k}
            for line in open(out / "metrics.jsonl")]


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


@pytest.mark.parametrize("method, changes_prm", [("rloo", None), ("bc", None), ("kto", None), ("prm-only", True),
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
    out, proc = run(tmp_path, cache, "--estimator", "ppo", "--iterations", "3")  # rePIRL: process rewards, so V moves
    assert logged_iterations(proc.stdout) == [1, 2, 3] and "resumed from" not in proc.stdout
    warm, ckpt = warm_start(cache), out / "ckpt-000003"
    assert not torch.equal(params(AutoModelForCausalLM.from_pretrained(warm)),
                           params(AutoModelForCausalLM.from_pretrained(ckpt / "policy")))
    for part in ("prm", "critic"):
        assert not torch.equal(params(prm_lib.load_prm(str(warm))), params(prm_lib.load_prm(str(ckpt / part)))), part
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    shutil.rmtree(cut / "ckpt-000003")
    _, proc = run(tmp_path, cache, "--estimator", "ppo", "--iterations", "3", "--resume", "true", out=cut)
    assert_resumed(proc.stdout, cut, 2, 3)
    for part, load in (("policy", AutoModelForCausalLM.from_pretrained), ("prm", lambda p: prm_lib.load_prm(str(p))),
                       ("critic", lambda p: prm_lib.load_prm(str(p)))):
        assert torch.equal(params(load(ckpt / part)), params(load(cut / "ckpt-000003" / part))), part
    assert untimed_metrics(cut) == untimed_metrics(out)


def test_tango_trains_its_verifier_and_resumes_exactly(tmp_path, cache):
    """RL Tango: the verifier (a causal LM, the policy's copy) trains beside the policy and is saved as the run's
    prm with its optimiser; the verdicts it samples are seeded by the iteration, so a run resumed from iteration 2
    ends exactly where the uninterrupted run does."""
    out, proc = run(tmp_path, cache, "--method", "tango", "--iterations", "3")
    warm, ckpt = warm_start(cache), out / "ckpt-000003"
    for part in ("policy", "prm"):
        assert not torch.equal(params(AutoModelForCausalLM.from_pretrained(warm)),
                               params(AutoModelForCausalLM.from_pretrained(ckpt / part))), part
    records = [json.loads(line) for line in open(out / "metrics.jsonl")][:3]
    assert all(0 <= r["irl/verifier_reward"] <= 1 and r["policy/adv_process_abs"] > 0 for r in records)
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    shutil.rmtree(cut / "ckpt-000003")
    _, proc = run(tmp_path, cache, "--method", "tango", "--iterations", "3", "--resume", "true", out=cut)
    assert_resumed(proc.stdout, cut, 2, 3)
    for part in ("policy", "prm"):
        assert torch.equal(params(AutoModelForCausalLM.from_pretrained(ckpt / part)),
                           params(AutoModelForCausalLM.from_pretrained(cut / "ckpt-000003" / part))), part
    assert untimed_metrics(cut) == untimed_metrics(out)


def test_non_finite_gradient_is_skipped_and_overflow_stops():
    model = torch.nn.Linear(2, 1)
    before = params(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e21)
    model.weight.grad = torch.full_like(model.weight, float("nan"))
    model.bias.grad = torch.zeros_like(model.bias)
    assert math.isnan(distributed.apply_gradients(model, opt, max_norm=1e40))
    assert torch.equal(params(model), before)                               # nothing applied
    model.weight.grad = torch.full_like(model.weight, 1e18)                 # finite, but the step overflows
    with pytest.raises(SystemExit, match="non-finite"):
        distributed.apply_gradients(model, opt, max_norm=1e40)


@pytest.mark.parametrize("flags, message", [(["--k", "1"], "--k 1"), (["--alpha", "-1"], "--alpha -1"),
                                            (["--method", "nope"], "--method 'nope'"),
                                            (["--task", "math500", "--test-data", "x.jsonl"], "training split")])
def test_bad_flags_name_the_flag(tmp_path, cache, flags, message):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *TINY_RUN, "--out", str(tmp_path / "r"),
           "--cache", str(cache), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


# ------------------------------------------------------------------------ memory: micro-batches, checkpointing, bf16

def ragged_batch(tok):
    """Rows of very different lengths, as rollouts are: prompts left-padded, completions right-padded."""
    prompts = ["What is 1+2?\n", "Hi\n", "What is 12+30-7?\n", "x\n", "What is 3+4?\n"]
    answers = ["1+2=3. Answer: 3", "ok", "12+30=42. 42-7=35. Answer: 35", "y", "7"]
    return rollout.encode(tok, prompts, answers)


def test_token_budget_micro_batches_cover_every_row_once_within_budget(tiny_path):
    import train
    batch = ragged_batch(AutoTokenizer.from_pretrained(tiny_path))
    args = train.Args(micro_batch_tokens=80, micro_batch=3)
    parts = batching.micro_batches(batch, args)
    assert sorted(torch.cat([rows for rows, _, _ in parts]).tolist()) == list(range(len(batch)))
    assert len(parts) > 1
    for rows, cols, part in parts:
        n, t = part.ids.shape
        assert n <= 3 and (n * t <= 80 or n == 1)                            # a longer row goes alone
        assert torch.equal(part.ids, batch.ids[rows, cols])
        assert torch.equal(part.attention_mask, batch.attention_mask[rows, cols])
        assert part.attention_mask[:, 0].any() and part.attention_mask[:, -1].any()   # all-pad columns trimmed
    lengths = [batch.attention_mask[rows].sum(1) for rows, _, _ in parts]   # real tokens of each row
    assert all(a.max() <= b.min() for a, b in zip(lengths, lengths[1:]))    # sorted by length: short rows together


def test_token_budget_micro_batches_give_the_whole_batch_logprobs(tiny_path):
    import train
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    batch = ragged_batch(tok)
    whole = rollout.token_logprobs(model, batch.ids, batch.attention_mask)   # (N, T) one pass
    parts = batching.sequence_logprobs(model, batch, train.Args(micro_batch_tokens=60, temperature=1.0))  # (N, T)
    m = batch.completion_mask
    torch.testing.assert_close(parts[m], whole[m], atol=1e-5, rtol=1e-5)


def test_single_on_policy_step_without_the_old_logprob_pass_takes_the_same_step(tiny_path):
    """needs_old_logprobs False: the update's own detached log-probs stand in for log pi_old, and the
    step equals the one taken with a separate no-grad pass. Only several PPO steps per batch need it
    (the rewards read the sampler's log-probs)."""
    import train
    tok = AutoTokenizer.from_pretrained(tiny_path)
    batch = ragged_batch(tok)
    args = train.Args(method="rloo", micro_batch_tokens=60, ent_coef=0.01)
    assert not any(train.needs_old_logprobs(train.Args(method=m, entropy=e, estimator=est)) for m in train.CHOICES["method"]
                   for e in ("bonus", "return") for est in ("rloo", "ppo"))
    assert train.needs_old_logprobs(train.Args(ppo_epochs=2)) and train.needs_old_logprobs(train.Args(minibatches=2))
    adv = torch.randn(batch.ids.shape) * batch.completion_mask                # (N, T)
    params = []
    for separate in (True, False):
        model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        logp_old = batching.sequence_logprobs(model, batch, args) if separate else None
        train.policy_update(model, opt, batch, logp_old, adv, None, args)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(params[0], params[1], atol=1e-6, rtol=0)
    assert not torch.equal(params[0], torch.cat([p.detach().flatten() for p in
                                                 AutoModelForCausalLM.from_pretrained(tiny_path).parameters()]))


def test_sharded_micro_batches_halve_until_every_rank_has_the_same_count(tiny_path, monkeypatch):
    """FSDP: a rank needing fewer micro-batches than another splits its largest until the counts match."""
    import train
    batch = ragged_batch(AutoTokenizer.from_pretrained(tiny_path))
    args = train.Args(micro_batch_tokens=10_000)
    assert len(batching.micro_batches(batch, args)) == 1
    monkeypatch.setattr(batching, "sharded", lambda args: True)
    monkeypatch.setattr(batching, "all_max", lambda n: 4)                       # another rank needs 4
    parts = batching.micro_batches(batch, args)
    assert len(parts) == 4 and all(len(rows) for rows, _, _ in parts)
    assert sorted(torch.cat([rows for rows, _, _ in parts]).tolist()) == list(range(len(batch)))


def test_grad_checkpoint_recomputes_layers_with_the_same_gradients_and_no_dropout(tiny_path):
    """--grad-checkpoint: a layer's forward runs again in the backward pass, the gradients are those of the
    plain model, and attention dropout (set high here) stays off; generation keeps its KV cache."""
    import train
    tok = AutoTokenizer.from_pretrained(tiny_path)
    batch = ragged_batch(tok)
    grads, calls, greedy = [], [], []
    for checkpointed in (False, True):
        model = distributed.prepare(AutoModelForCausalLM.from_pretrained(tiny_path, attention_dropout=0.5),
                              train.Args(grad_checkpoint=checkpointed))
        runs = []
        model.model.layers[0].mlp.register_forward_pre_hook(lambda *_: runs.append(1))  # a recompute stops early
        logp = rollout.token_logprobs(model, batch.ids, batch.attention_mask)
        (-(logp * batch.completion_mask).sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        calls.append(len(runs))
        greedy.append(rollout.generate(model, tok, ["What is 1+2?\n"], 1, 10, 0.0).ids)
    assert calls == [1, 2]                                                   # recomputed once in the backward
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    assert torch.equal(greedy[0], greedy[1])


def test_bf16_autocasts_forward_passes_and_keeps_float32_weights_and_logprobs(tiny_path):
    import train
    batch = ragged_batch(AutoTokenizer.from_pretrained(tiny_path))
    plain = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    bf16 = distributed.prepare(AutoModelForCausalLM.from_pretrained(tiny_path), train.Args(bf16=True))
    assert bf16(input_ids=batch.ids[:1]).logits.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    logp = rollout.token_logprobs(bf16, batch.ids, batch.attention_mask)
    ref = rollout.token_logprobs(plain, batch.ids, batch.attention_mask)
    assert logp.dtype == torch.float32 and not torch.equal(logp, ref)
    m = batch.completion_mask
    torch.testing.assert_close(logp[m], ref[m], atol=0.1, rtol=0.05)         # bfloat16 rounding, nothing more
