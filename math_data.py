"""Math data sets on disk and on the hub: where the records come from and what their fields mean.

`tasks.py` turns records into `Example`s; this file knows the record layouts, so that the task
chapter stays about tasks. Two functions:

    load_records(source) -> list[dict]       # a hub id, a local folder, or a .jsonl/.json/.parquet file
    to_fields(record) -> Fields | None       # one record of any layout below -> question, answer, solution

A `.jsonl` file is read line by line (`read_jsonl`), so a bad line is named `path:line`: not UTF-8,
not a JSON object; an empty file is refused. `to_fields` refuses a record with no question or
answer, or a field of the wrong type. `BadRecords` turns each of these into a ValueError, or, with
`skip_bad`, skips and counts them and reports one line per file.

A source is written `ID_OR_PATH[:CONFIG[,CONFIG...]][@SPLIT]`:

    openai/gsm8k:main@train                   # datasets.load_dataset("openai/gsm8k", "main", split="train")
    EleutherAI/hendrycks_math:algebra,geometry@test     # two configs, concatenated
    path/to/gsm8k                             # a local copy of the hub folder: the task's config and split
    math-ai/olympiadbench@test                # another hub copy: name its split unless it has only one
    path/to/train.jsonl   path/to/test.parquet  # a local file, read whole (load_dataset("json"/"parquet"))

Hub ids never contain ':' or '@', so the suffixes are unambiguous; an existing local path is
taken as it is.

The layouts (fields as the hub copies name them; keys are matched case-insensitively, so a copy
spelling them `Problem`/`Answer` loads too):

| layout | hub copy: config @ split (rows) | fields | gold answer | expert solution |
| --- | --- | --- | --- | --- |
| GSM8K | openai/gsm8k: main @ train (7473), test (1319) | question, answer | after "#### " in answer | answer, cleaned (see below) |
| MATH | EleutherAI/hendrycks_math: 7 subject configs @ train (7500), test (5000) | problem, level, type, solution | last \\boxed{} of solution | solution |
| MATH-500 | HuggingFaceH4/MATH-500 @ test (500) | problem, solution, answer, subject, level, unique_id | answer | solution |
| AIME 2024 | HuggingFaceH4/aime_2024 @ train (30) | id, problem, solution, answer, url, year | answer | solution |
| AMC 2023 | math-ai/amc23 @ test (40) | id, question, answer, url | answer (a number) | none |
| Minerva Math | math-ai/minervamath @ test (272) | question, answer | answer | none |
| OlympiadBench | Hothan/OlympiadBench: OE_TO_maths_en_COMP @ train (675) | id, question, solution [list], final_answer [list], context, ... | final_answer joined by ", " | solution joined |
| Eurus-2-RL | PRIME-RL/Eurus-2-RL-Data @ train (~480k), validation (~2k) | data_source, prompt [chat messages], ability, reward_model {ground_truth, style}, extra_info {split, index} | reward_model.ground_truth | none |
| expert file | any .jsonl | prompt, response, answer | answer | response |

How a record is read (`to_fields`), first rule that applies:
1. `reward_model` (Eurus, veRL-style): question = the last user message of `prompt`, without Eurus'
   own instruction suffix ("Present the answer in LaTex format: \\boxed{Your answer}", our prompt
   template adds its own); answer = `reward_model.ground_truth`. Records whose `ability` is not
   "math" (Eurus also holds code problems) are skipped.
2. `final_answer` (OlympiadBench): question = `context` + `question`; answer = the list joined.
3. otherwise question = `problem` | `question` | `prompt`; answer = `answer`, or, when it holds
   "####", the GSM8K answer after it, or, when there is no `answer`, the last \\boxed{} of
   `solution`; solution = `solution` | `response`.

GSM8K expert text: its rationales carry calculator annotations ("48/2 = <<48/2=24>>24") and end in
"#### 72". Both are removed and the rationale ends "The final answer is \\boxed{72}." instead:
in inverse RL the reward model learns what separates expert from policy text, and a policy
never writes "<<...>>" nor "####" (it is told to answer in \\boxed{}), so those tokens would
hand the PRM a trivial, useless feature.
"""
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from grader import extract_answer

log = logging.getLogger(__name__)

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class Fields(NamedTuple):
    id: str | None            # the record's own id, if it has one
    question: str
    answer: str
    solution: str | None


# ----------------------------------------------------------------------------- loading

class BadRecords:
    """The bad records of one source: the first raises ValueError("where: what; expected ..."), or,
    with `skip_bad`, each is counted and `report` logs one line for all of them."""

    def __init__(self, source: str, skip_bad: bool = False):
        self.source, self.skip_bad, self.count, self.first = source, skip_bad, 0, None

    def __call__(self, where: str, problem: str):
        if not self.skip_bad:
            raise ValueError(f"{where}: {problem}")
        self.count, self.first = self.count + 1, self.first or f"{where}: {problem}"

    def report(self):
        if self.count:
            log.warning(f"skipped {self.count} bad records in {self.source} (first: {self.first})")


def load_records(source: str, like: str = "") -> list[dict]:
    """All records of one source (syntax: module docstring) as plain dicts; a bad .jsonl line raises."""
    return [record for _, record in load_located(source, like, BadRecords(source))]


def load_located(source: str, like: str, bad: BadRecords) -> Iterable[tuple[str, dict]]:
    """(where, record) for every record of one source: `path:line` in a .jsonl file, else `source[i]`.

    `like` is the task's default source: a local folder, or the same hub id, that names no
    config or split takes those of `like` (so a local copy of a hub folder loads as the hub copy
    does). Otherwise a source without a split must have exactly one. A file is read whole.
    """
    import datasets  # lazy: the synthetic task must not pay for it

    path, configs, split = parse_source(source)
    like_path, like_configs, like_split = parse_source(like) if like else ("", [None], None)
    if not os.path.exists(path) and os.path.splitext(path)[1].lower() in FILE_FORMATS:
        raise ValueError(f"{source}: no such file; expected an existing {', '.join(FILE_FORMATS)} file or a hub id")
    if os.path.isfile(path):
        ext = os.path.splitext(path)[1].lower()
        if ext not in FILE_FORMATS:
            raise ValueError(f"{source}: a data file must end in {', '.join(FILE_FORMATS)}")
        if ext == ".jsonl":
            return read_jsonl(path, bad)
        return indexed(source, datasets.load_dataset(FILE_FORMATS[ext], data_files=path, split="train"))
    if os.path.isdir(path) or path == like_path:
        configs, split = (configs if configs != [None] else like_configs), (split or like_split)
    records = []
    for config in configs:
        part = datasets.load_dataset(path, config, split=split)
        if split is None:                                         # a DatasetDict: take its only split
            if len(part) != 1:
                raise ValueError(f"{source} has splits {', '.join(part)}: name one, e.g. {path}@{next(iter(part))}")
            part = next(iter(part.values()))
        records.extend(part)
    return indexed(source, records)


def indexed(source: str, records) -> list[tuple[str, dict]]:
    """(source[i], record) pairs: where a record of a hub split, a parquet or a .json file sits."""
    return [(f"{source}[{i}]", record) for i, record in enumerate(records)]


def read_jsonl(path: str, bad: BadRecords) -> Iterator[tuple[str, dict]]:
    """(path:line, record) for every non-blank line of a JSONL file, in file order. A line that is not
    UTF-8 or not one JSON object goes to `bad` (which raises or counts it); a file with no record raises."""
    empty = True
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad(where, f"byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8; expected UTF-8 text")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                bad(where, f"not a JSON record ({e.msg} at column {e.pos + 1}); expected one JSON object per line")
                continue
            if not isinstance(record, dict):
                bad(where, f"a JSON {type(record).__name__}; expected one JSON object per line")
                continue
            empty = False
            yield where, record
    if empty and not bad.count:
        raise ValueError(f"{path}: empty file; expected one JSON object per line")


def parse_source(source: str) -> tuple[str, list[str | None], str | None]:
    """'openai/gsm8k:main@train' -> ('openai/gsm8k', ['main'], 'train'); an existing path stays whole."""
    if os.path.exists(source):
        return source, [None], None
    rest, _, split = source.partition("@")
    path, _, configs = rest.partition(":")
    return path, (configs.split(",") if configs else [None]), (split or None)


# ----------------------------------------------------------------------------- record -> fields

EURUS_SUFFIX = re.compile(r"\s*Present the answer in LaTex format: \\boxed\{Your answer\}\s*$")
CALCULATOR = re.compile(r"<<[^<>]*>>")
TEXT = (str, int, float, list)                      # a list: chat messages, or OlympiadBench's parts
FIELD_TYPES = {"reward_model": (dict,)} | dict.fromkeys(
    ("problem", "question", "prompt", "context", "answer", "final_answer", "solution", "response"), TEXT)


def to_fields(record: dict) -> Fields | None:
    """Question, gold answer and solution of one record of any known layout; None to skip a record
    of another kind (Eurus' code problems). ValueError, saying what was found and what was
    expected, for a record with no question or answer, an empty solution, or a field of the wrong type."""
    r = {k.lower(): v for k, v in record.items()}
    for key, types in FIELD_TYPES.items():
        if r.get(key) is not None and not isinstance(r[key], types):
            raise ValueError(f"field {key!r} has type {type(r[key]).__name__}; expected "
                             + " or ".join(t.__name__ for t in types))
    rid = r.get("id", r.get("unique_id"))
    solution = _text(r.get("solution", r.get("response")), sep="\n\n")
    if r.get("reward_model") is not None:                                         # 1) Eurus / veRL
        if r.get("ability") not in (None, "math"):
            return None
        question = EURUS_SUFFIX.sub("", _user_message(r.get("prompt")) or "")
        answer = _text(r["reward_model"].get("ground_truth"))
        rid = rid if rid is not None else (r.get("extra_info") or {}).get("index")
    elif r.get("final_answer") is not None:                                       # 2) OlympiadBench
        question = "\n".join(part for part in (_text(r.get("context")), _text(r.get("question"))) if part)
        answer = _text(r["final_answer"])
    else:                                                                         # 3) the rest
        question = _user_message(next((r[k] for k in ("problem", "question", "prompt") if r.get(k)), None))
        answer = _text(r.get("answer"))
        if answer and "####" in answer:                                           # GSM8K rationale
            answer, solution = _last_line_after_hashes(answer), gsm8k_solution(answer)
        elif not answer and solution:                                             # MATH: boxed
            answer = extract_answer(solution)
    if not question or not question.strip():
        raise ValueError("no question; expected a non-empty 'problem', 'question' or 'prompt' field")
    if not answer or not answer.strip():
        raise ValueError("no answer; expected a non-empty 'answer', 'final_answer', 'reward_model.ground_truth' "
                         "or a \\boxed{} in 'solution'")
    if solution is not None and not solution.strip():
        raise ValueError("empty solution; expected the expert's text, or no 'solution' / 'response' field")
    return Fields(None if rid is None else str(rid), question.strip(), answer.strip(), solution)


def gsm8k_solution(rationale: str) -> str:
    """A GSM8K rationale as expert text: no <<calculator>> annotations, a \\boxed{} final answer."""
    body = CALCULATOR.sub("", rationale.rpartition("####")[0]).strip()
    return f"{body}\nThe final answer is \\boxed{{{_last_line_after_hashes(rationale)}}}."


def _last_line_after_hashes(rationale: str) -> str:
    """GSM8K's final answer: the rest of the line after the last "####" ("" if there is none)."""
    return (rationale.rpartition("####")[2].strip().splitlines() or [""])[0].strip()


def _user_message(prompt) -> str | None:
    """The text of a prompt field: a string, or the last user turn of a list of chat messages."""
    if not isinstance(prompt, (list, tuple)):
        return _text(prompt)
    users = [m.get("content") for m in (prompt or []) if m.get("role") == "user"]
    return users[-1] if users else None


def _text(value, sep: str = ", ") -> str | None:
    """A field as text: a list joined by `sep` (OlympiadBench's final_answer and solution are
    lists), a whole float without its ".0" (AMC stores 27.0), None as None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [_text(v) for v in value]
        return sep.join(p for p in parts if p) or None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
