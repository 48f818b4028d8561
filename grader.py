"""Math answer grading: the outcome reward r_o(tau) in {0, 1} of Algorithm 1, step 3.

    grade(completion, gold_answer) = 1.0 if is_equiv(extract_answer(completion), gold_answer)

Three steps, each a public function, read top to bottom in this file:

1. `extract_answer(text)` finds the final answer of a model completion or a gold solution, by
   the first rule that finds one:
   a. the LAST `\\boxed{...}` / `\\fbox{...}` whose braces nest correctly (or `\\boxed 5`), joined
      with the boxes just before it when only separators stand between them (spaces, `$`, `,;.`,
      brackets, `\\quad`, "and", "or", `\\text{ and }`): `\\boxed{-2} and \\boxed{1}` is "-2, 1";
      the same box twice in a row counts once;
   b. the last GSM8K `#### N`;
   c. the last "Answer: ..." / "answer is ..." phrase, to the end of its sentence, read as in d:
      "The final answer is $(0, 1)$. I hope it is correct." -> "$(0, 1)$"; "Answer: the largest
      $n$ is 34." -> "34";
   d. the text itself when it holds no words nor box (a bare answer such as `$[0,1)$` or
      `\\frac{10}{9}`), else its last math (`$...$` on one line, `$$...$$`, `\\(...\\)`,
      `\\[...\\]`) or number (`-1,234.5`, `.4`, `2/3`, `1\\,000`), whichever ends later; else None.
2. `normalize(ans)` rewrites an answer into a canonical string. Text-level: no `$`,
   `\\left`/`\\right`, spacing commands, `\\text{}`-like wrappers (a trailing one after a number
   is a unit and goes: `125\\textnormal{ miles}` -> "125"), degrees, percent signs and words
   ("28 percent", "28 pct"); `\\dfrac`/`\\tfrac`/`\\cfrac` -> `\\frac`; `\\frac12` -> `\\frac{1}{2}`;
   doubled escapes `\\\\frac` -> `\\frac` (outside matrices); `\\geq` -> ">=" and the like;
   `bmatrix`/`array` -> `pmatrix`; thousands separators ("1,000", `14{,}916`, `1,\\!000`,
   `1\\,000`) removed; "and" / "or" between answers -> ","; an outer `{...}` group removed;
   whitespace removed except one space between two letters. Then each element (of a tuple, set,
   list or matrix, or the whole answer) is reduced to its value, repeatedly:
     "x \\in S" -> S;  "-2 <= x <= 7" -> "[-2,7]";  a chain with a name in it, "x = 5+5+1 = 7 = 11",
     "(p,q)=(3,2)", "x = 1/3 \\approx 0.33" -> its last side not after `\\approx` ("11", "(3,2)",
     "1/3"); a number's unit word ("12 cm^2" -> "12"); a ratio of numbers "7:32" -> "7/32";
     "(x)" and "[x]" -> "x".
3. `is_equiv(pred, gold)` decides sameness, cheapest test first: equal normalized strings;
   structure (sets, tuples, intervals, lists, matrices) element by element; for one element:
   equal strings, equal exact numbers, then sympy (a - b == 0; for relations, lhs - rhs of one
   side a constant multiple of the other's: positive for inequalities).

The rules, including the ones graders disagree on:
- Numbers compare exactly, as fractions: "0.5" == "1/2" == "\\frac{2}{4}", "0.33" != "1/3";
  decimals inside sympy expressions are exact too. Scientific notation is a number: "1e3" ==
  "1.0 \\times 10^{3}" == "1000" (exponents up to 1000).
- Percent: the sign or word is dropped, so "50\\%" == "50" and "50\\%" != "0.5".
- Thousands separators: "1,234" is 1234 only when the whole answer is such a number (no space
  after the commas); inside brackets and in "1,2" or "32, 349" the comma separates elements.
- Sequences: "(1, 2)" and "[1, 2)" are compared element-wise and the brackets must match:
  "(1,2)" != "[1,2]" and "(1,2)" != "1,2". A bare list "1, 2" (also "1; 2", "1 and 2") is a set
  of solutions, and so is a set `\\{1, 2\\}`: any order. Against a set, a tuple or list may come in
  any order too: `\\{1,2\\}` == "(2,1)" == "2, 1".
- Relations: "x >= 5" == "5 \\leq x" == "-x <= -5"; "x^2/4 + y^2/3 = 1" == "3x^2 + 4y^2 = 12".
  An equation is not its right-hand side unless its left is a name: "7 = 11a+c" != "11a+c".
- Letters are single-letter symbols and juxtaposition multiplies ("2ab" == "2ba"); `i` is the
  imaginary unit, `e` is Euler's number. A run of more than 3 letters that is not a known
  function (sqrt, sin, cos, tan, sec, csc, cot, log, ln, exp, pi) is a word, not algebra: only
  the string comparison can match it.

Safety. sympy's `parse_expr` runs Python `eval` on its input, so no answer reaches it
unchecked: after a small LaTeX-to-Python rewrite (\\frac, \\sqrt, \\pi, \\cdot, braces) the
string may hold only digits, whitespace, `+ - * / ^ ( ) .` (a dot only as a decimal point) and
the letter runs above; no underscore, quote, bracket, comma, backslash, relation sign or
attribute access survives (relations are split into their sides first), and anything longer
than 300 characters is refused. This file never calls `eval`/`exec` itself.

Time limit. Each sympy comparison (parsing included: `9^9^9^9` hangs already while parsing)
runs in a child process made with `os.fork()`, killed when `timeout` seconds have passed;
a timeout counts as "not equal". A process, unlike a thread, can always be stopped; unlike
SIGALRM it works from any thread; unlike `multiprocessing` it also works inside daemonic
workers (a `multiprocessing.Pool`, a DataLoader worker). sympy is imported lazily, in the
parent, the first time it is needed, and warmed up there once, so that every child starts
with it loaded. Cost: one fork per symbolic comparison (a few ms) plus sympy's own work
(typically 10-40 ms); the string and number fast paths never fork. Platforms without
`os.fork` (Windows) skip the sympy step.
"""

import contextlib
import fractions
import functools
import os
import re
import select
import signal
import string
from typing import NamedTuple

# ----------------------------------------------------------------------------------------------
# 1) extraction


def extract_answer(text: str) -> str | None:
    """The final answer in `text`, by the first rule that finds one (module docstring, step 1)."""
    for find in (_boxed_answer, _last_gsm8k, _answer_phrase, _from_prose):
        answer = find(text)
        if answer:
            return answer
    return None


_BOXED = re.compile(r"\\+(?:boxed|fbox)(?![A-Za-z])")  # `\\boxed` too: a doubled escape
_BOX_SEPARATOR = re.compile(
    r"(?:\s|[$,;.~\\()\[\]]|\\q?quad\b|\band\b|\bor\b|\\(?:text|textrm|mbox)\s*\{\s*(?:and|or)\s*\})*"
)


def _boxed_answer(text: str) -> str | None:
    """The last well-formed box, with the boxes just before it that only separators part."""
    boxes = _boxes(text)
    if not boxes:
        return None
    answer = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _BOX_SEPARATOR.fullmatch(text[box[2]:answer[0][1]]):
            break
        answer.insert(0, box)
    contents = [content for i, (content, _, _) in enumerate(answer) if i == 0 or content != answer[i - 1][0]]
    return ", ".join(contents)


def _boxes(text: str) -> list[tuple[str, int, int]]:
    """(contents, start, end) of every well-formed `\\boxed{...}`, `\\fbox{...}` or `\\boxed 5`."""
    found = []
    for match in _BOXED.finditer(text):
        group = _brace_group(text, match.end())
        bare = re.match(r"\s+([^\s${}]+)", text[match.end():])
        content, end = group if group else (bare[1], match.end() + bare.end()) if bare else ("", 0)
        if content.strip():
            found.append((content.strip(), match.start(), end))
    return found


def _brace_group(s: str, start: int) -> tuple[str, int] | None:
    """The `{...}` group at the first non-space from `start`: (contents, index past `}`).

    None when there is no `{` there or its braces never close.
    """
    i = start
    while i < len(s) and s[i].isspace():
        i += 1
    if i == len(s) or s[i] != "{":
        return None
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 1 : j], j + 1
    return None


def _last_gsm8k(text: str) -> str | None:
    """What follows the last GSM8K `####` marker, up to the end of its line."""
    found = re.findall(r"####[ \t]*(.*)", text)
    return found[-1].strip() if found else None


_ANSWER_MARKER = re.compile(r"answer\s*(?:is\b\s*:?|:)", re.IGNORECASE)


def _answer_phrase(text: str) -> str | None:
    """The answer in the last "Answer: ..." / "... answer is ..." phrase, read like prose.

    The phrase runs to the end of its line or sentence (a full stop before a space); markdown
    stars are removed: "**Answer:** $7$." -> "$7$".
    """
    markers = list(_ANSWER_MARKER.finditer(text))
    if not markers:
        return None
    phrase = re.split(r"\n|\.(?:\s|$)", text[markers[-1].end():])[0]
    return _from_prose(re.sub(r"^[\s*]+|[\s*]+$", "", phrase))


_COMMAND = re.compile(r"\\[A-Za-z]+(?:\{[A-Za-z*]*\})?")  # \frac, \text{cm}, \begin{pmatrix}
_WORD = re.compile(r"(?<![A-Za-z])[A-Za-z]{2,}")
_MATH = re.compile(
    r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\(([^\n]+?)\\\)|(?<!\\)\$((?:\\.|[^$\\\n])+)\$", re.DOTALL
)
_NUMBER = re.compile(  # not glued to a letter ("AZYUK2A"); thousands by ",", "{,}", ",\!" or "\,"
    r"(?<![A-Za-z\d.])-?(?:(?:\d{1,3}(?:(?:,|\{,\}|,\\!|\\,)\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+)?"
)


def _from_prose(text: str) -> str | None:
    """`text` itself when it holds no words (nor an empty box), else its last math or number."""
    if text.strip() and not _BOXED.search(text) and not _WORD.search(_COMMAND.sub(" ", text)):
        return text.strip()
    found = [(m.end(), next(g for g in m.groups() if g is not None)) for m in _MATH.finditer(text)]
    found += [(m.end(), m[0]) for m in _NUMBER.finditer(text)]
    return max(found)[1].strip() if found else None


# ----------------------------------------------------------------------------------------------
# 2) normalization: text-level rewrites, then each element reduced to its value


def normalize(ans: str) -> str:
    """A canonical string form of an answer (module docstring, step 2)."""
    return _show(_parse(_clean(ans)))


_TEXT_WRAPPER = re.compile(
    r"\\(?:text|textbf|textrm|textit|textnormal|textsf|texttt|mathrm|mathbf|mathit|mbox)\s*\{([^{}]*)\}"
)
_UNIT_WRAPPER = re.compile(  # a word in a wrapper after a number, at the end: "12\text{ cm}^2"
    r"(?<=[\d}])\s*\\(?:text|textnormal|textrm|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z\s.]*\}"
    r"\s*(?:\^\s*\{?[23]\}?)?\s*$"
)
_DOUBLED_ESCAPE = re.compile(r"(?<!\\)\\\\(?=[A-Za-z])")
_THOUSANDS_MARK = re.compile(r"(?:\{\s*,\s*\}|,\\!\s*)(?=\d{3}(?!\d))")
_DROPPED = re.compile(
    r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\displaystyle|\\q?quad(?![A-Za-z])|\\[!,;:]|\\[()\[\]]"
)
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
_RELATIONS = [
    (r"\\(?:geq?|geqslant)(?![A-Za-z])|≥", ">="),
    (r"\\(?:leq?|leqslant)(?![A-Za-z])|≤", "<="),
    (r"\\(?:neq?)(?![A-Za-z])|≠", "!="),
    (r"\\gt(?![A-Za-z])", ">"),
    (r"\\lt(?![A-Za-z])", "<"),
    (r"≈", "\\\\approx"),
]
_MATRIX = [
    (r"\\begin\{(?:[pbB]?matrix|array\}\{[^{}]*)\}", r"\\begin{pmatrix}"),
    (r"\\end\{(?:[pbB]?matrix|array)\}", r"\\end{pmatrix}"),
]
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _clean(ans: str) -> str:
    """The text-level rewrites of normalization (module docstring, step 2), one string out."""
    s = ans.strip()
    if "\\begin" not in s:
        s = _DOUBLED_ESCAPE.sub(r"\\", s)
    s = _UNIT_WRAPPER.sub("", s)
    while _TEXT_WRAPPER.search(s):
        s = _TEXT_WRAPPER.sub(r" \1 ", s)
    s = s.replace("\\$", "").replace("$", "").replace("~", " ")
    s = re.sub(r"(?<!\\)\\ ", " ", s)  # a control space, not the row break of "1 \\ 2"
    s = _THOUSANDS_MARK.sub("", s)
    s = _DROPPED.sub("", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"\\[dtc]frac(?![A-Za-z])", r"\\frac", s)
    s = _brace_short_arguments(s)
    for pattern, replacement in _RELATIONS + _MATRIX:
        s = re.sub(pattern, replacement, s)
    s = re.sub(r"\s+(?:and|or)\s+", ",", s)
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _squeeze_whitespace(s)
    while s.startswith("{") and _brace_group(s, 0) == (s[1:-1], len(s)):
        s = s[1:-1]
    return s


def _brace_short_arguments(s: str) -> str:
    """LaTeX single-token arguments get braces: \\frac12 -> \\frac{1}{2}, \\sqrt2 -> \\sqrt{2}."""
    s = re.sub(r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*([0-9A-Za-z])\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*([0-9A-Za-z])", r"\\frac\1{\2}", s)
    return re.sub(r"\\sqrt\s*([0-9A-Za-z])", r"\\sqrt{\1}", s)


def _squeeze_whitespace(s: str) -> str:
    """Remove whitespace, except one space between two letters (so `\\pi r` stays two tokens)."""
    s = re.sub(r"\s+", " ", s).strip()
    return re.sub(r"(?<![A-Za-z]) | (?![A-Za-z])", "", s)


class Seq(NamedTuple):
    """A structured answer: `kind` is "" (a bare list), "{}" (a set), "()", "[]", "(]", "[)"
    (tuples and intervals), "matrix" (items are rows) or "row" (items are a row's entries)."""
    kind: str
    items: list


Answer = str | Seq
_SET_OPEN, _SET_CLOSE = "\\{", "\\}"
_MATRIX_OPEN, _MATRIX_CLOSE = "\\begin{pmatrix}", "\\end{pmatrix}"
_MAX_DEPTH = 20


def _parse(s: str, depth: int = 0) -> Answer:
    """A cleaned answer as a tree: sequences split into elements, each element reduced.

    Below `_MAX_DEPTH` levels of nesting or reductions a string stays as it is, so no answer
    can exhaust Python's recursion limit.
    """
    seq = _split_sequence(s) if depth < _MAX_DEPTH else None
    if seq is None:
        value = _reduce(s) if depth < _MAX_DEPTH else s
        return s if value == s else _parse(value, depth + 1)
    kind, items = seq
    if kind == "matrix":
        return Seq(kind, [Seq("row", [_parse(x, depth + 2) for x in row.split("&")]) for row in items])
    return Seq(kind, [_parse(x, depth + 1) for x in items])


def _show(answer: Answer) -> str:
    """The canonical string of a parsed answer (the inverse of `_parse` on canonical strings)."""
    if isinstance(answer, str):
        return answer
    inner = [_show(x) for x in answer.items]
    if answer.kind == "matrix":
        return _MATRIX_OPEN + "\\\\".join(inner) + _MATRIX_CLOSE
    if answer.kind == "row":
        return "&".join(inner)
    if answer.kind == "{}":
        return _SET_OPEN + ",".join(inner) + _SET_CLOSE
    return answer.kind[:1] + ",".join(inner) + answer.kind[1:]


def _split_sequence(s: str) -> tuple[str, list[str]] | None:
    """(kind, elements) of a matrix, a set, a bracketed sequence of 2 or more, or a bare list."""
    if s.startswith(_MATRIX_OPEN) and s.endswith(_MATRIX_CLOSE) and s.count("\\begin") == 1:
        rows = re.split(r"\\\\", s[len(_MATRIX_OPEN) : -len(_MATRIX_CLOSE)])
        return "matrix", [row for row in rows if row]
    # a set when the `{` of `\{` closes at the very end: "\{1,2\}", not "\{1\}\cup\{2\}"
    if s.startswith(_SET_OPEN) and s.endswith(_SET_CLOSE) and _brace_group(s, 1) == (s[2:-2] + "\\", len(s)):
        items = _split_top_level(s[2:-2])
        return ("{}", items) if items else None
    kind, inner = "", s
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        kind, inner = s[0] + s[-1], s[1:-1]
    items = _split_top_level(inner)
    return (kind, items) if items and len(items) >= 2 else None


def _split_top_level(s: str) -> list[str] | None:
    """`s` split at commas and semicolons outside any bracket; None if a bracket never opened."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if depth < 0:
            return None
        if ch in ",;" and depth == 0:
            items.append(s[start:i])
            start = i + 1
    return items + [s[start:]]


_NAME = r"(?:[A-Za-z]|\\(?!pi(?![A-Za-z])|infty)[A-Za-z]+)(?:_\{?\w+\}?)?(?:\([^()]*\))?"
_NAMES = re.compile(rf"{_NAME}|\({_NAME}(?:,{_NAME})+\)")  # x, a_1, f(2), \theta, (p,q)
_UNITS = (
    r"(?:square |sq |cubic )?(?:dollars?|cents?|units?|cm|mm|km|meters?|inch(?:es)?|feet|foot"
    r"|ft|miles?|hours?|minutes?|seconds?|days?|weeks?|years?|degrees?|pounds?|kg|grams?|mph"
    r"|percent(?:age)?|pct)"
)
_TRAILING_UNIT = re.compile(r"(?<=[\d}])\s*" + _UNITS + r"(?:\^\{?[23]\}?)?$")
_PLAIN_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_CHAIN_SPLIT = re.compile(r"(?<![<>!])=|(?=\\approx(?![A-Za-z]))")
_INEQUALITY_SPLIT = re.compile(r"(<=|>=|<|>)")


def _reduce(s: str) -> str:
    """One element's value (module docstring, step 2); `s` itself when no rule applies."""
    member = re.fullmatch(rf"(?:{_NAME})\\in(?![A-Za-z])(.+)", s)
    if member:
        return member[1]
    parts = _INEQUALITY_SPLIT.split(s)
    if len(parts) == 5 and _NAMES.fullmatch(parts[2]):  # "a > x >= b" reads as "b <= x < a"
        lo, op_lo, _, op_hi, hi = parts if parts[1][0] == "<" == parts[3][0] else parts[::-1]
        if op_lo[0] == "<" == op_hi[0] or op_lo[0] == ">" == op_hi[0]:
            return "(["[op_lo.endswith("=")] + lo + "," + hi + ")]"[op_hi.endswith("=")]
    sides = _CHAIN_SPLIT.split(s)
    if len(sides) >= 2:
        exact = [x for x in sides if x and not x.startswith("\\approx")]
        values = [x for x in exact if not _NAMES.fullmatch(x)]
        if not values:  # names and approximations only: "x \approx 11"
            return sides[-1].removeprefix("\\approx")
        if len(values) < len(sides):  # a name or an approximation dropped
            return values[-1] if len(values) == 1 or len(values) < len(exact) else "=".join(values)
    unit = _TRAILING_UNIT.search(s)
    if unit:
        return s[: unit.start()]
    ratio = re.fullmatch(rf"({_PLAIN_NUMBER}):({_PLAIN_NUMBER})", s)
    if ratio:
        return f"{ratio[1]}/{ratio[2]}"
    if s[:1] + s[-1:] in ("()", "[]") and _split_top_level(s[1:-1]) == [s[1:-1]]:
        return s[1:-1]
    return s


# ----------------------------------------------------------------------------------------------
# 3) equivalence


def is_equiv(pred: str | None, gold: str, timeout: float = 1.0) -> bool:
    """True when `pred` and `gold` are the same answer (module docstring, step 3).

    `timeout` is the wall-clock limit in seconds of each sympy comparison (a tuple's elements
    are compared one by one, each with this limit); a comparison that runs out is False.
    """
    if pred is None:
        return False
    a, b = _parse(_clean(pred)), _parse(_clean(gold))
    if not a or not b:
        return False
    return _show(a) == _show(b) or _same(a, b, timeout)


def _same(a: Answer, b: Answer, timeout: float) -> bool:
    """Structure first: sets and bare lists in any order, other sequences in order."""
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and _same_element(a, b, timeout)
    if len(a.items) != len(b.items) or ("matrix" in (a.kind, b.kind) and a.kind != b.kind):
        return False
    if a.kind != "matrix" and ("{}" in (a.kind, b.kind) or a.kind == b.kind == ""):
        return _match_in_any_order(a.items, b.items, timeout)
    return a.kind == b.kind and all(_same(x, y, timeout) for x, y in zip(a.items, b.items))


def _match_in_any_order(items_a: list, items_b: list, timeout: float) -> bool:
    """True when every element of `items_a` pairs off with its own equal element of `items_b`."""
    unmatched = list(items_b)
    for x in items_a:
        partner = next((y for y in unmatched if _same(x, y, timeout)), None)
        if partner is None:
            return False
        unmatched.remove(partner)
    return not unmatched


def _same_element(a: str, b: str, timeout: float) -> bool:
    """Equal strings; else relations compared as relations; else numbers, then sympy."""
    if a == b:
        return True
    rel_a, rel_b = _relation(a), _relation(b)
    if rel_a or rel_b:
        return bool(rel_a and rel_b) and rel_a[0] == rel_b[0] and _sympy_proportional(rel_a, rel_b, timeout)
    x, y = _to_fraction(a), _to_fraction(b)
    if x is not None and y is not None:
        return x == y
    return _sympy_equiv(a, b, timeout)


_RELATION_SPLIT = re.compile(r"(<=|>=|!=|<|>|(?<![<>!])=)")


def _relation(s: str) -> tuple[str, str, str] | None:
    """(op, lhs, rhs) with op in "=", "!=", "<", "<=" (">" sides swapped), or None."""
    parts = _RELATION_SPLIT.split(s)
    if len(parts) != 3 or not parts[0] or not parts[2]:
        return None
    lhs, op, rhs = parts
    return (op.replace(">", "<"), rhs, lhs) if op[0] == ">" else (op, lhs, rhs)


_SCIENTIFIC = re.compile(rf"({_PLAIN_NUMBER})(?:[eE]|(?:\\times|\\cdot|\*)10\^)\{{?([+-]?\d+)\}}?")


def _to_fraction(s: str) -> fractions.Fraction | None:
    """The exact value of "-3", "0.25", ".5", "3/4", "\\frac{3}{4}", "1e3" or "2\\times10^{-3}".

    Exponents beyond 1000 are refused: Fraction("1e999999999") would build a billion-digit integer.
    """
    scientific = _SCIENTIFIC.fullmatch(s)
    if scientific:
        mantissa, exponent = fractions.Fraction(scientific[1]), int(scientific[2])
        return mantissa * fractions.Fraction(10) ** exponent if abs(exponent) <= 1000 else None
    sign, frac = 1, re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}", s)
    if frac:
        sign, s = (-1 if frac[1] else 1), f"{frac[2]}/{frac[3]}"
    if not re.fullmatch(rf"{_PLAIN_NUMBER}|-?\d+/\d+", s):
        return None
    try:
        return sign * fractions.Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


# ----------------------------------------------------------------------------------------------
# 3b) the symbolic comparison: whitelist, then sympy in a child process with a deadline


def _sympy_equiv(a: str, b: str, timeout: float) -> bool:
    """sympy's verdict on a - b == 0, False if either side is refused or time runs out."""
    return _sympy_run(_sympy_says_equal, (a, b), timeout)


def _sympy_proportional(rel_a: tuple, rel_b: tuple, timeout: float) -> bool:
    """Two relations with the same operator hold for the same points (module docstring, step 3)."""
    ordered = rel_a[0] in ("<", "<=")
    return _sympy_run(_sympy_says_proportional, (*rel_a[1:], *rel_b[1:]), timeout, ordered)


def _sympy_run(fn, sides: tuple, timeout: float, *flags) -> bool:
    """fn(*python sides, *flags) in a child with a deadline, once every side passed `_to_python`."""
    py = [_to_python(side) for side in sides]
    if any(p is None for p in py) or not hasattr(os, "fork"):
        return False
    _warm_up_sympy()
    return _run_with_deadline(fn, (*py, *flags), timeout)


@functools.cache
def _warm_up_sympy() -> None:
    """Import sympy and run one small comparison in this process, once (~0.4 s).

    Children are forked from this process, so they start with sympy's modules (it imports
    many lazily on first use) already loaded: ~15 ms per comparison instead of ~150 ms.
    """
    _sympy_says_equal("(x + 1)^2", "x^2 + 2 x + 1")


_FUNCTION_NAMES = {"sqrt", "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "pi"}
_LATEX_TO_PYTHON = {"cdot": "*", "times": "*", "div": "/"} | {f: f" {f} " for f in _FUNCTION_NAMES}
_LATEX_COMMAND = re.compile(r"\\(" + "|".join(_LATEX_TO_PYTHON) + r")(?![A-Za-z])")
_SAFE_CHARS = re.compile(r"[0-9A-Za-z\s.+\-*/^()]+")
_BAD_DOT = re.compile(r"\.(?!\d)|(?<=[A-Za-z)])\.")  # anything but a decimal point
_MAX_CHARS = 300


def _to_python(s: str) -> str | None:
    """A Python-syntax expression for `s` that is safe for `parse_expr`, or None.

    Safe means: only the characters of `_SAFE_CHARS`, a dot only as a decimal point, and
    letter runs that are known functions or at most 3 single-letter symbols. Letter runs are
    spaced out ("2ab" -> "2 a b", which sympy multiplies), so Python never reads "1e3", "0x1f"
    or "2j" as a number literal. Everything else, `__import__` included, is None.
    """
    if len(s) > _MAX_CHARS:
        return None
    s = _expand_frac(s)
    if s is not None:
        s = _expand_sqrt(s)
    if s is None:
        return None
    s = _LATEX_COMMAND.sub(lambda m: _LATEX_TO_PYTHON[m[1]], s)
    s = s.replace("{", "(").replace("}", ")")
    if len(s) > _MAX_CHARS or not _SAFE_CHARS.fullmatch(s) or _BAD_DOT.search(s):
        return None
    words = re.findall(r"[A-Za-z]+", s)
    if any(len(w) > 3 and w not in _FUNCTION_NAMES for w in words):
        return None
    return re.sub(r"[A-Za-z]+", _space_out, s)


def _space_out(word: re.Match) -> str:
    """A letter run with spaces around: functions stay whole ("sqrt"), symbols split ("a b")."""
    letters = word[0] if word[0] in _FUNCTION_NAMES else " ".join(word[0])
    return f" {letters} "


def _expand_frac(s: str) -> str | None:
    """\\frac{a}{b} -> ((a)/(b)), innermost (last) first; None if an argument is malformed."""
    while (i := s.rfind("\\frac")) >= 0:
        num = _brace_group(s, i + len("\\frac"))
        den = num and _brace_group(s, num[1])
        if not den:
            return None
        s = s[:i] + f"(({num[0]})/({den[0]}))" + s[den[1]:]
    return s


def _expand_sqrt(s: str) -> str | None:
    """\\sqrt{a} -> ((a)**(1/2)), \\sqrt[n]{a} -> ((a)**(1/(n))); None if malformed."""
    while (i := s.rfind("\\sqrt")) >= 0:
        start = i + len("\\sqrt")
        index = re.match(r"\s*\[([^\[\]]*)\]", s[start:])
        radicand = _brace_group(s, start + (index.end() if index else 0))
        if not radicand:
            return None
        power = f"1/({index[1]})" if index else "1/2"
        s = s[:i] + f"(({radicand[0]})**({power}))" + s[radicand[1]:]
    return s


def _sympy_parse(py: str):
    """A sympy expression for a string that passed `_to_python`; decimals become exact rationals."""
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        rationalize,
        standard_transformations,
    )

    names = {c: sympy.Symbol(c) for c in string.ascii_letters}
    names |= {"i": sympy.I, "e": sympy.E, "pi": sympy.pi, "sqrt": sympy.sqrt, "exp": sympy.exp}
    names |= {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan}
    names |= {"sec": sympy.sec, "csc": sympy.csc, "cot": sympy.cot}
    names |= {"log": sympy.log, "ln": sympy.log}
    rules = standard_transformations + (convert_xor, implicit_multiplication_application, rationalize)
    return parse_expr(py, local_dict=names, transformations=rules)


def _sympy_says_equal(py_a: str, py_b: str) -> bool:
    """simplify(a - b) == 0 for two expressions that passed `_to_python`."""
    import sympy

    try:
        return sympy.simplify(_sympy_parse(py_a) - _sympy_parse(py_b)) == 0
    except Exception:  # a parse or sympy error means "not shown equal"
        return False


def _sympy_says_proportional(lhs_a: str, rhs_a: str, lhs_b: str, rhs_b: str, ordered: bool) -> bool:
    """(lhs_a - rhs_a) = c (lhs_b - rhs_b) for a constant c != 0 (c > 0 when `ordered`)."""
    import sympy

    try:
        d_a = sympy.simplify(_sympy_parse(lhs_a) - _sympy_parse(rhs_a))
        d_b = sympy.simplify(_sympy_parse(lhs_b) - _sympy_parse(rhs_b))
        if d_a == 0 or d_b == 0:
            return d_a == d_b
        c = sympy.simplify(d_a / d_b)
        return bool(c.is_number and (c.is_positive if ordered else c.is_zero is False))
    except Exception:  # a parse or sympy error means "not shown equal"
        return False


def _run_with_deadline(fn, args: tuple, timeout: float) -> bool:
    """fn(*args) in a forked child that is killed after `timeout` s; False unless it said True.

    The child writes one byte through a pipe and leaves with os._exit, so it never returns into
    the caller's code nor runs its exit handlers.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            os.write(write_fd, b"1" if fn(*args) else b"0")
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        poller = select.poll()  # not select.select: it fails on descriptors above 1023
        poller.register(read_fd, select.POLLIN)
        ready = poller.poll(max(timeout, 0.0) * 1000)  # milliseconds
        verdict = os.read(read_fd, 1) if ready else b""
    finally:
        os.close(read_fd)
        with contextlib.suppress(OSError):  # already gone (e.g. SIGCHLD ignored by the caller)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return verdict == b"1"


# ----------------------------------------------------------------------------------------------
# 4) the reward


def grade(completion: str, gold_answer: str) -> float:
    """Outcome reward: 1.0 if the completion's final answer equals `gold_answer`, else 0.0.

    `gold_answer` is the answer itself (e.g. from `extract_answer(gold_solution)`).
    """
    return 1.0 if is_equiv(extract_answer(completion), gold_answer) else 0.0
