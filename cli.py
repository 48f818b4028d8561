"""A command line generated from a dataclass: one `--flag` per field, its docstring as the help.

Every program (train.py, eval.py, tabular.py, benchmarks/, scripts/) declares its settings as one
`@dataclass Args` with a one-line string under each field (the cleanrl habit); `dataclass_parser`
turns that into an argparse parser, so the settings, their defaults and their help live in one
place. Flags that several programs take with one meaning are declared once, in the module of their
concept, and each program takes them from there (7.). The conventions:
1. a field `max_new_tokens` is the flag `--max-new-tokens` (and `--max_new_tokens`);
2. booleans take true/false, 1/0 or yes/no, and a bare `--flag` means true, so `--quick` and
   `--quick true` are the same; any other value is refused;
3. a field without a default is a required flag;
4. fields named in `positional` are taken by place instead (`python tasks.py gsm8k`), optional
   when they have a default;
5. choices are checked after parsing, by the program (`check_choices`), naming the flag;
6. a program whose settings fall into parts (tabular.py: one run's `Args`, the report's `Report`)
   passes the classes together, `dataclass_parser((Args, Report), ...)`, and takes each part back
   from the parsed flags with `split`;
7. a part shared by several programs is one of those parts (benchmarks/speed_worker.py and
   trl_bench.py: `dataclass_parser((Args, Completions), ...)`), or the base of a program's `Args`
   (benchmarks/speed.py: `class Args(Completions)`, whose own fields follow the inherited ones); a
   field's help is the string under it where it is declared.
"""
import argparse
import ast
import inspect
import textwrap
from dataclasses import MISSING, fields, is_dataclass

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def field_docs(cls) -> dict:
    """The string literal under each field of a dataclass, by field name."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {node.target.id: nxt.value.value for node, nxt in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)}


def boolean(text: str) -> bool:
    """true/false, 1/0, yes/no (any case); anything else is an error argparse reports with the flag."""
    if text.lower() not in TRUE + FALSE:
        raise argparse.ArgumentTypeError(f"expected true or false (or 1/0, yes/no), got {text!r}")
    return text.lower() in TRUE


def dataclass_parser(cls, description: str, positional: tuple = ()) -> argparse.ArgumentParser:
    """A parser with `--name-with-dashes` (and `--name_with_underscores`) for every field of `cls` (a
    dataclass, or a tuple of them), or a positional argument for the fields named in `positional`."""
    classes = cls if isinstance(cls, tuple) else (cls,)
    docs = {name: doc for c in classes for base in reversed(c.__mro__) if is_dataclass(base)   # inherited fields too
            for name, doc in field_docs(base).items()}
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in (f for c in classes for f in fields(c)):
        default = f.default if f.default_factory is MISSING else f.default_factory()
        kw = dict(type=boolean, nargs="?", const=True) if f.type is bool else dict(type=f.type)   # bare --flag: true
        kw["help"] = docs.get(f.name, "")
        if f.name in positional:
            parser.add_argument(f.name, **kw | ({} if default is MISSING else dict(nargs="?", default=default)))
            continue
        names = dict.fromkeys(["--" + f.name.replace("_", "-"), "--" + f.name])   # one name when they agree
        kw |= dict(required=True, default=argparse.SUPPRESS) if default is MISSING else dict(default=default)
        parser.add_argument(*names, **kw, metavar=f.type.__name__)
    return parser


def split(namespace: argparse.Namespace, cls):
    """The instance of one of the classes passed together to `dataclass_parser`, from the parsed flags."""
    return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)})


def flag(name: str) -> str:
    """The command-line flag of a field: max_new_tokens -> --max-new-tokens."""
    return "--" + name.replace("_", "-")


def check_choices(args, choices: dict):
    """Refuse a field whose value is not among its choices, naming the flag, the value and the choices."""
    for name, allowed in choices.items():
        if getattr(args, name) not in allowed:
            raise SystemExit(f"{flag(name)} {getattr(args, name)!r}: expected one of {', '.join(allowed)}")
