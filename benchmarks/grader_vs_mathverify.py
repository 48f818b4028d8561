"""grader.py against the test cases of Hugging Face's Math-Verify (issue 18).

Math-Verify (the checker TRL and open-r1 use) pins its behaviour with (gold, prediction, expected)
cases in `tests/test_all.py` and `tests/test_boxed.py`. This script reads them from a local
checkout (they are never copied into this repository), grades every case with grader.py and
reports how often the two agree, on all cases and on the ones where a side holds a `\\boxed{}`
answer (what the prompts here ask the policy to write):

    git clone https://github.com/huggingface/Math-Verify /tmp/mathverify
    git -C /tmp/mathverify checkout 5d148cf
    python benchmarks/grader_vs_mathverify.py --tests /tmp/mathverify/tests

Reading the cases. The test files are parsed with `ast`, never imported or run: every
`assert compare_strings(gold, pred, ...) == expected` names the case's fields, either literals
(a helper call) or the argument names of the test's `@pytest.mark.parametrize` rows. Row values are
literals, or an f-string formatting a `math` function of literals (`f"{math.sqrt(17):.15f}"`),
evaluated here by a small evaluator that knows nothing else. At 5d148cf this finds 195 cases:
194 parametrize rows and the one helper call of `test_precision`. Issue 18 counted 193: the rows
whose values are plain literals, without the f-string row and the helper call; both are reported.
Math-Verify's own options of a test (`precision`, `match_types`, `allow_set_relation_comp`) are
its business and ignored: a case is its gold, its prediction and its expected verdict.

Grading a case the way training grades a rollout, `grader.grade(model_text, gold_answer)`. A side
is a text (rather than a bare answer) when it holds a `\\boxed{}` or a final-answer phrase
("answer is", "Answer:"):
  1. the model text is the gold side when only it is a text (a few cases put the model output
     there), else the prediction;
  2. the other side is the gold answer, taken as it is; when it is a text too (a whole solution),
     its answer is `grader.extract_answer` of it, as math_data.py does with MATH's solutions.

Reported: agreement; false accepts (expected 0, graded 1: a wrong rollout rewarded, the costly
error in RL) and false rejects (expected 1, graded 0); cases per second and the slowest call
(sympy is imported and warmed up before the clock starts), then every disagreement.
"""
import ast
import math
import os
import re
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli     # noqa: E402
import grader  # noqa: E402

TEST_FILES = ("test_all.py", "test_boxed.py")
BOX = re.compile(r"\\(?:boxed|fbox)")
TEXT = re.compile(BOX.pattern + r"|answer\s*(?:is|:)", re.IGNORECASE)


@dataclass
class Args:
    tests: str = ""
    """Math-Verify's tests folder (a local checkout, e.g. /tmp/mathverify/tests)"""
    timeout: float = 1.0
    """grader's limit of each symbolic comparison, seconds (grader.is_equiv's default)"""
    show: bool = True
    """print every disagreement"""


@dataclass
class Case:
    test: str       # the test function it comes from
    gold: str
    pred: str
    expected: int   # Math-Verify's verdict: 1 same answer, 0 not
    literal: bool   # a parametrize row of plain literals (issue 18's count)


# ----------------------------------------------------------------------------------------------
# reading the cases


def value(node: ast.expr):
    """A literal, or an f-string over `math.<function>(<literals>)`; anything else is refused."""
    if isinstance(node, ast.JoinedStr):
        return "".join(value(part) for part in node.values)
    if isinstance(node, ast.FormattedValue):
        spec = value(node.format_spec) if node.format_spec else ""
        return format(value(node.value), spec)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "math"):
        return getattr(math, node.func.attr)(*(ast.literal_eval(a) for a in node.args))
    return ast.literal_eval(node)


def parametrize_rows(fn: ast.FunctionDef) -> list[dict]:
    """The rows of the function's @pytest.mark.parametrize, as {argument name: value}."""
    for deco in fn.decorator_list:
        if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize":
            names = [n.strip() for n in ast.literal_eval(deco.args[0]).split(",")]
            return [dict(zip(names, (value(v) for v in row.elts)),
                         literal=all(isinstance(v, ast.Constant) for v in row.elts))
                    for row in deco.args[1].elts]
    return []


def checks(fn: ast.FunctionDef):
    """Every `assert compare_strings(gold, pred, ...) == expected` in the function: the 3 nodes."""
    for node in ast.walk(fn):
        test = node.test if isinstance(node, ast.Assert) else None
        if (isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.Eq) and isinstance(test.left, ast.Call)
                and getattr(test.left.func, "id", "") == "compare_strings"):
            yield test.left.args[0], test.left.args[1], test.comparators[0]


def read_cases(tests_dir: str) -> list[Case]:
    cases = []
    for name in TEST_FILES:
        with open(os.path.join(tests_dir, name)) as f:
            module = ast.parse(f.read())
        for fn in (n for n in module.body if isinstance(n, ast.FunctionDef)):
            rows = parametrize_rows(fn)
            for fields in checks(fn):
                if all(isinstance(f, ast.Name) for f in fields):  # the parametrized arguments
                    gold, pred, expected = (f.id for f in fields)
                    cases += [Case(fn.name, r[gold], r[pred], int(r[expected]), r["literal"]) for r in rows]
                else:                                             # a helper call with literals
                    gold, pred, expected = (value(f) for f in fields)
                    cases.append(Case(fn.name, gold, pred, int(expected), literal=False))
    return cases


# ----------------------------------------------------------------------------------------------
# grading and the report


def grade(case: Case, timeout: float) -> int:
    """grader.py's verdict on one case (module docstring, "Grading a case")."""
    text, other = case.pred, case.gold
    if TEXT.search(case.gold) and not TEXT.search(case.pred):
        text, other = case.gold, case.pred
    gold_answer = grader.extract_answer(other) if TEXT.search(other) else other
    if gold_answer is None:
        return 0
    return int(grader.is_equiv(grader.extract_answer(text), gold_answer, timeout=timeout))


def summary(label: str, cases: list[Case], verdicts: list[int]) -> str:
    agree = sum(v == c.expected for c, v in zip(cases, verdicts))
    false_accepts = sum(v and not c.expected for c, v in zip(cases, verdicts))
    false_rejects = sum(c.expected and not v for c, v in zip(cases, verdicts))
    return (f"{label:<44} {agree:>4} / {len(cases):<4} {agree / len(cases):6.1%}"
            f"   false accepts {false_accepts:>2}   false rejects {false_rejects:>2}")


def short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else "..." + text[-width:])


def main(args: Args):
    if not args.tests:
        raise SystemExit("give --tests: the tests folder of a Math-Verify checkout (see this script's docstring)")
    cases = read_cases(args.tests)
    print(f"{len(cases)} cases in {', '.join(TEST_FILES)} of {args.tests}: "
          f"{sum(c.literal for c in cases)} parametrize rows of plain literals, "
          f"{sum(not c.literal for c in cases)} computed rows or helper calls")
    grader.is_equiv("(x+1)^2", "x^2+2x+1")  # imports and warms up sympy outside the clock
    verdicts, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        verdicts.append(grade(case, args.timeout))
        seconds.append(time.perf_counter() - start)

    subsets = [("all cases", lambda c: True),
               ("plain-literal rows (issue 18's 193)", lambda c: c.literal),
               ("a side holds \\boxed{}", lambda c: bool(BOX.search(c.gold + c.pred)))]
    for label, keep in subsets:
        picked = [(c, v) for c, v in zip(cases, verdicts) if keep(c)]
        print(summary(label, [c for c, _ in picked], [v for _, v in picked]))
    slowest = max(range(len(cases)), key=seconds.__getitem__)
    print(f"speed: {len(cases) / sum(seconds):.1f} cases/s ({sum(seconds):.2f} s for {len(cases)}); "
          f"slowest call {seconds[slowest] * 1000:.0f} ms ({cases[slowest].test}: {short(cases[slowest].gold, 40)})")
    if args.show:
        print("\ndisagreements (expected, graded, test, gold, prediction):")
        for case, verdict in zip(cases, verdicts):
            if verdict != case.expected:
                print(f"  {case.expected} {verdict}  {case.test}  {short(case.gold)}  {short(case.pred)}")


if __name__ == "__main__":
    main(Args(**vars(cli.dataclass_parser(Args, __doc__.split("\n\n")[0]).parse_args())))
