"""Mutation check: miswire the project on purpose, in a copy, and show that a test written for each
miswiring fails.

    python benchmarks/mutations.py                       # every mutation (about 10 minutes on 2 cores)
    python benchmarks/mutations.py --only prm-grad-negated,policy-adv-negated
    python benchmarks/mutations.py --list                # the mutations and the tests named for them

The mutations are data, in benchmarks/mutations.toml beside this file: each one's name, the miswiring
in words, the file, the exact source and its replacement, and the tests named for it. The project (its
tracked files) is copied to a temporary folder once. Each mutation replaces its piece of source, which
must occur exactly once (else the source moved on and the mutation is reported as stale, not as
caught), runs only the tests named for it, and restores the file. It is caught when pytest exits 1 (a
test failed; the table names which); a copy that does not even collect (exit 2 to 5) counts as not
caught. The named tests first run once on the unmutated copy and must pass, or nothing is shown.
Prints a table mutation -> caught; exits 1 if any mutation survives.

Not part of the test suite (slow: each mutation is a pytest session, some start train.py). Mutations of
the loop's steps are caught by tests/test_loop.py (seconds); those of the loop itself by train.py runs.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib  # Python 3.11+
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
import cli  # noqa: E402  (the project's modules live one folder up)
ENV = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@dataclass
class Mutation:
    """One miswiring, as mutations.toml lists it (its header says what each field holds)."""
    name: str
    what: str
    file: str
    old: str
    new: str
    tests: list


with open(os.path.join(HERE, "mutations.toml"), "rb") as f:
    MUTATIONS = [Mutation(**m) for m in tomllib.load(f)["mutation"]]


def copy_project(dst: str):
    """The project's files as they are in the working tree: tracked ones and new ones git does not ignore."""
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        os.makedirs(os.path.dirname(os.path.join(dst, rel)) or dst, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(dst, rel))


def pytest(project: str, tests: list) -> tuple[int, list, str, float]:
    """Run the given tests in the copy: (exit code, the tests that failed, last lines of output, seconds)."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests], cwd=project,
                          capture_output=True, text=True, env=ENV)
    failed = [line.split()[1].split("::")[-1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    return proc.returncode, failed, "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:]), time.time() - t0


def named(failed: list) -> str:
    """Failed tests by name, several parameter sets of one test counted: `test_x (3 cases), test_y[a]`."""
    cases = {}
    for test in failed:
        cases.setdefault(test.split("[")[0], []).append(test)
    return ", ".join(tests[0] if len(tests) == 1 else f"{name} ({len(tests)} cases)" for name, tests in cases.items())


@dataclass
class Args:
    only: str = ""
    """comma-separated mutation names (default: all)"""
    list: bool = False
    """list the mutations and their tests, run nothing"""
    keep: bool = False
    """keep the copy of the project (its path is printed)"""


def main():
    opts = Args(**vars(cli.dataclass_parser(Args, __doc__.split("\n\n")[0]).parse_args()))
    chosen = [m for m in MUTATIONS if not opts.only or m.name in opts.only.split(",")]
    unknown = set(opts.only.split(",")) - {m.name for m in MUTATIONS} if opts.only else set()
    if unknown:
        raise SystemExit(f"--only: unknown mutations {', '.join(sorted(unknown))}")
    if opts.list:
        for m in chosen:
            print(f"{m.name}: {m.what} ({m.file})\n    " + "\n    ".join(m.tests))
        return

    project = tempfile.mkdtemp(prefix="mutations-")
    copy_project(project)
    print(f"project copied to {project}")
    baseline = sorted({t for m in chosen for t in m.tests})
    code, _, tail, seconds = pytest(project, baseline)
    print(f"unmutated: {len(baseline)} tests, exit {code} in {seconds:.0f} s")
    if code != 0:
        raise SystemExit(f"the named tests fail without any mutation:\n{tail}")

    rows, survived = [], 0
    for m in chosen:
        path = os.path.join(project, m.file)
        with open(path) as f:
            source = f.read()
        if source.count(m.old) != 1:
            rows.append((m, f"stale ({source.count(m.old)} matches)", 0.0))
            survived += 1
            continue
        with open(path, "w") as f:
            f.write(source.replace(m.old, m.new))
        try:
            code, failed, tail, seconds = pytest(project, m.tests)
        finally:
            with open(path, "w") as f:
                f.write(source)
        caught = code == 1
        survived += not caught
        rows.append((m, named(failed) if caught else f"NO (pytest exit {code})", seconds))
        print(f"{m.name}: {'caught' if caught else 'NOT caught'} in {seconds:.0f} s", flush=True)

    print("\n| mutation | what | failed (of the tests named for it) | s |\n|---|---|---|---|")
    for m, failed, seconds in rows:
        print(f"| {m.name} | {m.what} | {failed} | {seconds:.0f} |")
    print(f"\n{len(rows) - survived} of {len(rows)} mutations caught")
    if not opts.keep:
        shutil.rmtree(project, ignore_errors=True)
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
