"""Scale-out guarantees: 2 processes take the step 1 process takes (the same gradients, the same weights),
with or without FSDP; checkpoints load either way; a killed or pre-empted run resumes exactly."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

import prm as prm_lib
from test_train import assert_resumed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--bc-steps", "3", "--prompts", "4", "--k", "2", "--n-test", "8", "--max-new-tokens", "12",
         "--gen-chunk", "2", "--lr", "1e-3", "--prm-lr", "1e-3"]
GRAD_RTOL = 1e-4
"""Gradient norms of 2 processes and of 1 agree to this relative tolerance (README, "Many processes"): a
uniform scale error (gradients averaged instead of summed) moves them by 50%, and AdamW's step hides it."""
WEIGHT_OFF = 1e-4
"""At most this share of the weights may differ by more than 1e-5 after AdamW steps: its first steps move every
weight by about lr whatever the size of its gradient, so an entry near 0 that rounds to the other sign on one
side moves that weight by up to 2 lr (measured: 12 of 801k policy weights, 18 of the PRM's). A wrong gradient
moves most weights; a uniformly wrong scale, which AdamW hides, is caught by the gradient norms."""
# PYTHONFAULTHANDLER: a rank that aborts (SIGABRT, SIGSEGV) prints every thread's Python stack into stderr,
# which the failing assertion shows
ENV = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONFAULTHANDLER": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(tmp_path, out, *extra, nproc=1, wait=True):
    cmd = [os.path.join(ROOT, "train.py"), *SMALL, "--out", str(out), "--cache", str(tmp_path / "cache"), *extra]
    if nproc > 1:
        cmd = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *cmd]
    proc = subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-10000:]            # the rank's error sits above torchrun's report
    return stdout


def weights(ckpt):
    """Policy, PRM and (with --estimator ppo) critic weights of a checkpoint, by name."""
    models = {"policy": AutoModelForCausalLM.from_pretrained(ckpt / "policy"), "prm": prm_lib.load_prm(str(ckpt / "prm"))}
    if (ckpt / "critic").exists():
        models["critic"] = prm_lib.load_prm(str(ckpt / "critic"))
    return {f"{m}.{n}": p for m, model in models.items() for n, p in model.named_parameters()}


def records(out):
    """metrics.jsonl without wall-clock fields."""
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "rollout/tokens_per_s"} for r in rows]


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    """1 process, 3 iterations, a checkpoint after each: what the runs on 2 processes must reproduce. Its
    folder holds the run (`run/`) and the warm start (`cache/`) the other runs reuse."""
    root = tmp_path_factory.mktemp("one")
    train(root, root / "run", "--iterations", "3", "--save-every", "1", "--keep", "3")
    return root


def copy_until(run, to, iteration: int):
    """A copy of a run folder as it was after `iteration` (later checkpoints removed; --resume trims the logs)."""
    shutil.copytree(run, to)
    for ckpt in to.glob("ckpt-*"):
        if int(ckpt.name.split("-")[1]) > iteration:
            shutil.rmtree(ckpt)


def assert_same_gradients(one, run, iterations: int, grad_norms=("policy/grad_norm", "irl/grad_norm")):
    """Every iteration of `run` took the gradients the 1-process run `one` took: the same norms before
    clipping (GRAD_RTOL), and the same rollouts and Eqn 5 statistics (the losses of the updates are logged
    from rank 0's rows alone)."""
    rows = [(a, b) for a, b in zip(records(one), records(run), strict=True) if "iteration" in a]
    assert [a["iteration"] for a, _ in rows] == [b["iteration"] for _, b in rows] == list(range(1, iterations + 1))
    for a, b in rows:
        for key in grad_norms:
            assert 0 < a[key] and abs(a[key] - b[key]) <= GRAD_RTOL * a[key], (a["iteration"], key, a[key], b[key])
        for key in ("rollout/accuracy", "irl/loss", "irl/ess"):
            assert abs(a[key] - b[key]) < 1e-4 * max(1.0, abs(a[key])), key


def assert_same_steps(one, run):
    """`run` ends where the 1-process run does: policy and PRM weights, and the gradients of every iteration."""
    expected, got = weights(one / "run" / "ckpt-000003"), weights(run / "ckpt-000003")
    warm = next((one / "cache").iterdir())
    start = {f"policy.{n}": p for n, p in AutoModelForCausalLM.from_pretrained(warm).named_parameters()}
    assert any(not torch.equal(start[n], expected[n]) for n in start), "nothing trained: the comparison would be empty"
    assert got.keys() == expected.keys()
    off = sum(int((got[n] - expected[n]).abs().gt(1e-5 + 1e-4 * expected[n].abs()).sum()) for n in expected)
    total = sum(p.numel() for p in expected.values())
    assert off <= WEIGHT_OFF * total, f"{off} of {total} weights differ by more than 1e-5"
    assert_same_gradients(one / "run", run, 3)


def test_two_processes_equal_one_process_on_the_same_global_batch(one, tmp_path):
    assert "2 process(es)" in train(one, tmp_path / "two", "--iterations", "3", nproc=2)
    assert_same_steps(one, tmp_path / "two")


def test_two_processes_take_the_critics_gradient_too(one, tmp_path):
    """--estimator ppo: the critic's gradient is summed over ranks like the policy's and the PRM's. (Weights
    are compared above, not here: AdamW turns the rounding of gradient entries near 0 into steps of up to
    lr, and after 3 iterations of this setting one PRM weight differed by 3.4e-5.)"""
    ppo = ["--iterations", "2", "--estimator", "ppo", "--critic-lr", "1e-3"]
    train(one, tmp_path / "one", *ppo)
    train(one, tmp_path / "two", *ppo, nproc=2)
    assert_same_gradients(tmp_path / "one", tmp_path / "two", 2,
                          ("policy/grad_norm", "irl/grad_norm", "critic/grad_norm"))


def test_fsdp_takes_the_same_steps_and_its_checkpoints_load_without_it(one, tmp_path):
    """--fsdp on 2 processes resumes the 1-process run's (unsharded) first checkpoint and trains iterations
    2 and 3, with --grad-checkpoint and a budget of 100 tokens (two expert trajectories of 46 to 51
    columns fit in one micro-batch on one rank and not on the other: 4 of the 15 passes even out their
    counts); then 1 process without FSDP resumes the FSDP run's second checkpoint. Both end where the
    1-process run did: full weights and optimiser states load either way."""
    fsdp, back = tmp_path / "fsdp", tmp_path / "back"
    copy_until(one / "run", fsdp, 1)
    train(one, fsdp, "--iterations", "3", "--save-every", "1", "--keep", "3", "--resume", "true", "--fsdp", "true",
          "--grad-checkpoint", "true", "--micro-batch-tokens", "100", nproc=2)
    assert_same_steps(one, fsdp)
    copy_until(fsdp, back, 2)
    train(one, back, "--iterations", "3", "--resume", "true")
    assert_same_steps(one, back)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """1 process, 5 iterations, a checkpoint after each: what an interrupted and resumed run must end on. Its
    folder holds the run (`run/`) and the warm start (`cache/`) the interrupted runs reuse."""
    root = tmp_path_factory.mktemp("full")
    train(root, root / "run", "--iterations", "5", "--save-every", "1")
    return root


def newest_checkpoint(out) -> int:
    return max(int(c.name.split("-")[1]) for c in out.glob("ckpt-*") if not c.name.endswith(".tmp"))


def assert_same_run(full, cut):
    """The resumed run `cut` logged what the uninterrupted run did and ended on the same weights, bit for bit."""
    assert records(cut) == records(full / "run")
    expected, got = weights(full / "run" / "ckpt-000005"), weights(cut / "ckpt-000005")
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_sigkilled_run_resumes_to_the_same_metrics_and_weights(full, tmp_path):
    cut = tmp_path / "cut"
    proc = train(full, cut, "--iterations", "5", "--save-every", "1", wait=False)
    deadline = time.time() + 300
    while not (cut / "ckpt-000002").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its second checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "ckpt-000005").exists(), "killed too late to test anything"
    (cut / "ckpt-000004.tmp").mkdir(exist_ok=True)                       # a torn write must never be picked up
    last = newest_checkpoint(cut)
    stdout = train(full, cut, "--iterations", "5", "--save-every", "1", "--resume", "true")
    assert_resumed(stdout, cut, last, 5)
    assert_same_run(full, cut)


def test_sigterm_checkpoints_the_iteration_and_exits_then_resumes_exactly(full, tmp_path):
    """SIGTERM (a scheduler's pre-emption) during an iteration: the iteration finishes, its checkpoint is
    written (--save-every 10 writes none before), the run exits with 143 saying so; --resume runs the rest."""
    cut = tmp_path / "cut"
    proc = train(full, cut, "--iterations", "5", "--save-every", "10", wait=False)
    deadline = time.time() + 300
    while not ((cut / "metrics.jsonl").exists() and (cut / "metrics.jsonl").read_text().count("\n") >= 1):
        assert proc.poll() is None and time.time() < deadline, "run ended before its first iteration"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    saved = int(re.search(r"SIGTERM: saved iteration (\d+); continue with --resume", stdout).group(1))
    assert 1 <= saved < 5, "signalled too late to test anything"
    assert [c.name for c in cut.glob("ckpt-*")] == [f"ckpt-{saved:06d}"]
    assert len(records(cut)) == saved                                   # one record per iteration, no summary
    stdout = train(full, cut, "--iterations", "5", "--save-every", "10", "--resume", "true")
    assert_resumed(stdout, cut, saved, 5)
    assert_same_run(full, cut)
