"""Bad input is refused before the first iteration with one message that says where, what was found
and what was expected; --skip-bad skips bad records with a count; the same command gives the same
metrics.

Run: python -m pytest -q tests/test_hardening.py   (CPU, no downloads; the last three tests run train.py)
"""
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch

import checkpoint
import loop_data
import tasks
import tiny
import train
from test_train import ENV, ROOT, TINY_RUN, run

pytestmark = pytest.mark.usefixtures("offline")                 # no test reaches the hub


def write(path, lines: list) -> str:
    """A file of the given lines (str, or bytes for a line that is not UTF-8)."""
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return str(path)


def load_data(path: str, **kwargs) -> list:
    """The training examples a math task reads from a local .jsonl file."""
    return tasks.get_task("jsonl", data=path, test_data=path, **kwargs).train


GOOD = '{"id": 1, "question": "What is 1+1?", "answer": "2", "solution": "1+1 = \\\\boxed{2}"}'
NOT_UTF8 = b'{"question": "caf\xe9?", "answer": "2"}'


# ----------------------------------------------------------------------------- data files (--data, --test-data)

@pytest.mark.parametrize("lines, message", [
    (['{"answer": "2"}'], r"data.jsonl:1: no question; expected a non-empty 'problem', 'question' or 'prompt'"),
    (['{"question": "What is 1+1?"}'], r"data.jsonl:1: no answer; expected a non-empty 'answer'"),
    (['{"question": "What is 1+1?", "answer": {"value": 2}}'],
     r"data.jsonl:1: field 'answer' has type dict; expected str or int or float or list"),
    (['{"question": "What is 1+1?", "answer": "2", "solution": " "}'], r"data.jsonl:1: empty solution; expected"),
    ([GOOD, GOOD.replace("1+1", "1+2")], r"data.jsonl:2: id 1 again \(first at .*data.jsonl:1\); expected unique ids"),
], ids=["no-question", "no-answer", "wrong-type", "empty-solution", "duplicate-id"])
def test_bad_data_record_names_file_and_line(tmp_path, lines, message):
    """A record a math task cannot use (the file's own faults: test_bad_jsonl_file_names_file_and_line)."""
    with pytest.raises(ValueError, match=message):
        load_data(write(tmp_path / "data.jsonl", lines))


def test_bad_test_file_stops_train_before_the_first_iteration(tmp_path):
    good = write(tmp_path / "train.jsonl", [GOOD.replace('"id": 1', f'"id": {i}') for i in range(4)])
    bad = write(tmp_path / "test.jsonl", [GOOD, '{"question": "What is 1+1?", "answer": ""}'])
    for test_data, message in ((bad, r"test.jsonl:2: no answer; expected"),
                               (str(tmp_path / "gone.jsonl"), r"gone.jsonl: no such file; expected an existing")):
        with pytest.raises(SystemExit, match=message):
            loop_data.load_task(train.parse_args(["--task", "jsonl", "--data", good, "--test-data", test_data,
                                              "--prompts", "2"]))


def test_skip_bad_drops_bad_data_records_with_one_line(tmp_path, caplog):
    path = write(tmp_path / "data.jsonl", [GOOD, '{"question": "q"}', NOT_UTF8, GOOD.replace('"id": 1', '"id": 2')])
    with caplog.at_level(logging.WARNING):
        examples = load_data(path, skip_bad=True)
    assert [ex.id for ex in examples] == ["train/1", "train/2"]
    assert examples[1].where == f"{path}:4"
    assert f"skipped 2 bad records in {path} (first: {path}:2: no answer;" in caplog.text


# ----------------------------------------------------------------------------- expert files (--expert)

def expert_line(prompt: str = "What is 17+18-30?", response: str = "17+18=35. 35-30=5. Answer: 5") -> str:
    return json.dumps({"prompt": prompt, "response": response})


def load_expert_via_train(path: str, *flags):
    """What train.py does with --expert on the arithmetic task (its parser, the tiny tokenizer)."""
    return loop_data.load_task(train.parse_args(["--n-train", "500", "--max-new-tokens", "40", "--expert", path, *flags]))


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "What is 1+2?"}'], r"expert.jsonl:1: no 'response'; expected string fields 'prompt' and 'response'"),
    (['{"prompt": ["What is 1+2?"], "response": "Answer: 3"}'],
     r"expert.jsonl:1: 'prompt' has type list; expected string fields 'prompt' and 'response'"),
    ([expert_line(response=" \n")], r"expert.jsonl:1: empty response; expected the expert's solution text"),
    ([expert_line(response="17+18=35. 35-30=5. So five.")],
     r"expert.jsonl:1: no final answer the arithmetic task can read \(response ends '.*So five\.'\); "
     r"expected a last line 'Answer: N'"),
    ([expert_line(response="1+1=2. " * 6 + "Answer: 2")],                # 51 characters, one token each
     r"expert.jsonl:1: response of 52 tokens with its EOS; expected at most 40 \(max_new_tokens\)"),
    ([expert_line(), expert_line()],
     r"expert.jsonl:2: the same prompt and response as .*expert.jsonl:1; expected each trajectory once"),
], ids=["no-response", "wrong-type", "empty-response", "no-final-answer", "too-long", "duplicate"])
def test_bad_expert_record_names_file_and_line(tmp_path, lines, message):
    """A record that is no expert trajectory of the task (the file's own faults: the JSONL test below)."""
    with pytest.raises(SystemExit, match=message):
        load_expert_via_train(write(tmp_path / "expert.jsonl", lines))


def test_skip_bad_drops_bad_expert_records_with_one_line(tmp_path, caplog):
    lines = [expert_line(), expert_line(response="no answer"), expert_line(), expert_line("What is 1+1?", "Answer: 2")]
    path = write(tmp_path / "expert.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        expert = tasks.load_expert(path, tasks.get_task("arithmetic", n_train=10), skip_bad=True)
    assert expert == {"What is 17+18-30?": ["17+18=35. 35-30=5. Answer: 5"], "What is 1+1?": ["Answer: 2"]}
    assert f"skipped 2 bad records in {path} (first: {path}:2: no final answer the arithmetic task" in caplog.text


def test_skip_bad_flag_reaches_the_loaders(tmp_path):
    ex = loop_data.load_task(train.parse_args(["--n-train", "500"])).train[0]       # a training prompt, its expert
    path = write(tmp_path / "expert.jsonl", [expert_line(ex.prompt, ex.solution), "{not json"])
    with pytest.raises(SystemExit, match="expert.jsonl:2: not a JSON record"):
        load_expert_via_train(path)
    task = load_expert_via_train(path, "--skip-bad", "true", "--prompts", "1")
    assert task.train == [ex]


# ----------------------------------------------------------------------------- any JSONL file: data and expert

JSONL_FILES = {"data": (load_data, ValueError, GOOD), "expert": (load_expert_via_train, SystemExit, expert_line())}


@pytest.mark.parametrize("kind", JSONL_FILES)
@pytest.mark.parametrize("bad, message", [
    ('{"question": "What is 2+2?", "answer": ', r":2: not a JSON record \(.*\); expected one JSON object per line"),
    ("[1, 2]", r":2: a JSON list; expected one JSON object per line"),
    (NOT_UTF8, r":2: byte 0xe9 at column 18 is not UTF-8; expected UTF-8 text"),
    (None, r": empty file; expected one JSON object per line"),
], ids=["bad-json", "not-an-object", "not-utf8", "empty-file"])
def test_bad_jsonl_file_names_file_and_line(tmp_path, kind, bad, message):
    """Data and expert files are read by one reader (math_data.read_jsonl): a good record, then a line that is
    not one JSON object of UTF-8 text, is refused naming file and line; so is a file with no record."""
    load, error, good = JSONL_FILES[kind]
    with pytest.raises(error, match=re.escape(f"{kind}.jsonl") + message):
        load(write(tmp_path / f"{kind}.jsonl", [] if bad is None else [good, bad]))


# ----------------------------------------------------------------------------- flags and model pairs

@pytest.mark.parametrize("flags, message", [
    (["--k", "1"], "--k 1: RLOO needs at least 2 rollouts per prompt"),
    (["--k", "0", "--estimator", "grpo"], "--k 0: expected >= 1"),
    (["--alpha", "-1"], "--alpha -1.0: expected >= 0"),
    (["--prompts", "0"], "--prompts 0: expected >= 1"),
    (["--iterations", "-1"], "--iterations -1: expected >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: expected >= 1"),
    (["--micro-batch", "0"], "--micro-batch 0: expected >= 1"),
    (["--temperature", "0"], "--temperature 0.0: expected > 0"),
    (["--lr", "nan"], "--lr nan: expected > 0"),
    (["--clip", "-0.2"], "--clip -0.2: expected > 0"),
    (["--estimator", "bogus"], "--estimator 'bogus': expected one of rloo, grpo"),
    (["--prompts", "4", "--gen-chunk", "3"], "--gen-chunk 3: expected a divisor of the prompts per process (4)"),
])
def test_out_of_range_flag_is_named(flags, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        train.parse_args(flags)


def test_batch_not_divisible_by_world_size(monkeypatch):
    monkeypatch.setattr(train, "WORLD", 3)
    with pytest.raises(SystemExit, match=re.escape("--prompts 4: expected a multiple of the number of processes (3)")):
        train.parse_args(["--prompts", "4"])


def test_max_prompt_tokens_leaving_too_few_prompts_is_refused(tiny_path, tmp_path):
    """Prompts over --max-prompt-tokens are dropped once the tokenizer is loaded; a limit that leaves fewer
    than an iteration samples stops the run there, naming the flag (the loop divided by zero)."""
    args = train.parse_args(["--policy", tiny_path, "--max-prompt-tokens", "12", "--n-train", "100", "--n-test", "8",
                             "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match=re.escape("--task arithmetic: 0 train prompts, fewer than the 16 an iteration "
                                                   "samples (after dropping those over --max-prompt-tokens 12)")):
        train.main(args)
    assert not (tmp_path / "run").exists()


def test_prm_with_another_tokenizer_is_refused(tmp_path):
    other = tiny.build_tokenizer()
    other.add_tokens(["<step>"])
    other.save_pretrained(tmp_path / "prm")
    args = train.parse_args(["--prm", str(tmp_path / "prm")])
    with pytest.raises(SystemExit, match=r"--prm .*prm: its tokenizer differs from the policy's \(\d+ vs \d+ tokens\)"):
        loop_data.check_prm_tokenizer(args, tiny.build_tokenizer())


# ----------------------------------------------------------------------------- resume and determinism

def test_resume_with_other_settings_lists_every_differing_flag():
    saved = vars(train.parse_args(["--k", "4", "--seed", "0", "--method", "repirl"]))
    given = train.parse_args(["--k", "2", "--seed", "1", "--method", "repirl", "--iterations", "999", "--keep", "5"])
    with pytest.raises(SystemExit) as refused:
        checkpoint.check_resume(saved, given)
    message = str(refused.value)
    assert "--seed: saved 0, given 1; --k: saved 4, given 2" in message          # in the order of Args
    assert "--iterations" not in message and "--keep" not in message        # how long it runs may change
    checkpoint.check_resume(saved | {"iterations": 1, "out": "elsewhere"}, train.parse_args(["--k", "4"]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run of train.py (its own warm start), shared by the tests below."""
    return run(tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("cache-first"))[0]


def test_resume_of_a_run_with_other_settings_is_refused_before_anything_is_written(tiny_run):
    args_json = (tiny_run / "args.json").read_text()
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *TINY_RUN, "--out", str(tiny_run), "--resume", "true",
           "--seed", "1", "--iterations", "3", "--cache", str(tiny_run.parent / "never-made")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode != 0 and "--seed: saved 0, given 1" in proc.stderr, proc.stderr[-2000:]
    assert "--iterations" not in proc.stderr.splitlines()[-1]
    assert (tiny_run / "args.json").read_text() == args_json and not (tiny_run.parent / "never-made").exists()


def metrics(out) -> list[str]:
    """metrics.jsonl without its wall-clock fields, one JSON text per line."""
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    return [json.dumps({k: v for k, v in r.items() if not k.startswith("time/") and k != "rollout/tokens_per_s"})
            for r in rows]


def test_same_seed_same_command_same_metrics(tiny_run, tmp_path):
    """A second run, warm start included, from nothing: the same metrics, byte for byte."""
    again, _ = run(tmp_path, tmp_path / "cache")
    assert len(metrics(tiny_run)) == 3 and metrics(again) == metrics(tiny_run)
    assert (again / "samples.jsonl").read_text() == (tiny_run / "samples.jsonl").read_text()


# ----------------------------------------------------------------------------- safe loading

def test_loading_never_unpickles_code_nor_trusts_remote_code():
    """Every torch.load is weights_only; no trust_remote_code; no eval/exec of text (the sandbox runs
    model-written programs in a separate, locked-down process)."""
    sources = [os.path.join(d, f) for d in (ROOT, os.path.join(ROOT, "scripts"), os.path.join(ROOT, "benchmarks"))
               for f in sorted(os.listdir(d)) if f.endswith(".py")]
    found = []
    for path in sources:
        for n, line in enumerate(open(path), 1):
            code = line.split("#")[0]
            if ("torch.load(" in code and "weights_only=True" not in code) or "trust_remote_code" in code \
                    or re.search(r"(?<![\w.])(eval|exec)\(\s*[^)\s]", code):
                found.append(f"{os.path.basename(path)}:{n}: {line.strip()}")
    assert len(sources) > 10 and not found, found


# ----------------------------------------------------------------------------- numerics at the extremes

def test_losses_stay_finite_at_extreme_rewards_log_probs_and_identical_rollouts():
    import irl
    import rloo
    R_E = torch.tensor([1e4, -1e4, 3.0], requires_grad=True)                   # expert R_phi
    R = torch.tensor([1e4, -1e4, 0.0, 2.0], requires_grad=True)                # policy R_phi
    logp_tau = torch.tensor([-5000.0, -1.0, -5000.0, -3.0])
    for is_policy in (torch.tensor([True, True, False, True]), torch.zeros(4, dtype=torch.bool)):  # none: all correct
        loss, stats = irl.repirl_loss(R_E, R, logp_tau, is_policy)
        g_E, g = torch.autograd.grad(loss, [R_E, R])
        assert torch.isfinite(loss) and torch.isfinite(g_E).all() and torch.isfinite(g).all(), stats
    k, T = 4, 5
    mask = torch.ones(2 * k, T, dtype=torch.bool)
    logp = torch.full((2 * k, T), -0.7, requires_grad=True)                    # k identical rollouts, twice
    for estimator in ("rloo", "grpo", "reinforce"):
        adv, _ = rloo.advantages(torch.ones(2 * k), torch.full((2 * k, T), 1e4), mask, k, 0.1, estimator)
        loss, _ = rloo.policy_loss(logp, logp.detach(), adv, mask, torch.ones(2 * k, T), 0.2, 0.01)
        assert torch.isfinite(adv).all() and torch.isfinite(loss), estimator
        if estimator != "reinforce":                                            # equal outcomes: nothing to prefer
            outcome_only, _ = rloo.advantages(torch.ones(2 * k), torch.zeros(2 * k, T), mask, k, 0.0, estimator)
            assert outcome_only.abs().max() == 0, estimator
