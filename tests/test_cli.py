"""cli.py: the flags every program generates from its `@dataclass Args`."""
import os
import sys
from dataclasses import dataclass

import pytest

import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "benchmarks"), os.path.join(ROOT, "scripts")]
import make_expert  # noqa: E402
import speed        # noqa: E402


@dataclass
class Args:
    name: str
    """a required flag"""
    max_new_tokens: int = 40
    """completion length"""
    quick: bool = False
    """a smoke run"""
    trl: bool = False
    """add TRL's rows"""
    anneal: bool = True
    """on unless turned off"""


def parse(*argv) -> Args:
    return Args(**vars(cli.dataclass_parser(Args, "test").parse_args(["--name", "x", *argv])))


def test_defaults_dashed_and_underscored_names():
    assert parse() == Args(name="x", max_new_tokens=40, quick=False, trl=False, anneal=True)
    assert parse("--max-new-tokens", "8").max_new_tokens == parse("--max_new_tokens", "8").max_new_tokens == 8


@pytest.mark.parametrize("argv, quick", [(["--quick"], True), (["--quick", "true"], True), (["--quick", "True"], True),
                                         (["--quick", "1"], True), (["--quick", "yes"], True),
                                         (["--quick", "false"], False), (["--quick", "0"], False),
                                         (["--quick", "NO"], False), ([], False)])
def test_a_bool_takes_a_value_or_stands_alone_as_true(argv, quick):
    assert parse(*argv).quick is quick


def test_bare_switches_side_by_side_and_before_other_flags():
    args = parse("--quick", "--trl", "--max-new-tokens", "8")          # as `speed.py --quick --trl` is written
    assert (args.quick, args.trl, args.max_new_tokens) == (True, True, 8)
    assert parse("--anneal", "false", "--quick").anneal is False


@pytest.mark.parametrize("value", ["maybe", "ture", "on", ""])
def test_a_bool_refuses_any_other_value_naming_the_flag(value, capsys):
    with pytest.raises(SystemExit):
        parse("--quick", value)
    err = capsys.readouterr().err
    assert "--quick" in err and repr(value) in err and "expected true or false" in err


def test_a_field_without_a_default_is_required(capsys):
    with pytest.raises(SystemExit):
        cli.dataclass_parser(Args, "test").parse_args(["--quick"])
    assert "required: --name" in capsys.readouterr().err


def test_help_is_the_field_docstring_also_in_an_indented_class():
    @dataclass
    class Inner:                                     # as tasks.py and tiny.py declare theirs under __main__
        path: str = "tiny-model"
        """folder to write to"""
        seed: int = 0
        """seed of the initialisation"""

    parser = cli.dataclass_parser(Inner, "test", positional=("path",))
    assert "folder to write to" in parser.format_help() and "seed of the initialisation" in parser.format_help()
    assert Inner(**vars(parser.parse_args([]))) == Inner()
    assert Inner(**vars(parser.parse_args(["out/tiny", "--seed", "3"]))) == Inner("out/tiny", 3)


def test_a_positional_without_a_default_is_required(capsys):
    @dataclass
    class Worker:
        mode: str
        """ours or generate"""
        free_length: bool = False
        """let completions stop at EOS"""

    parser = cli.dataclass_parser(Worker, "test", positional=("mode",))
    assert Worker(**vars(parser.parse_args(["ours", "--free-length"]))) == Worker("ours", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--free-length"])
    assert "required: mode" in capsys.readouterr().err


def test_a_subclass_takes_the_flags_of_its_base_with_their_help():
    """speed.py's `Args(Completions)`: the inherited fields come first, each with the help written under it."""
    @dataclass
    class Base:
        k: int = 4
        """completions per prompt"""

    @dataclass
    class Child(Base):
        quick: bool = False
        """a smoke run"""

    parser = cli.dataclass_parser(Child, "test")
    assert "completions per prompt" in parser.format_help() and "a smoke run" in parser.format_help()
    assert Child(**vars(parser.parse_args(["--quick", "--k", "2"]))) == Child(k=2, quick=True)
    assert "completions per prompt" in cli.dataclass_parser(speed.Args, "test").format_help()


def test_check_choices_names_the_flag_the_value_and_the_choices():
    cli.check_choices(parse(), {"name": ("x", "y")})
    with pytest.raises(SystemExit, match=r"--name 'z': expected one of x, y"):
        cli.check_choices(Args(name="z"), {"name": ("x", "y")})


def test_speed_keeps_its_documented_command_lines():
    args = speed.parse_args(["--quick", "--trl", "--scaling"])
    assert (args.quick, args.trl, args.scaling, args.free_length) == (True, True, True, False)
    assert (args.iterations, args.warmup, args.repeats) == (3, 1, 1)     # --quick's derived counts
    args = speed.parse_args(["--trl", "--scaling", "--repeats", "3"])
    assert (args.iterations, args.warmup, args.repeats, args.quick) == (10, 2, 3, False)
    with pytest.raises(SystemExit, match="must be a multiple of --micro-batch"):
        speed.parse_args(["--prompts", "3", "--k", "5", "--micro-batch", "4"])


def test_make_expert_checks_its_choices():
    args = make_expert.parse_args(["--task", "gsm8k", "--source", "gold", "--out", "e.jsonl"])
    assert (args.task, args.source, args.split, args.prompt_style) == ("gsm8k", "gold", "train", "auto")
    with pytest.raises(SystemExit, match=r"--split 'dev': expected one of train, test"):
        make_expert.parse_args(["--task", "gsm8k", "--split", "dev", "--out", "e.jsonl"])
    with pytest.raises(SystemExit, match=r"--prompt-style 'fancy': expected one of auto, chat, plain"):
        make_expert.parse_args(["--task", "gsm8k", "--prompt-style", "fancy", "--out", "e.jsonl"])


def test_classes_parsed_together_come_back_apart():
    """tabular.py: one run's Args and the report's flags on one command line, each part rebuilt by split."""
    import tabular
    args, report = tabular.parse_args(["--quick", "--alpha", "0.5", "--experiments", "run", "--seeds", "2"])
    assert (args.alpha, report.quick, report.experiments, report.seeds) == (0.5, True, "run", 2)
    assert args == tabular.Args(alpha=0.5) and report == tabular.Report("run", 2, True)
    help_text = cli.dataclass_parser((tabular.Args, tabular.Report), "test").format_help()
    assert "one seed per row" in help_text and "tokens (with --eos" in help_text
    with pytest.raises(SystemExit, match=r"--irl 'x': expected one of"):
        tabular.parse_args(["--irl", "x"])
