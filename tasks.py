"""Tasks: where prompts, expert trajectories and the outcome reward r_o come from.

A task gives the training loop three things, and nothing else:
1. `train` and `test` lists of `Example` (prompt, gold answer, and, when the data has one, an
   expert solution: the trajectory tau^E the PRM learns from);
2. `render(example, tokenizer) -> str`: the exact text the policy is conditioned on;
3. `reward(completion, example) -> float`: the outcome reward r_o(tau) in {0, 1}.

The embedded default is `Arithmetic`: multi-step integer arithmetic whose expert is a program
that writes every step,

    prompt:   What is 37+25-18?
    expert:   37+25=62. 62-18=44. Answer: 44
    careless: 37+25=62. Answer: 62          (`stop_early`: the first step, then its value)

Its split is deterministic in the seed and the held-out problems never appear in training. The
careless teacher is what the default warm start partly imitates (train.py --bc-stop-early), so that
the policy begins with one habit to unlearn; the loop's expert trajectories are always complete.

The real tasks are math data sets (record layouts and hub copies: math_data.py):

| task | train prompts (expert) | test | default source |
| --- | --- | --- | --- |
| gsm8k | GSM8K train, 7473 (gold rationales) | GSM8K test, 1319 | openai/gsm8k, config main |
| math | MATH train, 7500 (gold solutions) | MATH test, 5000 | EleutherAI/hendrycks_math, 7 subject configs |
| eurus-math | Eurus-2-RL-Data, ability "math" (no expert: --expert) | its validation split | PRIME-RL/Eurus-2-RL-Data |
| math500 | none | MATH-500, 500 | HuggingFaceH4/MATH-500 @ test |
| aime24 | none | AIME 2024, 30 | HuggingFaceH4/aime_2024 @ train |
| amc23 | none | AMC 2023, 40 | math-ai/amc23 @ test |
| minerva | none | Minerva Math, 272 | math-ai/minervamath @ test |
| olympiadbench | none | OlympiadBench, 675 | Hothan/OlympiadBench, config OE_TO_maths_en_COMP @ train |
| jsonl | a local .jsonl/.json/.parquet file (`data`), any layout above | `test_data`, or `n_test` held out | none |

Every math task takes `data` / `test_data` (another source for its train / test split: a hub id,
a local copy of the hub folder, or a file), `n_train` / `n_test` (0: all, else a seeded subset),
`prompt_style` and `seed`; `get_task` passes the ones a task accepts. Its reward is
`grader.grade(completion, example.answer)`. MATH-500 is drawn from MATH's test split, so the
`math` task's training prompts never contain a MATH-500 problem.

Prompts (`build_prompt`): a tokenizer with a chat template (instruct models) gets it, with the
question and INSTRUCTION as the user turn; otherwise (base models) a plain "Question: ...
Answer: Let's think step by step." template. `prompt_style` auto | chat | plain overrides the
choice. `drop_long_prompts` removes, and reports, prompts over a token limit: nothing is
truncated.

Expert trajectories: the data set's gold solutions (`Example.solution`), or a JSONL file of
{"prompt", "response", "answer"?} records (`load_expert`, `attach_expert`) written by
scripts/make_expert.py from gold solutions or by rejection sampling a stronger model.

Bad input: every record of a data file (`MathTask.load`, math and code tasks alike) and of an expert
file (`load_expert`) is checked as it is read; a bad one raises ValueError("path:line: what was found; expected ..."), or,
with `skip_bad`, is skipped, and one line reports how many and the first.

Code tasks (record layouts: code_data.py; execution: sandbox.py) reward a completion 1 when the
last fenced block passes every test of the problem (all-pass, as rePIRL and PRIME): `code-synth`
(one-line functions with generated asserts, for the CPU), `eurus-code`, `leetcode`,
`leetcodedataset`, `livecodebench` (public tests only), `code-jsonl`. They also offer
`rewards(completions, examples)`, which runs the programs in parallel; train.py uses it.

Group filter (`filter_groups`, ranges by name in `GROUP_FILTERS`): keep prompts whose rollout
accuracy lies in [0.2, 0.8], as rePIRL and PRIME do, so every kept group carries an outcome signal;
or keep only the prompts some rollout solves, or only those all fail (where the outcome advantage
is zero and a PRM is the only signal: the test of rePIRL's early-signal claim).

    python tasks.py arithmetic                                # prints a few examples of a task
    python tasks.py jsonl --data tests/fixtures/gsm8k_train.jsonl   # any task and source (hub ids download)
"""
import dataclasses
import functools
import inspect
import json
import logging
import random
import re
from dataclasses import dataclass

import code_data
import grader
import math_data
import sandbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    id: str                       # unique within its task
    prompt: str                   # the question, before any template
    answer: str                   # gold final answer
    solution: str | None = None   # an expert trajectory (the response only), if the data has one
    where: str = dataclasses.field(default="", compare=False)   # its record, for messages: path:line or source[i]


# ----------------------------------------------------------------------------- synthetic arithmetic

ANSWER_RE = re.compile(r"Answer:\s*(-?\d+)\s*$")


class Arithmetic:
    """`n_terms` integers from [lo, hi] joined by + and -, solved left to right, one step each."""

    name = "arithmetic"
    answer_form = "a last line 'Answer: N'"

    def __init__(self, n_terms: int = 3, lo: int = 1, hi: int = 99, n_train: int = 0,
                 n_test: int = 200, seed: int = 0):
        if n_terms < 2 or lo > hi:
            raise ValueError(f"arithmetic needs n_terms >= 2 and lo <= hi, got n_terms={n_terms}, lo={lo}, hi={hi}")
        distinct = (hi - lo + 1) ** n_terms * 2 ** (n_terms - 1)
        if n_test >= distinct or n_train > distinct - n_test:
            raise ValueError(f"arithmetic with {n_terms} terms of {lo}..{hi} has {distinct} distinct problems: "
                             f"n_test={n_test} + n_train={n_train} do not fit (n_train=0 takes what is left)")
        n_train = n_train or min(20000, distinct - n_test)  # 0: the task's default, as for data sets
        self.n_terms, self.lo, self.hi = n_terms, lo, hi
        rng = random.Random(f"arithmetic-{seed}")
        seen, examples = set(), []
        while len(examples) < n_train + n_test:       # distinct problems; test = the first n_test
            ex = self.make(rng)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                examples.append(ex)
        self.test, self.train = examples[:n_test], examples[n_test:]

    def make(self, rng: random.Random) -> Example:
        """One random problem with its worked solution."""
        nums = [rng.randint(self.lo, self.hi) for _ in range(self.n_terms)]
        ops = [rng.choice("+-") for _ in range(self.n_terms - 1)]
        expr = str(nums[0]) + "".join(op + str(n) for op, n in zip(ops, nums[1:]))
        return Example(id=expr, prompt=f"What is {expr}?", answer=str(solve(nums, ops)[-1]),
                       solution=write_steps(nums, ops))

    def render(self, ex: Example, tokenizer=None) -> str:
        return ex.prompt + "\n"

    @staticmethod
    def stop_early(ex: Example, steps: int = 1) -> str:
        """A careless teacher's trajectory: the expert's first `steps` steps, then the last one's value as
        the answer ("37+25=62. Answer: 62"), which is wrong whenever more terms follow."""
        kept = ex.solution.split(". ")[:steps]
        return ". ".join(kept) + f". Answer: {kept[-1].split('=')[1]}"

    def careless(self, ex: Example, rng: random.Random, p: float) -> Example:
        """The careless teacher's demonstration of `ex`: after each step but the last it stops with
        probability p (`stop_early`). With 3 terms that is a share p of demonstrations stopping after the
        first step; with n terms a share (1 - p)^(n - 2) writes every step."""
        for steps in range(1, self.n_terms - 1):
            if rng.random() < p:
                return dataclasses.replace(ex, solution=self.stop_early(ex, steps))
        return ex

    def final_answer(self, completion: str) -> str | None:
        """The answer the reward reads: N of a last 'Answer: N' (None: there is none)."""
        match = ANSWER_RE.search(completion.strip())
        return match and match.group(1)

    def reward(self, completion: str, ex: Example) -> float:
        return float(self.final_answer(completion) == ex.answer)


def solve(nums: list[int], ops: list[str]) -> list[int]:
    """Running values left to right: solve([37, 25, 18], ['+', '-']) == [37, 62, 44]."""
    values = [nums[0]]
    for op, n in zip(ops, nums[1:]):
        values.append(values[-1] + n if op == "+" else values[-1] - n)
    return values


def write_steps(nums: list[int], ops: list[str]) -> str:
    """The expert trajectory: one 'a+b=c.' step per operation, then 'Answer: c'."""
    values = solve(nums, ops)
    steps = [f"{values[i]}{op}{n}={values[i + 1]}." for i, (op, n) in enumerate(zip(ops, nums[1:]))]
    return " ".join(steps) + f" Answer: {values[-1]}"


# ----------------------------------------------------------------------------- prompts

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROMPT_STYLES = ("auto", "chat", "plain")


def build_prompt(question: str, tokenizer=None, style: str = "auto", instruction: str = INSTRUCTION) -> str:
    """The text the policy is conditioned on, ending where its answer starts.

    chat:  tokenizer.apply_chat_template([user: question + instruction], add_generation_prompt=True)
    plain: "Question: {question}\\n{instruction}\\nAnswer: Let's think step by step.\\n"
    auto:  chat when the tokenizer has a chat template, else plain.
    """
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if style == "auto":
        style = "chat" if has_template else "plain"
    if style == "chat":
        if not has_template:
            raise ValueError("prompt_style 'chat' needs a tokenizer with a chat_template")
        messages = [{"role": "user", "content": f"{question}\n\n{instruction}"}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if style == "plain":
        return f"Question: {question}\n{instruction}\nAnswer: Let's think step by step.\n"
    raise ValueError(f"prompt_style {style!r}: expected one of {', '.join(PROMPT_STYLES)}")


def drop_long_prompts(task, tokenizer, max_prompt_tokens: int, splits=("train", "test")) -> dict[str, list[str]]:
    """Remove from the task's `splits` the examples whose rendered prompt has more than
    `max_prompt_tokens` tokens (0: no limit). Never truncates. Returns the dropped ids per split
    and logs each split's count with where the first one is (its record's path:line, else its id)."""
    dropped = {split: [] for split in splits}
    if max_prompt_tokens <= 0:
        return dropped
    for split in dropped:
        examples, kept, first = getattr(task, split), [], None
        for i in range(0, len(examples), 1000):                                  # bounded memory
            chunk = examples[i:i + 1000]
            ids = tokenizer([task.render(ex, tokenizer) for ex in chunk], add_special_tokens=False).input_ids
            for ex, prompt_ids in zip(chunk, ids):
                if len(prompt_ids) <= max_prompt_tokens:
                    kept.append(ex)
                else:
                    dropped[split].append(ex.id)
                    first = first or f"{ex.where or ex.id}, {len(prompt_ids)} tokens"
        setattr(task, split, kept)
        if dropped[split]:
            log.warning(f"{task.name}: skipped {len(dropped[split])} of {len(examples)} {split} prompts longer than "
                        f"{max_prompt_tokens} tokens (first: {first})")
    return dropped


# ----------------------------------------------------------------------------- math data sets

class MathTask:
    """A math data set: questions, gold answers and, where the data has them, gold solutions.

    Subclasses only name their default sources (syntax: math_data.py); `data` / `test_data`
    replace them. With no test source, `n_test` examples of `data` are held out as the test
    split. Each split is loaded when first used, so a script that needs one never fetches the
    other.
    """

    name = "jsonl"
    train_source = ""
    test_source = ""
    answer_form = "a \\boxed{} answer (or a last 'Answer:' line, or a number)"
    final_answer = staticmethod(grader.extract_answer)          # the answer the reward reads (None: none)
    kind = "math"                                               # records of another kind are skipped, counted

    def __init__(self, data: str = "", test_data: str = "", n_train: int = 0, n_test: int = 0,
                 prompt_style: str = "auto", seed: int = 0, skip_bad: bool = False):
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style {prompt_style!r}: expected one of {', '.join(PROMPT_STYLES)}")
        self.data, self.test_data = data or self.train_source, test_data or self.test_source
        if not self.data and not self.test_data:
            raise ValueError(f"task {self.name!r} needs a data file: data=path/to/train.jsonl (or .parquet)")
        self.n_train, self.n_test, self.prompt_style, self.seed = n_train, n_test, prompt_style, seed
        self.skip_bad = skip_bad

    @functools.cached_property
    def train(self) -> list[Example]:
        if not self.data:
            return []
        if not self.test_data:
            return self._held_out[0]
        return subset(self.load(self.data, "train", like=self.train_source), self.n_train, self.seed)

    @functools.cached_property
    def test(self) -> list[Example]:
        if not self.test_data:
            return self._held_out[1]
        return subset(self.load(self.test_data, "test", like=self.test_source), self.n_test, self.seed)

    @functools.cached_property
    def _held_out(self) -> tuple[list[Example], list[Example]]:
        """One source for both splits: a seeded n_test examples are the test split."""
        examples = self.load(self.data, "train", like=self.train_source)
        order = list(range(len(examples)))
        random.Random(f"{self.name}/holdout/{self.seed}").shuffle(order)
        test = [examples[i] for i in sorted(order[:self.n_test])]
        return subset([examples[i] for i in sorted(order[self.n_test:])], self.n_train, self.seed), test

    def load(self, source: str, split: str, like: str = "") -> list[Example]:
        """The Examples of one source; records that are not of the task's `kind` (Eurus' code problems
        for a math task, its math problems for a code task), or that `keep` leaves out, are skipped.

        A bad record (math_data.read_jsonl, the task's `fields`, or an `id` field seen before) raises
        ValueError naming where it is, or with `skip_bad` is skipped and counted. `split` prefixes the
        ids; `like` is the default source whose config and split a bare local folder inherits
        (math_data.load_located)."""
        bad = math_data.BadRecords(source, self.skip_bad)
        examples, first_seen, other_kind, n = [], {}, 0, 0
        for n, (where, record) in enumerate(math_data.load_located(source, like, bad), 1):
            if not self.keep(record):
                continue
            own_id = next((v for k, v in record.items() if k.lower() == "id"), None)
            try:
                f = self.fields(record)
            except ValueError as e:
                bad(where, str(e))
                continue
            if own_id is not None and own_id in first_seen:
                bad(where, f"id {own_id!r} again (first at {first_seen[own_id]}); expected unique ids")
                continue
            first_seen[own_id] = where
            if f is None:
                other_kind += 1
                continue
            examples.append(self.example(f, f"{split}/{f.id if f.id is not None else n - 1}", where))
        bad.report()
        if other_kind:
            log.warning(f"{self.name}: skipped {other_kind} of {n} records of {source} (not {self.kind})")
        return examples

    def keep(self, record: dict) -> bool:
        """Whether to use a record of the source (all; LiveCodeBench keeps a contest-date window)."""
        return True

    def fields(self, record: dict):
        """Question, answer and solution of one record (math_data.to_fields)."""
        return math_data.to_fields(record)

    def example(self, f, id: str, where: str) -> Example:
        """The Example of a record's fields."""
        return Example(id=id, prompt=f.question, answer=f.answer, solution=f.solution, where=where)

    def render(self, ex: Example, tokenizer=None) -> str:
        return build_prompt(ex.prompt, tokenizer, self.prompt_style)

    def reward(self, completion: str, ex: Example) -> float:
        return grader.grade(completion, ex.answer)


def subset(examples: list, n: int, seed: int) -> list:
    """`n` examples drawn without replacement, seeded, in their original order (n <= 0: all)."""
    if n <= 0 or n >= len(examples):
        return examples
    return [examples[i] for i in sorted(random.Random(f"subset/{seed}").sample(range(len(examples)), n))]


class GSM8K(MathTask):
    """Grade-school word problems; expert = the gold rationale, cleaned (math_data.gsm8k_solution)."""
    name, train_source, test_source = "gsm8k", "openai/gsm8k:main@train", "openai/gsm8k:main@test"


MATH_SUBJECTS = "algebra,counting_and_probability,geometry,intermediate_algebra,number_theory,prealgebra,precalculus"


class MATH(MathTask):
    """Hendrycks MATH, all seven subjects; expert = the gold solution, answer = its last \\boxed{}."""
    name = "math"
    train_source = f"EleutherAI/hendrycks_math:{MATH_SUBJECTS}@train"
    test_source = f"EleutherAI/hendrycks_math:{MATH_SUBJECTS}@test"


class EurusMath(MathTask):
    """The PRIME RL prompts rePIRL samples from, math only; no solutions: pair with --expert."""
    name = "eurus-math"
    train_source, test_source = "PRIME-RL/Eurus-2-RL-Data@train", "PRIME-RL/Eurus-2-RL-Data@validation"


class MATH500(MathTask):
    name, test_source = "math500", "HuggingFaceH4/MATH-500@test"


class AIME24(MathTask):
    name, test_source = "aime24", "HuggingFaceH4/aime_2024@train"


class AMC23(MathTask):
    name, test_source = "amc23", "math-ai/amc23@test"


class Minerva(MathTask):
    name, test_source = "minerva", "math-ai/minervamath@test"


class OlympiadBench(MathTask):
    name, test_source = "olympiadbench", "Hothan/OlympiadBench:OE_TO_maths_en_COMP@train"


# ----------------------------------------------------------------------------- expert data and group filter

def load_expert(path: str, task=None, tokenizer=None, max_tokens: int = 0,
                skip_bad: bool = False) -> dict[str, list[str]]:
    """Expert trajectories from a JSONL file of {"prompt", "response", "answer"?} records.

    Returns prompt -> responses, in file order. `prompt` is the question as the data set states
    it (`Example.prompt`, no template), compared after stripping surrounding whitespace. A bad
    record raises ValueError naming path:line, or with `skip_bad` is skipped and counted: a line
    that is not UTF-8 or not JSON (math_data.read_jsonl), no string 'prompt' or 'response', a
    response `response_problem` refuses, the same prompt and response twice (several responses
    to one prompt are fine). An empty file raises.
    """
    bad = math_data.BadRecords(path, skip_bad)
    expert, first_seen = {}, {}
    for where, record in math_data.read_jsonl(path, bad):
        prompt, response = record.get("prompt"), record.get("response")
        if not isinstance(prompt, str) or not isinstance(response, str):
            name, value = ("prompt", prompt) if not isinstance(prompt, str) else ("response", response)
            found = f"no {name!r}" if value is None else f"{name!r} has type {type(value).__name__}"
            bad(where, f"{found}; expected string fields 'prompt' and 'response'")
            continue
        key = (prompt.strip(), response)
        if problem := response_problem(response, task, tokenizer, max_tokens):
            bad(where, problem)
        elif key in first_seen:
            bad(where, f"the same prompt and response as {first_seen[key]}; expected each trajectory once")
        else:
            first_seen[key] = where
            expert.setdefault(key[0], []).append(response)
    bad.report()
    return expert


def response_problem(response: str, task=None, tokenizer=None, max_tokens: int = 0) -> str | None:
    """What makes an expert response unusable (None: nothing): it is empty; `task` reads no final
    answer in it (task.final_answer, what its reward reads); with its EOS it has more than
    `max_tokens` tokens of `tokenizer` (train.py's --max-new-tokens: the policy could never write it)."""
    if not response.strip():
        return "empty response; expected the expert's solution text"
    if task is not None and task.final_answer(response) is None:
        return (f"no final answer the {task.name} task can read (response ends {response[-40:]!r}); "
                f"expected {task.answer_form}")
    if max_tokens and (n := len(tokenizer(response, add_special_tokens=False).input_ids) + 1) > max_tokens:
        return f"response of {n} tokens with its EOS; expected at most {max_tokens} (max_new_tokens)"
    return None


def attach_expert(examples: list[Example], expert: dict[str, list[str]]) -> list[Example]:
    """The examples that have an expert trajectory, each with the first one as its `solution`.

    Examples without one are dropped (Algorithm 1 needs the expert side of every prompt) and
    counted in a logged warning.
    """
    kept = [dataclasses.replace(ex, solution=expert[ex.prompt.strip()][0])
            for ex in examples if ex.prompt.strip() in expert]
    if len(kept) < len(examples):
        log.warning(f"expert data covers {len(kept)} of {len(examples)} prompts; the others are dropped")
    return kept


GROUP_FILTERS = {"off": (0.0, 1.0), "mixed": (0.2, 0.8), "some-correct": (1e-6, 1.0), "all-fail": (0.0, 0.0)}
"""Named accuracy ranges [lo, hi] of `filter_groups` (train.py's --filter-groups)."""


def filter_groups(r_o, k: int, lo: float = 0.2, hi: float = 0.8) -> list[bool]:
    """Keep-mask over prompts: True where the accuracy of the prompt's k rollouts lies in [lo, hi].

    r_o: (N,) outcome rewards in {0, 1} (a tensor or a list), N = G * k, the k rollouts of a
    prompt in adjacent rows (rollout.Batch's layout). Returns (G,) booleans. All-correct and
    all-wrong groups have zero RLOO advantage and no failed (or no correct) rollout for Eqn 5,
    so they carry no signal; the loop samples more prompts than it needs and keeps the first
    kept groups (rePIRL and PRIME filter at [0.2, 0.8]).
    """
    values = [float(v) for v in (r_o.tolist() if hasattr(r_o, "tolist") else r_o)]
    if k < 1 or len(values) % k:
        raise ValueError(f"filter_groups: {len(values)} rewards do not split into groups of k={k}")
    accuracy = [sum(values[g * k:(g + 1) * k]) / k for g in range(len(values) // k)]
    return [lo - 1e-9 <= a <= hi + 1e-9 for a in accuracy]


# ----------------------------------------------------------------------------- code tasks
#
# A code task's outcome reward r_o runs the program the policy wrote against the problem's tests:
#   code = sandbox.extract_code(completion)     # the LAST ```python (or untagged) block; none -> 0.0
#   r_o  = 1.0 if sandbox.run_tests(preamble + code, tests) == 1.0 else 0.0
# All-pass is the reward rePIRL and PRIME train and evaluate with (a program is correct or it is
# not); `code_reward="fraction"` gives the fraction of tests passed instead, for diagnostics. A
# timeout, a crash, a memory or output limit, or a missing code block is a failed test, never an
# exception (sandbox.py runs each test in its own contained process). Known hole: sandbox.py passes
# an {"assert"} test on exit status 0, so a program that exits early (os._exit(0)) passes every
# assert test; tests/test_code_tasks.py pins it with a strict xfail until sandbox.py asks for
# positive evidence (a per-run token printed after the asserts).
#
# `Example.answer` is the JSON list of the problem's tests in sandbox form ({"input", "output"}
# or {"assert"}); `Example.solution` a reference trajectory (text ending in a fenced program).
#
# Batched rewards: `task.rewards(completions, examples) -> list[float]` runs every program of a
# batch in parallel (sandbox.run_many); `task.reward(completion, example)` is the one-item case.
#
# | task | train prompts (expert) | test | default source (layouts: code_data.py) |
# | --- | --- | --- | --- |
# | code-synth | generated one-line functions (programmatic expert) | generated, held out | none |
# | eurus-code | Eurus-2-RL-Data, ability "code" (no expert: --expert) | its validation split, code rows | PRIME-RL/Eurus-2-RL-Data |
# | leetcode | none | LeetCode contest 2023-07..2024-01, 180 | TechxGenus/LeetCode-Contest @ train |
# | leetcodedataset | LeetCodeDataset train (reference responses) | LeetCodeDataset test | newfacade/LeetCodeDataset |
# | livecodebench | none | LiveCodeBench, public tests, contest dates in a window | livecodebench/code_generation_lite:release_v5 @ test |
# | code-jsonl | a local file (`data`) of any layout | `test_data`, or `n_test` held out | none |

CODE_INSTRUCTION = ("Write Python code to solve the problem. Present the code in \n```python\nYour code\n```\n"
                    "at the end.")
CODE_REWARDS = ("all", "fraction")


def build_code_prompt(question: str, tokenizer=None, style: str = "auto") -> str:
    """`build_prompt` for code: the same chat / plain choice, with CODE_INSTRUCTION (Eurus' own
    wording, so a model trained on Eurus prompts sees the same request) instead of the \\boxed{} one."""
    return build_prompt(question, tokenizer, style, CODE_INSTRUCTION)


class ExecutionReward:
    """The outcome reward of every code task: run the extracted program on the example's tests.

    Subclasses set `preamble` (text put before every extracted program) and call `set_limits`.
    """

    preamble = ""
    answer_form = "a fenced ```python block"
    final_answer = staticmethod(sandbox.extract_code)           # the program the reward runs (None: none)

    def set_limits(self, code_reward: str, timeout: float, memory_mb: int, workers: int):
        """code_reward: all | fraction; timeout (wall-clock seconds) and memory_mb apply per test
        run; workers: parallel runs in `rewards` (0: one per CPU core)."""
        if code_reward not in CODE_REWARDS:
            raise ValueError(f"code_reward {code_reward!r}: expected one of {', '.join(CODE_REWARDS)}")
        if timeout <= 0 or memory_mb <= 0 or workers < 0:
            raise ValueError(f"need timeout > 0, memory_mb > 0, workers >= 0; got {timeout}, {memory_mb}, {workers}")
        self.code_reward, self.timeout, self.memory_mb, self.workers = code_reward, timeout, memory_mb, workers

    def program(self, completion: str) -> str | None:
        """The program a completion is scored as: preamble + its last fenced block (None: no block)."""
        code = sandbox.extract_code(completion)
        return None if code is None else self.preamble + code

    def rewards(self, completions: list[str], examples: list[Example]) -> list[float]:
        """r_o of each (completion, example) pair, all programs run in parallel (sandbox.run_many)."""
        if len(completions) != len(examples):
            raise ValueError(f"{len(completions)} completions for {len(examples)} examples")
        jobs = [(self.program(c), json.loads(ex.answer)) for c, ex in zip(completions, examples)]
        passed = sandbox.run_many(jobs, workers=self.workers or None, timeout=self.timeout,
                                  memory_mb=self.memory_mb)                     # fraction of tests, per job
        return [float(p == 1.0) if self.code_reward == "all" else p for p in passed]

    def reward(self, completion: str, ex: Example) -> float:
        return self.rewards([completion], [ex])[0]


class CodeSynth(ExecutionReward):
    """One-line functions of one integer, stated in words; the expert writes the program.

        prompt:   Write f(x) returning x times 3 plus 2.
        expert:   ```python
                  def f(x): return x*3+2
                  ```
        test:     assert f(-4) == -10 ... (four inputs, one test: one process per completion)

    Nine families (x*a+b, x*a-b, (x+a)*b, x*x+b, x*x-b, max, min, x%a, abs(x-a)) with small
    constants give 882 distinct problems; they are shuffled by the seed, the first `n_test` are
    the held-out split and never appear in training. Every expert completion is at most 40
    characters, so it fits train.py's default --max-new-tokens (40, one token per character).
    The task is easy on purpose: 300 steps of behaviour cloning give the tiny model about 0.99
    held-out greedy accuracy, while about 80% of its temperature-1 samples pass, so the loop has
    both correct and failed rollouts to learn from.
    """

    name = "code-synth"
    FAMILIES = (  # words, code, the function it computes, range of a, range of b
        ("x times {a} plus {b}", "x*{a}+{b}", lambda x, a, b: x * a + b, range(2, 10), range(1, 30)),
        ("x times {a} minus {b}", "x*{a}-{b}", lambda x, a, b: x * a - b, range(2, 10), range(1, 30)),
        ("x plus {a}, times {b}", "(x+{a})*{b}", lambda x, a, b: (x + a) * b, range(1, 20), range(2, 10)),
        ("x squared plus {b}", "x*x+{b}", lambda x, a, b: x * x + b, [0], range(1, 50)),
        ("x squared minus {b}", "x*x-{b}", lambda x, a, b: x * x - b, [0], range(1, 50)),
        ("the larger of x and {a}", "max(x,{a})", lambda x, a, b: max(x, a), range(0, 50), [0]),
        ("the smaller of x and {a}", "min(x,{a})", lambda x, a, b: min(x, a), range(0, 50), [0]),
        ("x mod {a}", "x%{a}", lambda x, a, b: x % a, range(2, 20), [0]),
        ("the distance from x to {a}", "abs(x-{a})", lambda x, a, b: abs(x - a), range(0, 50), [0]),
    )
    INPUTS = range(-9, 21)                             # each problem is tested on four of these

    def __init__(self, n_train: int = 0, n_test: int = 200, seed: int = 0, code_reward: str = "all",
                 timeout: float = 2.0, memory_mb: int = 256, workers: int = 0):
        self.set_limits(code_reward, timeout, memory_mb, workers)
        problems = [(words.format(a=a, b=b), code.format(a=a, b=b), fn, a, b)
                    for words, code, fn, a_range, b_range in self.FAMILIES for a in a_range for b in b_range]
        if not 0 < n_test < len(problems):
            raise ValueError(f"code-synth has {len(problems)} problems; n_test must lie in 1..{len(problems) - 1}")
        random.Random(f"code-synth-{seed}").shuffle(problems)
        examples = [self.make(*p) for p in problems]
        self.test, self.train = examples[:n_test], examples[n_test:]
        if n_train > 0:
            self.train = self.train[:n_train]

    def make(self, words: str, code: str, fn, a: int, b: int) -> Example:
        """One problem: prompt, its test (four asserts in one program) and the expert program."""
        xs = random.Random(f"code-synth/{code}").sample(self.INPUTS, 4)
        test = "\n".join(f"assert f({x}) == {fn(x, a, b)}" for x in xs)
        return Example(id=code, prompt=f"Write f(x) returning {words}.", answer=json.dumps([{"assert": test}]),
                       solution=f"```python\ndef f(x): return {code}\n```")

    def render(self, ex: Example, tokenizer=None) -> str:
        return ex.prompt + "\n"


class CodeTask(ExecutionReward, MathTask):
    """A code data set: problems, their tests and, where the data has them, reference solutions.

    Sources and splits work as for `MathTask` (data / test_data, n_train / n_test, a seeded
    hold-out when there is no test source, each split loaded when first used); only the record
    layouts (code_data.py), the prompt (`build_code_prompt`) and the reward (`ExecutionReward`,
    with code_data.PREAMBLE, the imports LeetCode-style solutions assume) differ. `max_tests`
    keeps the first tests of each problem (0: all; every test is one sandbox process).
    """

    name = "code-jsonl"
    preamble = code_data.PREAMBLE
    kind = "code"

    def __init__(self, data: str = "", test_data: str = "", n_train: int = 0, n_test: int = 0,
                 prompt_style: str = "auto", seed: int = 0, code_reward: str = "all", timeout: float = 5.0,
                 memory_mb: int = 1024, workers: int = 0, max_tests: int = 0, skip_bad: bool = False):
        super().__init__(data, test_data, n_train, n_test, prompt_style, seed, skip_bad)
        self.set_limits(code_reward, timeout, memory_mb, workers)
        self.max_tests = max_tests

    def fields(self, record: dict):
        """Question, tests and solution of one record (code_data.to_fields: None for a record that is not
        code; ValueError for a record with no question, no test, or tests that do not parse)."""
        return code_data.to_fields(record)

    def example(self, f, id: str, where: str) -> Example:
        """The Example of a record's fields: its tests (the first `max_tests`) as the answer, in JSON."""
        tests = f.tests[:self.max_tests] if self.max_tests > 0 else f.tests
        return Example(id=id, prompt=f.question, answer=json.dumps(tests), solution=f.solution, where=where)

    def render(self, ex: Example, tokenizer=None) -> str:
        return build_code_prompt(ex.prompt, tokenizer, self.prompt_style)


class EurusCode(CodeTask):
    """The coding half of the PRIME RL prompts rePIRL samples from; no solutions: pair with --expert.

    Tests are stdin/stdout pairs or call asserts (code_data.py); PRIME scores all of them, in one
    process, and falls back to the first 10 one by one; here the first `max_tests` (10) are kept."""
    name = "eurus-code"
    train_source, test_source = "PRIME-RL/Eurus-2-RL-Data@train", "PRIME-RL/Eurus-2-RL-Data@validation"

    def __init__(self, data: str = "", test_data: str = "", n_train: int = 0, n_test: int = 0,
                 prompt_style: str = "auto", seed: int = 0, code_reward: str = "all", timeout: float = 5.0,
                 memory_mb: int = 1024, workers: int = 0, max_tests: int = 10, skip_bad: bool = False):
        super().__init__(data, test_data, n_train, n_test, prompt_style, seed, code_reward, timeout, memory_mb,
                         workers, max_tests, skip_bad)


class LeetCode(CodeTask):
    """DeepSeek-Coder's LeetCode contest set (2023-07..2024-01, 180 problems), which PRIME evaluates
    on: one assert script per problem, run on `Solution()`."""
    name, test_source = "leetcode", "TechxGenus/LeetCode-Contest@train"


class LeetCodeDataset(CodeTask):
    """LeetCodeDataset (human-eval format): a training split with reference responses (expert
    trajectories: reasoning, then the program) and a later-dated test split."""
    name = "leetcodedataset"
    train_source, test_source = "newfacade/LeetCodeDataset@train", "newfacade/LeetCodeDataset@test"


class LiveCodeBench(CodeTask):
    """LiveCodeBench code generation (lite), public tests only (code_data.py says why), problems whose
    contest_date lies in [start_date, end_date] (ISO dates; "" leaves that end open). The default
    window 2024-08-01..2024-11-30 is the one PRIME reports ("LiveCodeBench 2408-2411")."""
    name, test_source = "livecodebench", "livecodebench/code_generation_lite:release_v5@test"

    def __init__(self, data: str = "", test_data: str = "", n_train: int = 0, n_test: int = 0,
                 prompt_style: str = "auto", seed: int = 0, code_reward: str = "all", timeout: float = 5.0,
                 memory_mb: int = 1024, workers: int = 0, max_tests: int = 0, start_date: str = "2024-08-01",
                 end_date: str = "2024-11-30", skip_bad: bool = False):
        super().__init__(data, test_data, n_train, n_test, prompt_style, seed, code_reward, timeout, memory_mb,
                         workers, max_tests, skip_bad)
        self.start_date, self.end_date = start_date, end_date

    def keep(self, record: dict) -> bool:
        day = str(record.get("contest_date") or "")[:10]                        # "2024-08-03T00:00:00" -> date
        return (not self.start_date or day >= self.start_date) and (not self.end_date or day <= self.end_date)


# ----------------------------------------------------------------------------- registry

TASKS = {cls.name: cls for cls in (Arithmetic, GSM8K, MATH, EurusMath, MATH500, AIME24, AMC23, Minerva,
                                   OlympiadBench, MathTask,
                                   CodeSynth, EurusCode, LeetCode, LeetCodeDataset, LiveCodeBench, CodeTask)}


def get_task(name: str, **kwargs):
    """Build a task by name; kwargs a task does not take are ignored, so one CLI serves all."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


if __name__ == "__main__":
    import cli

    @dataclass
    class Args:
        task: str = "arithmetic"
        """a task of this file (arithmetic, gsm8k, math, jsonl, ...)"""
        data: str = ""
        """the train split's source, not the task's default (hub id, folder, file)"""
        test_data: str = ""
        """the test split's source, not the task's default"""

    args = Args(**vars(cli.dataclass_parser(Args, "print a few examples of a task", positional=("task",)).parse_args()))
    if args.task not in TASKS:
        raise SystemExit(f"task {args.task!r}: expected one of {', '.join(sorted(TASKS))}")
    task = get_task(args.task, data=args.data, test_data=args.test_data)
    print(f"{task.name}: {len(task.train)} train, {len(task.test)} test examples")
    for ex in (task.train or task.test)[:3]:
        print(repr(task.render(ex)), "->", repr(ex.solution), "| answer", ex.answer)
