"""Code data sets on disk and on the hub: record layouts, and their tests in the sandbox's two forms.

`tasks.py` turns records into `Example`s and scores programs with `sandbox.py`; this file knows
the record layouts of the coding data rePIRL trains and evaluates on, so that the task chapter
stays about tasks. Records are loaded exactly as the math data sets are (`math_data.load_located`:
a hub id written `ID[:CONFIG][@SPLIT]`, a local copy of a hub folder, or a .jsonl/.json/.parquet
file). Two functions:

    to_fields(record) -> CodeFields | None     # one record of any layout below -> question, tests, solution
    io_tests(io, unwrap_singleton) -> tests    # {"inputs", "outputs"[, "fn_name"]} -> sandbox tests

Tests come out in the two forms `sandbox.run_tests` takes, and nothing else:

    {"input": "1 2\\n", "output": "3\\n"}       # stdin -> expected stdout, compared line by line
    {"assert": "assert f(1) == 5"}             # statements appended to the program; pass = exit code 0

The layouts (fields as the hub copies name them; keys are matched case-insensitively):

| layout | hub copy: config @ split (rows) | fields read | tests | reference solution |
| --- | --- | --- | --- | --- |
| Eurus-2-RL, code half | PRIME-RL/Eurus-2-RL-Data @ train, validation; rows with ability == "code" | prompt [chat messages], ability, reward_model {ground_truth: JSON string, style}, extra_info {index} | ground_truth {"inputs", "outputs"}: stdin/stdout pairs; with "fn_name": one call assert per pair | none |
| LeetCode contest (DeepSeek-Coder's 20240121-Jul, the set PRIME evaluates on) | TechxGenus/LeetCode-Contest @ train (180; one file, 20240121-Jul.jsonl) | task_id, prompt_sft, test, meta {difficulty, ...}; also url, title, prompt, start_time | `test`, one script of asserts on `my_solution = Solution()`: one assert test | none |
| LeetCodeDataset (human-eval format) | newfacade/LeetCodeDataset @ train, test | task_id, query, test ("def check(candidate)"), entry_point ("Solution().fn"), response, completion; also prompt (imports), problem_description, starter_code, input_output, ... | `test` + "check(entry_point)": one assert test | response (reasoning, then code), else completion in a fence |
| LiveCodeBench | livecodebench/code_generation_lite: release_v1 .. release_v6, release_latest @ test | question_id, question_content, starter_code, public_test_cases (JSON string), metadata (JSON string, func_name), contest_date; also question_title, platform, contest_id, difficulty, private_test_cases | public tests only: "stdin" ones as stdin/stdout pairs, "functional" ones as call asserts on Solution().func_name | none |
| own file | any .jsonl / .parquet | id, prompt (or question, problem), tests (a list, or a JSON string, in sandbox form or as {"inputs", "outputs"[, "fn_name"]}), solution (or response) | as given | solution |

How a record is read (`to_fields`), first rule that applies:
1. `reward_model` (Eurus, veRL-style): records whose `ability` is not "code" are skipped (Eurus
   is mostly math); question = the last user message without Eurus' own code instruction
   suffix (the prompt template adds it back, tasks.CODE_INSTRUCTION); tests from the JSON in
   `reward_model.ground_truth`.
2. `question_content` (LiveCodeBench): question = question_content and a format line (the
   starter code in a fence, or "read stdin, write stdout"); tests from `public_test_cases`.
3. `test` as a string (LeetCode, both layouts): question = prompt_sft | query |
   problem_description (+ starter_code); one assert test, the `test` script, followed by
   `check(entry_point)` when the record names an entry point.
4. `tests` (own file): question = prompt | question | problem; tests as given.
A record that is not a code problem (Eurus' math rows) is skipped (None; the task logs how many). A
record with no question, no test, or tests that do not parse is bad: ValueError saying what was found
and what was expected, which the task turns into `file:line: reason` (or skips and counts with
`skip_bad`), as for math data (math_data.BadRecords).

Call-based tests (Eurus "fn_name", LiveCodeBench "functional"): an input is one JSON value per
line (one per argument), or an already-parsed list of arguments; the expected output is one JSON
value. The assert calls `Solution().fn_name(*args)` when the program defines `Solution`, else
the module-level `fn_name(*args)` (LiveCodeBench's and PRIME's rule), turns a returned tuple
into a list, and compares with ==. Eurus tests (APPS/TACO lineage) may wrap a single expected
value in a list, so for them `[x]` also accepts `x` (PRIME's checker does the same, for lists of
any length; here only for one-element lists).

Deviations from the reference checkers (PRIME's APPS checker, lcb_runner):
1. LiveCodeBench: only `public_test_cases` are used. `private_test_cases` is, in the lite
   releases, base64 of zlib of a *pickle*; unpickling data from the hub can run arbitrary code,
   so it is never decoded. Scores on public tests alone are optimistic: do not compare them with
   published LiveCodeBench numbers.
2. stdin/stdout outputs are compared line by line after stripping the whole output and each
   line's trailing whitespace (sandbox.py). PRIME and lcb_runner also accept lines that are
   equal as lists of numbers (Decimal), so "1.50" vs "1.5" fails here and passes there.
3. Every test is its own process (sandbox.run_tests); the reference checkers run all tests of a
   problem in one process, so state carried between tests differs.
4. Programs run with `python -I -S` (standard library only, sandbox.py): numpy is not there.
   The preamble the reference evaluators put before a solution is `PREAMBLE`, without numpy.
"""
import json
import re
from typing import NamedTuple

# Put before every extracted program of the real code tasks: the imports LeetCode-style solutions
# assume (List[int] in a signature is evaluated when the class is defined), standard library only.
# The star imports shadow builtins (math's pow takes no modulus; operator's abs, index, ...), so
# the builtins are imported back last, as lcb_runner does.
PREAMBLE = """\
import bisect, collections, copy, datetime, functools, heapq, itertools, json, math, operator, random, re, string, sys
from bisect import *
from collections import *
from functools import *
from heapq import *
from itertools import *
from math import *
from operator import *
from string import *
from typing import *
from builtins import *
sys.setrecursionlimit(50000)
"""

EURUS_CODE_SUFFIX = re.compile(r"\s*Write Python code to solve the problem\.\s*Present the code in\s*"
                               r"```python\s*Your code\s*```\s*at the end\.\s*$")
LCB_STARTER = ("You will use the following starter code to write the solution to the problem and enclose "
               "your code within delimiters.\n```python\n{starter}\n```")
LCB_STDIN = ("Read the inputs from stdin, solve the problem and write the answer to stdout (do not directly "
             "test on the sample inputs).")


class CodeFields(NamedTuple):
    id: str | None            # the record's own id, if it has one
    question: str             # the problem as posed, before any prompt template
    tests: list[dict]         # sandbox form: {"input", "output"} or {"assert"}
    solution: str | None      # a reference trajectory (text with a fenced program), if the data has one


# ----------------------------------------------------------------------------- record -> fields

def to_fields(record: dict) -> CodeFields | None:
    """Question, tests and solution of one record of any layout above; None for a record that is not a
    code problem. ValueError ("what was found; what was expected") for a record with no question, no
    test, or a field that does not read as the layout says."""
    r = {k.lower(): v for k, v in record.items()}
    rid, solution, tests = r.get("id"), None, []
    field = "prompt"                                                             # the field being read
    try:
        if r.get("reward_model") is not None:                                    # 1) Eurus / veRL
            if r.get("ability") != "code":
                return None
            question = EURUS_CODE_SUFFIX.sub("", _user_turn(r.get("prompt")) or "")
            field = "reward_model.ground_truth"
            tests = io_tests(_json(r["reward_model"].get("ground_truth")), unwrap_singleton=True)
            rid = rid if rid is not None else (r.get("extra_info") or {}).get("index")
        elif r.get("question_content") is not None:                              # 2) LiveCodeBench
            field = "question_content"
            starter = (r.get("starter_code") or "").strip()
            fmt = LCB_STARTER.format(starter=starter) if starter else LCB_STDIN
            question = f"{r['question_content'].strip()}\n\n{fmt}"
            field = "public_test_cases"
            tests = lcb_tests(r.get("public_test_cases"), _json(r.get("metadata") or "{}").get("func_name"))
            rid = r.get("question_id", rid)
        elif isinstance(r.get("test"), str):                                     # 3) LeetCode, both layouts
            field = "prompt_sft"
            question = r.get("prompt_sft") or r.get("query") or _with_starter(r.get("problem_description"),
                                                                              r.get("starter_code"))
            field = "test"
            entry = r.get("entry_point")
            tests = [{"assert": r["test"] + (f"\n\ncheck({entry})\n" if entry else "\n")}]
            completion = r.get("completion")
            solution = r.get("response") or (f"```python\n{completion.strip()}\n```" if completion else None)
            rid = r.get("task_id", rid)
        else:                                                                    # 4) own file
            question = _user_turn(next((r[k] for k in ("prompt", "question", "problem") if r.get(k)), None))
            field = "tests"
            given = _json(r["tests"]) if r.get("tests") is not None else []
            tests = io_tests(given) if isinstance(given, dict) else [_checked(t) for t in given]
            solution = r.get("solution") or r.get("response")
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"field {field!r} does not read ({type(e).__name__}: {e}); expected {EXPECTED[field]}") from None
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"no question; expected a non-empty {EXPECTED['question'][field]}")
    if not tests:
        raise ValueError(f"no tests in {field!r}; expected {EXPECTED[field]}")
    return CodeFields(None if rid is None else str(rid), question.strip(), tests, solution)


EXPECTED = {
    "prompt": "text, or chat messages with a user turn",
    "question_content": "text",
    "prompt_sft": "text",
    "reward_model.ground_truth": 'JSON {"inputs": [...], "outputs": [...]} of equal lengths (and "fn_name" for '
                                 "call tests)",
    "public_test_cases": 'a JSON list of {"input", "output", "testtype"}, testtype "stdin" or "functional" '
                         '(functional: "func_name" in metadata)',
    "test": "a script of asserts",
    "tests": 'a list (or its JSON text) of {"input", "output"} or {"assert"} tests, or {"inputs": [...], '
             '"outputs": [...]}',
    "question": {"reward_model.ground_truth": "user turn in 'prompt'", "public_test_cases": "'question_content'",
                 "test": "'prompt_sft', 'query' or 'problem_description'",
                 "tests": "'prompt', 'question' or 'problem'"},
}
"""What each field of the layouts above must hold; the messages of bad records quote it."""


def io_tests(io: dict, unwrap_singleton: bool = False) -> list[dict]:
    """{"inputs": [...], "outputs": [...], "fn_name"?} (APPS/TACO/Eurus) -> sandbox tests, in order.

    Without fn_name each pair is stdin -> stdout (a list of lines is joined by newlines); with it,
    each pair is a call assert (`call_test`)."""
    inputs, outputs, fn_name = io["inputs"], io["outputs"], io.get("fn_name")
    if len(inputs) != len(outputs):
        raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
    if not fn_name:
        return [{"input": _lines(i), "output": _lines(o)} for i, o in zip(inputs, outputs)]
    return [call_test(fn_name, _args(i), _value(o), unwrap_singleton) for i, o in zip(inputs, outputs)]


def lcb_tests(public_test_cases: str, fn_name: str | None) -> list[dict]:
    """LiveCodeBench's public tests, a JSON list of {"input", "output", "testtype"}, as sandbox tests."""
    tests = []
    for t in _json(public_test_cases):
        if t["testtype"] == "stdin":
            tests.append({"input": t["input"], "output": t["output"]})
        elif t["testtype"] == "functional" and fn_name:
            tests.append(call_test(fn_name, _args(t["input"]), _value(t["output"])))
        else:
            raise ValueError(f"test type {t['testtype']!r} (func_name {fn_name!r})")
    return tests


def call_test(fn_name: str, args: list, expected, unwrap_singleton: bool = False) -> dict:
    """An assert test: `Solution().fn_name(*args)` (or the module's `fn_name`) returns `expected`.

    Arguments and expected value travel as JSON text inside the statement, so any JSON value
    (true, null, nested lists) round-trips exactly."""
    accept = "_got == _want"
    if unwrap_singleton:
        accept += " or (isinstance(_want, list) and len(_want) == 1 and _got == _want[0])"
    return {"assert": "\n".join([
        "import json as _json",
        f"_f = getattr(Solution(), {fn_name!r}) if 'Solution' in globals() else globals()[{fn_name!r}]",
        f"_got = _f(*_json.loads({json.dumps(args)!r}))",
        "_got = list(_got) if isinstance(_got, tuple) else _got",
        f"_want = _json.loads({json.dumps(expected)!r})",
        f"assert {accept}, (_got, _want)",
    ])}


# ----------------------------------------------------------------------------- helpers

def _json(value):
    """A field that holds JSON as text (hub copies store tests as strings), or the value itself."""
    return json.loads(value) if isinstance(value, str) else value


def _args(value) -> list:
    """Call arguments: one JSON value per line (LiveCodeBench, Eurus), or already a list (APPS)."""
    if isinstance(value, str):
        return [json.loads(line) for line in value.split("\n") if line.strip()]
    return list(value)


def _value(value):
    """An expected return value: JSON text, or the value itself; text that is not JSON stays text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _lines(value) -> str:
    """stdin or expected stdout: a string, or a list of lines joined by newlines."""
    return "\n".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def _checked(test: dict) -> dict:
    """One test of an own file, in sandbox form (the keys run_tests reads, as strings)."""
    if "assert" in test:
        return {"assert": str(test["assert"])}
    return {"input": _lines(test["input"]), "output": _lines(test["output"])}


def _with_starter(description: str | None, starter: str | None) -> str | None:
    """A problem statement followed by its starter code in a fence (LeetCodeDataset without `query`)."""
    if not description:
        return None
    return f"{description.strip()}\n\n```python\n{starter.strip()}\n```" if starter else description


def _user_turn(prompt) -> str | None:
    """The text of a prompt field: a string, or the last user turn of a list of chat messages."""
    if not isinstance(prompt, (list, tuple)):
        return prompt
    users = [m.get("content") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else None
