"""Code tasks: every loader on local files shaped like the hub copies, extraction, the execution reward.

The fixtures tests/fixtures/code_*.jsonl have the field names and value formats of the real
records (code_data.py lists them) with problems written for this project:

| file | shaped like |
| --- | --- |
| code_eurus.jsonl | PRIME-RL/Eurus-2-RL-Data, code rows: stdin/stdout ground truth, call-based ground truth with JSON-line inputs (PRIME's) and with parsed-list inputs and [x]-wrapped outputs (APPS'), one math row, one malformed row |
| code_leetcode.jsonl | TechxGenus/LeetCode-Contest (DeepSeek-Coder 20240121-Jul): task_id, url, title, meta, prompt, prompt_sft, test (a script on `my_solution`), start_time |
| code_leetcodedataset.jsonl | newfacade/LeetCodeDataset (flat v0.3.1 fields): check(candidate) tests, entry_point, completion, response (one null) |
| code_livecodebench.jsonl | livecodebench/code_generation_lite: JSON public tests (functional and stdin), private tests as base64(zlib(pickle)), metadata with func_name, contest dates in and out of the default window |
| code_local.jsonl | an own file: id, prompt, tests (JSON text: sandbox form, or inputs/outputs), solution |

Hub ids are never reached (offline mode; the hub-source test replaces `datasets.load_dataset`).
Programs run in the real sandbox with short limits.

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_code_tasks.py -q   (CPU, no downloads, ~20 s)
"""
import base64
import json
import logging
import os
import pickle
import re
import time
import zlib

import datasets
import pytest

import code_data
import sandbox
import tasks
from data_helpers import check_hub_calls, fixture, read_jsonl
import loop_data
import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(timeout=2.0, workers=2)                  # short limits for every code task built here


def fenced(code: str) -> str:
    return f"Here is my program.\n```python\n{code.strip()}\n```\n"


pytestmark = pytest.mark.usefixtures("offline")                 # no test reaches the hub

# ----------------------------------------------------------------------------- loaders, one per layout

EURUS_RIGHT = [
    "a, b = map(int, input().split())\nprint(a - b)",
    "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)",
    "def pair_sum(pairs, k):\n    return [a + b + k for a, b in pairs]",
    "input()\nprint(max(map(int, input().split())))",
]
EURUS_WRONG = [
    "a, b = map(int, input().split())\nprint(a + b)",
    "def count_vowels(s):\n    return len(s)",
    "def pair_sum(pairs, k):\n    return [a + b for a, b in pairs]",
    "input()\nprint(min(map(int, input().split())))",
]


def test_eurus_code_keeps_code_rows_and_reads_both_test_forms(caplog):
    path = fixture("code_eurus.jsonl")
    with caplog.at_level(logging.WARNING, logger="tasks"):
        task = tasks.get_task("eurus-code", data=path, test_data=path, skip_bad=True, **FAST)
        train = task.train
    assert [ex.id for ex in train] == ["train/0", "train/2", "train/3", "train/5"]   # 1 is math, 4 is malformed
    assert f"skipped 1 of 6 records of {path} (not code)" in caplog.text
    assert f"skipped 1 bad records in {path} (first: {path}:5: field 'reward_model.ground_truth'" in caplog.text
    assert train[0].where == f"{path}:1"
    assert train[0].prompt == "Given two integers a and b on one line, print a - b."      # no suffix, no system turn
    assert all("Write Python code" not in ex.prompt and ex.solution is None for ex in train)
    stdin = json.loads(train[0].answer)
    assert stdin == [{"input": "7 3\n", "output": "4\n"}, {"input": "-2 5\n", "output": "-7\n"},
                     {"input": "0 0\n", "output": "0\n"}]
    assert json.loads(train[3].answer)[0] == {"input": "3\n4 9 2", "output": "9"}        # lists of lines joined
    assert all("assert" in t for ex in train[1:3] for t in json.loads(ex.answer))      # fn_name: call asserts
    assert task.rewards([fenced(c) for c in EURUS_RIGHT], train) == [1.0] * 4
    assert task.rewards([fenced(c) for c in EURUS_WRONG], train) == [0.0] * 4
    prompt = task.render(train[0], None)
    assert prompt.startswith("Question: Given two integers") and tasks.CODE_INSTRUCTION in prompt


def test_eurus_code_caps_tests_per_problem():
    capped = tasks.get_task("eurus-code", data=fixture("code_eurus.jsonl"), test_data=fixture("code_eurus.jsonl"),
                            max_tests=2, skip_bad=True).train
    assert [len(json.loads(ex.answer)) for ex in capped] == [2, 2, 2, 2]
    assert tasks.get_task("eurus-code", data=fixture("code_eurus.jsonl")).max_tests == 10      # the default
    every = tasks.get_task("eurus-code", data=fixture("code_eurus.jsonl"), test_data=fixture("code_eurus.jsonl"),
                           max_tests=0, skip_bad=True).train
    assert [len(json.loads(ex.answer)) for ex in every] == [3, 3, 2, 2]


LEETCODE_RIGHT = [   # no imports: List comes from code_data.PREAMBLE, as the reference evaluators provide it
    "class Solution:\n    def countEven(self, nums: List[int]) -> int:\n        return sum(x % 2 == 0 for x in nums)",
    "class Solution:\n    def reverseWords(self, s: str) -> str:\n        return ' '.join(reversed(s.split()))",
    "class Solution:\n    def minGap(self, nums: List[int]) -> int:\n        nums = sorted(nums)\n"
    "        return min(b - a for a, b in pairwise(nums))",                           # itertools, from the preamble
]


def test_leetcode_contest_layout():
    task = tasks.get_task("leetcode", test_data=fixture("code_leetcode.jsonl"), **FAST)
    assert task.train == [] and len(task.test) == 3
    ex = task.test[0]
    assert ex.id == "test/weekly-contest-390-count-even-elements" and ex.solution is None
    assert ex.prompt.startswith("You are given an integer array nums.")
    assert ex.prompt.endswith("```python\nclass Solution:\n    def countEven(self, nums: List[int]) -> int:\n"
                              "        \n```")                                     # prompt_sft, as the data has it
    tests = json.loads(ex.answer)
    assert len(tests) == 1 and tests[0]["assert"].startswith("\nmy_solution = Solution()")  # the whole script
    assert task.rewards([fenced(c) for c in LEETCODE_RIGHT], task.test) == [1.0, 1.0, 1.0]
    off_by_one = LEETCODE_RIGHT[0].replace("sum(", "1 + sum(")
    assert task.reward(fenced(off_by_one), ex) == 0.0
    assert task.program(fenced(LEETCODE_RIGHT[0])).startswith(code_data.PREAMBLE)


def test_leetcodedataset_layout_has_expert_solutions():
    task = tasks.get_task("leetcodedataset", data=fixture("code_leetcodedataset.jsonl"),
                          test_data=fixture("code_leetcodedataset.jsonl"), **FAST)
    first, second = task.train
    assert first.id == "train/sum-of-squares-of-odd-numbers"
    assert first.prompt.startswith("Given an integer array nums") and "```python\nclass Solution:" in first.prompt
    assert first.solution.startswith("We keep the odd elements")                       # the response
    assert second.solution == ("```python\nclass Solution:\n    def longestRun(self, s: str) -> int:\n"
                               "        return max(map(len, s.split('0')))\n```")       # null response: completion
    assert json.loads(first.answer)[0]["assert"].endswith("check(Solution().sumOddSquares)\n")
    assert task.rewards([first.solution, second.solution], task.train) == [1.0, 1.0]
    assert task.reward(first.solution.replace("x * x", "x"), first) == 0.0


LCB_RIGHT = {
    "3421": "class Solution:\n    def scaledSum(self, nums: List[int], k: int) -> int:\n        return sum(nums) * k",
    "abc372_a": "s = input().strip()\nprint('Yes' if len(set(s)) < len(s) else 'No')",
    "3450": "class Solution:\n    def pairSums(self, nums):\n"
            "        return tuple(a + b for a, b in zip(nums[::2], nums[1::2]))",
    "1850B": "print(int(input()) // 2)",
}


def test_livecodebench_uses_public_tests_in_a_date_window_and_never_unpickles(monkeypatch):
    assert not {"pickle", "zlib", "base64"} & set(vars(code_data))          # nothing to decode them with
    records = read_jsonl(fixture("code_livecodebench.jsonl"))

    def refuse(*a, **kw):
        raise AssertionError("private_test_cases must never be decoded")

    with monkeypatch.context() as m:
        for module, attr in ((pickle, "loads"), (pickle, "load"), (zlib, "decompress"), (base64, "b64decode")):
            m.setattr(module, attr, refuse)
        fields = [code_data.to_fields(r) for r in records]
    assert [len(f.tests) for f in fields] == [2, 2, 2, 1]                      # the public tests, no private one
    task = tasks.get_task("livecodebench", test_data=fixture("code_livecodebench.jsonl"), **FAST)
    assert [ex.id for ex in task.test] == ["test/3421", "test/abc372_a", "test/3450"]   # 2023 contest: outside
    everything = tasks.get_task("livecodebench", test_data=fixture("code_livecodebench.jsonl"), start_date="",
                                end_date="", **FAST).test
    assert len(everything) == 4
    functional, stdin = json.loads(everything[0].answer), json.loads(everything[1].answer)
    assert all("assert" in t for t in functional)
    assert stdin == [{"input": "apple\n", "output": "Yes\n"}, {"input": "abc\n", "output": "No\n"}]
    assert everything[0].prompt.endswith("```python\nclass Solution:\n    def scaledSum(self, nums: List[int], "
                                         "k: int) -> int:\n```")
    assert "Read the inputs from stdin" in everything[1].prompt
    programs = [fenced(LCB_RIGHT[ex.id.split("/")[1]]) for ex in everything]
    assert task.rewards(programs, everything) == [1.0] * 4                            # a tuple counts as a list
    wrong = programs[0].replace("sum(nums) * k", "sum(nums) + k")
    assert task.reward(wrong, everything[0]) == 0.0
    scalar = fenced("class Solution:\n    def pairSums(self, nums):\n        return [3, 7] if len(nums) > 2 else 10")
    assert task.reward(scalar, everything[2]) == 0.0                                # 10 is not [10] here (not Eurus)


def test_local_files_of_the_own_layout_and_a_seeded_hold_out(tmp_path, caplog):
    path = fixture("code_local.jsonl")                                          # line 3 has no tests: a bad record
    with caplog.at_level(logging.WARNING, logger="tasks"):
        task = tasks.get_task("code-jsonl", data=path, n_test=1, seed=0, skip_bad=True, **FAST)
        examples = task.train + task.test
    assert len(task.train) == 2 and len(task.test) == 1
    assert f"skipped 1 bad records in {path} (first: {path}:3: no tests in 'tests'; expected a list" in caplog.text
    assert {ex.id for ex in examples} == {"train/double", "train/echo-upper", "train/triple"}
    assert not {ex.id for ex in task.train} & {ex.id for ex in task.test}
    again = tasks.get_task("code-jsonl", data=path, n_test=1, seed=0, skip_bad=True)
    assert again.test == task.test and again.train == task.train
    assert task.rewards([ex.solution for ex in examples], examples) == [1.0] * 3
    parquet = tmp_path / "local.parquet"
    datasets.Dataset.from_list(read_jsonl(path)).to_parquet(str(parquet))
    with pytest.raises(ValueError, match=r"local.parquet\[2\]: no tests in 'tests'"):
        tasks.get_task("code-jsonl", data=str(parquet), n_test=1, seed=0).train
    from_parquet = tasks.get_task("code-jsonl", data=str(parquet), n_test=1, seed=0, skip_bad=True)
    assert [ex.id for ex in from_parquet.train] == [ex.id for ex in task.train]
    assert [ex.id for ex in from_parquet.test] == [ex.id for ex in task.test]


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "prompt": "Q?", "tests": "[{\\"assert\\": "}', r"field 'tests' does not read \(JSONDecodeError: "),
    ('{"id": "a", "prompt": "Q?", "tests": [{"stdin": "1"}]}', r"field 'tests' does not read \(KeyError: 'input'\)"),
    ('{"id": "a", "prompt": "Q?", "tests": {"inputs": ["1"], "outputs": []}}',
     r"field 'tests' does not read \(ValueError: 1 inputs but 0 outputs\); expected a list"),
    ('{"id": "a", "prompt": " ", "tests": [{"assert": "assert True"}]}',
     r"no question; expected a non-empty 'prompt', 'question' or 'problem'"),
    ('{"id": "a", "prompt": "Q?", "tests": []}', r"no tests in 'tests'; expected a list"),
    ('{"question_content": "Q", "public_test_cases": "[]", "metadata": "{}"}',
     r"no tests in 'public_test_cases'; expected a JSON list"),
    ('{"question_content": "Q", "public_test_cases": "[{\\"input\\": \\"1\\", \\"output\\": \\"2\\", '
     '\\"testtype\\": \\"functional\\"}]", "metadata": "{}"}',
     r"field 'public_test_cases' does not read \(ValueError: test type 'functional' \(func_name None\)\)"),
    ('{"id": "a", "prompt": "Q?", "tests": [{"assert": "assert True"}]}', r"id 'a' again \(first at .*:1\)"),
], ids=["not-json", "no-input", "unequal-io", "no-question", "no-tests", "lcb-no-tests", "lcb-no-func-name",
        "duplicate-id"])
def test_bad_code_record_names_file_line_and_reason_or_is_skipped(tmp_path, line, message, caplog):
    good = '{"id": "g", "prompt": "Q?", "tests": [{"assert": "assert True"}]}'
    good2 = '{"id": "a", "prompt": "Q?", "tests": [{"assert": "assert True"}]}'
    path = tmp_path / "data.jsonl"
    path.write_text(f"{good2}\n{line}\n{good}\n")
    with pytest.raises(ValueError, match=rf"data.jsonl:2: {message}"):
        tasks.get_task("code-jsonl", data=str(path), test_data=str(path)).train
    with caplog.at_level(logging.WARNING, logger="math_data"):
        kept = tasks.get_task("code-jsonl", data=str(path), test_data=str(path), skip_bad=True).train
    assert [ex.where for ex in kept] == [f"{path}:1", f"{path}:3"]
    assert f"skipped 1 bad records in {path} (first: {path}:2: " in caplog.text


def test_bad_code_record_stops_train_before_the_first_iteration(tmp_path):
    """train.py: the record's file:line and reason, one line; with --skip-bad the run goes on without it."""
    import train
    records = [{"id": str(i), "prompt": f"Write f(x) returning x + {i}.", "tests": [{"assert": f"assert f(1) == {i + 1}"}],
                "solution": f"```python\ndef f(x): return x + {i}\n```"} for i in range(4)]
    lines = [json.dumps(r) for r in records] + ['{"id": "x", "prompt": "Q?", "tests": [{"stdin": "1"}]}']
    path = tmp_path / "code.jsonl"
    path.write_text("\n".join(lines) + "\n")
    flags = ["--task", "code-jsonl", "--data", str(path), "--n-test", "1", "--prompts", "2"]
    with pytest.raises(SystemExit, match=r"code.jsonl:5: field 'tests' does not read \(KeyError: 'input'\)"):
        loop_data.load_task(train.parse_args(flags))
    task = loop_data.load_task(train.parse_args(flags + ["--skip-bad", "true"]))
    assert sorted(ex.id for ex in task.train + task.test) == ["train/0", "train/1", "train/2", "train/3"]


def test_to_fields_reads_tests_given_as_lists_and_refuses_what_it_cannot_use():
    fields = code_data.to_fields({"Question": "Q?", "tests": [{"input": ["1", "2"], "output": 3}],
                                  "response": "```python\nprint(3)\n```"})
    assert fields == code_data.CodeFields(None, "Q?", [{"input": "1\n2", "output": "3"}], "```python\nprint(3)\n```")
    for record, message in (({"prompt": "Q?", "tests": "not json"}, r"field 'tests' does not read \(JSONDecodeError"),
                            ({"prompt": "Q?", "tests": [{"stdin": "1"}]}, r"field 'tests' does not read \(KeyError"),
                            ({"prompt": "", "tests": [{"assert": "assert True"}]}, r"no question; expected"),
                            ({"question_content": "Q", "public_test_cases": "[]", "metadata": "{}"},
                             r"no tests in 'public_test_cases'"),
                            ({"prompt": [{"role": "user"}], "reward_model": {"ground_truth": "{}"}, "ability": "code"},
                             r"field 'reward_model.ground_truth' does not read \(KeyError: 'inputs'\); expected JSON")):
        with pytest.raises(ValueError, match=message):
            code_data.to_fields(record)
    assert code_data.to_fields({"prompt": "Q?", "reward_model": {"ground_truth": "1"}, "ability": "math"}) is None


HUB_CALLS = {
    "eurus-code": [("PRIME-RL/Eurus-2-RL-Data", None, "train"), ("PRIME-RL/Eurus-2-RL-Data", None, "validation")],
    "leetcode": [("TechxGenus/LeetCode-Contest", None, "train")],
    "leetcodedataset": [("newfacade/LeetCodeDataset", None, "train"), ("newfacade/LeetCodeDataset", None, "test")],
    "livecodebench": [("livecodebench/code_generation_lite", "release_v5", "test")],
}
HUB_FIXTURE = {"PRIME-RL/Eurus-2-RL-Data": "code_eurus.jsonl", "TechxGenus/LeetCode-Contest": "code_leetcode.jsonl",
               "newfacade/LeetCodeDataset": "code_leetcodedataset.jsonl",
               "livecodebench/code_generation_lite": "code_livecodebench.jsonl"}


@pytest.mark.parametrize("name", sorted(HUB_CALLS))
def test_default_hub_sources(name, monkeypatch):
    """Each code task asks datasets for exactly the hub id, config and split its docstring names."""
    check_hub_calls(monkeypatch, lambda: tasks.get_task(name, skip_bad=True), HUB_CALLS[name], HUB_FIXTURE)  # Eurus: row 4


# ----------------------------------------------------------------------------- extraction and reward

@pytest.mark.parametrize("completion, program", [
    ("```python\nprint(1)\n```", "print(1)\n"),
    ("first\n```python\nprint(1)\n```\nthen fixed:\n```python\nprint(2)\n```", "print(2)\n"),   # last one wins
    ("```\nprint(3)\n```", "print(3)\n"),                                                      # untagged
    ("```python\nprint(4)\n```\n```bash\nls\n```", "print(4)\n"),                              # other languages skipped
    ("print(5)", None),                                                                         # no fence
    ("```python\nprint(6)\n", None),                                                            # never closed
])
def test_extraction_takes_the_last_complete_python_block(completion, program):
    task = tasks.get_task("code-synth")
    assert task.program(completion) == program
    assert sandbox.extract_code(completion) == program


ADD_TESTS = [{"assert": "assert add(1, 2) == 3"}, {"assert": "assert add(-1, 1) == 0"}]
ADD = tasks.Example("add", "Write add(a, b).", json.dumps(ADD_TESTS), None)


def test_preamble_gives_leetcode_imports_and_keeps_the_builtins():
    task = tasks.get_task("code-jsonl", data="unused.jsonl", timeout=2.0)
    ex = tasks.Example("pre", "q", json.dumps([{"assert": "assert f([1, 2]) == (1, 3, 3)"}]), None)
    program = "def f(nums: List[int]):\n    return pow(3, 4, 5), len(deque([1, 2, 3])), max(accumulate(nums))"
    assert task.reward(fenced(program), ex) == 1.0                  # math's pow takes no modulus: builtins win
    assert tasks.get_task("code-synth").reward(fenced(program), ex) == 0.0   # code-synth puts nothing before


@pytest.mark.parametrize("program, reward", [
    ("def add(a, b):\n    return a + b", 1.0),                       # correct
    ("def add(a, b):\n    return a - b", 0.0),                       # wrong on one test: all-pass fails it
    ("def add(a, b):\n    raise RuntimeError('boom')", 0.0),         # crash
    ("def add(a, b):\n    while True:\n        pass", 0.0),          # never returns: the time limit ends it
    ("def add(a, b) return a + b", 0.0),                             # syntax error
    ("def add(a, b):\n    return [0] * 10**10", 0.0),                # memory hog: MemoryError under the limit
])
def test_reward_is_all_pass_and_failures_are_zero_never_exceptions(program, reward):
    task = tasks.get_task("code-jsonl", data="unused.jsonl", timeout=1.0, workers=2)
    start = time.monotonic()
    assert task.reward(fenced(program), ADD) == reward
    assert time.monotonic() - start < 6.0                            # two tests, each bounded by the 1 s limit


def test_exiting_before_the_asserts_is_not_a_pass():
    task = tasks.get_task("code-jsonl", data="unused.jsonl", timeout=1.0, workers=2)
    assert task.reward(fenced("import os\nos._exit(0)"), ADD) == 0.0


def test_fraction_reward_and_batched_rewards_keep_order():
    fraction = tasks.get_task("code-jsonl", data="unused.jsonl", code_reward="fraction", timeout=1.0)
    half = fenced("def add(a, b):\n    return 3")
    assert fraction.reward(half, ADD) == 0.5
    task = tasks.get_task("code-jsonl", data="unused.jsonl", timeout=1.0, workers=3)
    completions = [fenced("def add(a, b):\n    return a + b"), "no code at all", half,
                   fenced("def add(a, b):\n    return b + a")]
    assert task.rewards(completions, [ADD] * 4) == [1.0, 0.0, 0.0, 1.0]
    assert task.rewards([], []) == []
    with pytest.raises(ValueError, match="completions for"):
        task.rewards(completions, [ADD])
    with pytest.raises(ValueError, match="code_reward"):
        tasks.get_task("code-jsonl", data="unused.jsonl", code_reward="partial")


def test_rewards_run_programs_in_parallel():
    task = tasks.get_task("code-jsonl", data="unused.jsonl", timeout=5.0, workers=4)
    slow = fenced("import time\ntime.sleep(0.8)\ndef add(a, b):\n    return a + b")
    one = {"assert": "assert add(1, 2) == 3"}
    ex = tasks.Example("slow", "q", json.dumps([one]), None)
    start = time.monotonic()
    assert task.rewards([slow] * 4, [ex] * 4) == [1.0] * 4
    assert time.monotonic() - start < 2.6                            # sequentially: at least 3.2 s


# ----------------------------------------------------------------------------- the synthetic code task

def family(code: str) -> int:
    """The index of the CodeSynth family whose code template `code` instantiates."""
    for i, (_, template, *_) in enumerate(tasks.CodeSynth.FAMILIES):
        if re.fullmatch(re.escape(template).replace(r"\{a\}", r"\d+").replace(r"\{b\}", r"\d+"), code):
            return i
    raise AssertionError(f"{code!r} is no family's program")


def test_code_synth_experts_pass_their_own_tests_and_fit_the_default_budget():
    task = tasks.get_task("code-synth", n_test=200, seed=0)
    examples = task.train + task.test
    assert len(examples) == 882 and len(task.test) == 200
    for ex in examples:                          # in process: trusted programs this file generated
        namespace = {}
        exec(sandbox.extract_code(ex.solution), namespace)
        for test in json.loads(ex.answer):
            exec(test["assert"], namespace)
        assert len(ex.solution) <= 40            # train.py's default --max-new-tokens, one token per character
    families = {}
    for ex in examples:                          # through the sandbox: one example of every family
        families.setdefault(family(ex.id), ex)
    picked = list(families.values())
    assert sorted(families) == list(range(len(tasks.CodeSynth.FAMILIES)))
    assert task.rewards([ex.solution for ex in picked], picked) == [1.0] * len(picked)
    ex = task.test[0]
    assert task.render(ex) == ex.prompt + "\n" and ex.prompt.startswith("Write f(x) returning ")
    wrong = ex.solution.replace("return ", "return 1+")
    assert task.reward(wrong, ex) == 0.0
    assert task.reward(ex.solution.replace("```python", "```js"), ex) == 0.0   # another language is not run


def test_code_synth_split_is_seeded_deterministic_and_disjoint():
    a, b = tasks.get_task("code-synth", seed=1), tasks.get_task("code-synth", seed=1)
    assert a.train == b.train and a.test == b.test
    assert not {ex.prompt for ex in a.train} & {ex.prompt for ex in a.test}
    assert len({ex.prompt for ex in a.train + a.test}) == len(a.train + a.test)
    other = tasks.get_task("code-synth", seed=2)
    assert {ex.id for ex in other.test} != {ex.id for ex in a.test}
    assert len(tasks.get_task("code-synth", n_train=50, seed=1).train) == 50
    assert tasks.get_task("code-synth", n_train=50, seed=1).test == a.test
    with pytest.raises(ValueError, match="n_test"):
        tasks.get_task("code-synth", n_test=5000)


def test_code_synth_takes_the_training_loop_arguments():
    """train.py builds every task from all of its Args; the ones code-synth does not take are ignored."""
    loop_args = dict(task="code-synth", data="", test_data="", n_train=0, n_test=200, seed=0, n_terms=3, lo=1,
                     hi=30, prompt_style="auto")
    task = tasks.get_task("code-synth", **loop_args)
    assert len(task.test) == 200 and task.code_reward == "all"


def test_code_prompt_uses_the_chat_template_of_an_instruct_tokenizer():
    tok = tiny.build_tokenizer()
    assert tasks.build_code_prompt("Sum two numbers.", tok) == (
        f"Question: Sum two numbers.\n{tasks.CODE_INSTRUCTION}\nAnswer: Let's think step by step.\n")
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert tasks.build_code_prompt("Sum two numbers.", tok) == (
        f"<user>Sum two numbers.\n\n{tasks.CODE_INSTRUCTION}<assistant>")
    with pytest.raises(ValueError, match="prompt_style"):
        tasks.build_code_prompt("q", tok, "fancy")
