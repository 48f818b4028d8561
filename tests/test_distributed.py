"""Scale-out guarantees: 2 processes take the step 1 process takes, with or without FSDP; checkpoints
load either way; a killed run resumes exactly."""
import json
import os
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--bc-steps", "3", "--prompts", "4", "--k", "2", "--n-test", "8", "--max-new-tokens", "12",
         "--gen-chunk", "2", "--lr", "1e-3", "--prm-lr", "1e-3"]
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
    policy = AutoModelForCausalLM.from_pretrained(ckpt / "policy")
    prm = prm_lib.load_prm(str(ckpt / "prm"))
    return {f"policy.{n}": p for n, p in policy.named_parameters()} | {f"prm.{n}": p for n, p in prm.named_parameters()}


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


def assert_same_steps(one, run):
    """`run` ends where the 1-process run does: policy and PRM weights, and the logged losses."""
    expected, got = weights(one / "run" / "ckpt-000003"), weights(run / "ckpt-000003")
    warm = next((one / "cache").iterdir())
    start = {f"policy.{n}": p for n, p in AutoModelForCausalLM.from_pretrained(warm).named_parameters()}
    assert any(not torch.equal(start[n], expected[n]) for n in start), "nothing trained: the comparison would be empty"
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)
    for a, b in zip(records(one / "run"), records(run)):
        for key in ("rollout/accuracy", "irl/loss", "irl/ess", "policy/grad_norm"):
            if key in a:
                assert abs(a[key] - b[key]) < 1e-4 * max(1.0, abs(a[key])), key


def test_two_processes_equal_one_process_on_the_same_global_batch(one, tmp_path):
    assert "2 process(es)" in train(one, tmp_path / "two", "--iterations", "3", nproc=2)
    assert_same_steps(one, tmp_path / "two")


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


def test_sigkilled_run_resumes_to_the_same_metrics_and_weights(tmp_path):
    train(tmp_path, tmp_path / "full", "--iterations", "5", "--save-every", "1")
    proc = train(tmp_path, tmp_path / "cut", "--iterations", "5", "--save-every", "1", wait=False)
    deadline = time.time() + 300
    while not (tmp_path / "cut" / "ckpt-000002").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its second checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "ckpt-000005").exists(), "killed too late to test anything"
    (tmp_path / "cut" / "ckpt-000004.tmp").mkdir(exist_ok=True)          # a torn write must never be picked up
    train(tmp_path, tmp_path / "cut", "--iterations", "5", "--save-every", "1", "--resume", "true")
    assert records(tmp_path / "cut") == records(tmp_path / "full")
    full, cut = weights(tmp_path / "full" / "ckpt-000005"), weights(tmp_path / "cut" / "ckpt-000005")
    for name in full:
        assert torch.equal(full[name], cut[name]), name
