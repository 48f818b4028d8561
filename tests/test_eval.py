"""eval.py: selectors and their ties, pass@k, the first-wrong-step finder, error injection,
localisation and all-fail statistics on hand cases; HTML and SVG well formed; one end-to-end run."""
import itertools
import json
import math
import random
import re
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser

import pytest
import torch

import eval as ev
import prm as prm_lib
import report
import tasks
import tiny


# ----------------------------------------------------------------------------- pass@k and selectors

def test_pass_at_k_equals_brute_force_over_all_subsets():
    n = 6
    for c in range(n + 1):
        samples = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert ev.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (c, k)


def test_best_of_n_takes_the_max_and_the_lowest_index_on_ties():
    assert ev.best_of_n([0.1, 0.7, 0.3]) == 1
    assert ev.best_of_n([1.0, 3.0, 3.0, 2.0]) == 1
    assert ev.best_of_n([-5.0, -5.0]) == 0


def test_majority_vote_ties_go_to_the_answer_seen_first_and_unanswered_samples_do_not_vote():
    assert ev.majority_vote(["3", "5", "5", "3", "5"]) == 1
    assert ev.majority_vote(["a", "b", "b", "a"]) == 0          # 2-2 tie: "a" appears first
    assert ev.majority_vote(["b", "a", "a", "b"]) == 0          # 2-2 tie: "b" appears first
    assert ev.majority_vote([None, None, "7"]) == 2
    assert ev.majority_vote([None, None]) == 0


def test_weighted_vote_sums_weights_per_answer_then_takes_the_best_member():
    # plain weights: group "b" weighs 0.2 + 0.3 = 0.5 > 0.4, its best member is index 2
    assert ev.weighted_vote(["a", "b", "b"], [0.4, 0.2, 0.3], log_weights=False) == 2
    # exact tie between groups (0.5 vs 0.25 + 0.25): the group seen first wins
    assert ev.weighted_vote(["a", "b", "b"], [0.5, 0.25, 0.25], log_weights=False) == 0
    assert ev.weighted_vote(["b", "b", "a"], [0.25, 0.25, 0.5], log_weights=False) == 0
    # tie inside the winning group: lowest index
    assert ev.weighted_vote(["a", "b", "b", "b"], [0.9, 0.4, 0.4, 0.2], log_weights=False) == 1
    # R_phi as log-weights: raw sums would pick "a" (-1 > -2.5); exp weights 1 < e^-.2 + e^-.3
    assert ev.weighted_vote(["a", "b", "b"], [-1.0, -1.2, -1.3]) == 1
    assert ev.weighted_vote(["a", "b", "b"], [0.0, -3.0, -3.0]) == 0      # 1 > 2 e^-3
    # a sample without an answer does not vote, but a vote without any answer falls back to best-of-N
    assert ev.weighted_vote([None, "x"], [5.0, 0.0]) == 1
    assert ev.weighted_vote([None, None], [0.0, 5.0]) == 1
    with pytest.raises(AssertionError):
        ev.weighted_vote(["a"], [-1.0], log_weights=False)


def test_scaling_curves_on_hand_made_samples():
    # prompt 0: the PRM prefers the one correct sample; prompt 1: it prefers a wrong one
    samples = [{"correct": [0, 0, 1, 0], "answer": ["1", "1", "2", "3"], "sum": [0.0, 0.1, 0.9, 0.2]},
               {"correct": [1, 0, 0, 0], "answer": ["4", "5", "5", "6"], "sum": [0.1, 0.8, 0.2, 0.3]}]
    select = {"best": lambda v: ev.best_of_n(v["sum"]), "vote": lambda v: ev.majority_vote(v["answer"])}
    curves = ev.scaling_curves(samples, [1, 4], subsets=400, select=select, seed=0)
    assert curves["best"][1] == 0.5 and curves["vote"][1] == 0.0                   # N = all 4 samples: exact
    assert curves["best"][0] == pytest.approx(0.25, abs=0.06)                      # N = 1: a random sample
    assert curves["oracle (pass@N)"] == [0.25, 1.0] and curves["random (pass@1)"] == [0.25, 0.25]


# ----------------------------------------------------------------------------- known first wrong steps

def test_write_trace_of_the_correct_values_is_the_expert_solution():
    nums, ops = [37, 25, 18, 4], ["+", "-", "+"]
    assert ev.write_trace(nums, ops, tasks.solve(nums, ops)) == tasks.write_steps(nums, ops)
    assert ev.parse_problem("What is 37+25-18+4?") == (nums, ops)
    assert ev.parse_problem("What is 5+-3?") == ([5, -3], ["+"])


def test_inject_error_continues_from_the_wrong_value_and_the_finder_locates_it():
    nums, ops = [37, 25, 18, 4], ["+", "-", "+"]
    assert ev.inject_error(nums, ops, 1, 2) == "37+25=62. 62-18=46. 46+4=50. Answer: 50"
    for j in range(len(ops)):
        for delta in ev.DELTAS:
            text = ev.inject_error(nums, ops, j, delta)
            assert ev.first_wrong_step(text, nums, ops) == j
            assert text.endswith(f" Answer: {tasks.solve(nums, ops)[-1] + delta}")    # the slip reaches the answer


def test_first_wrong_step_by_recomputation_on_hand_cases():
    nums, ops = [37, 25, 18], ["+", "-"]
    cases = {
        "37+25=62. 62-18=44. Answer: 44": None,                 # correct
        "37 + 25 = 62. 62 - 18 = 44. Answer: 44": None,         # spaces are fine
        "37+25=63. 63-18=45. Answer: 45": 0,                    # wrong result, then consistent
        "37+25=62. 62-18=45. Answer: 45": 1,
        "37+25=62. 61-18=43. Answer: 43": 1,                    # copy error: 61 is not the previous result
        "37+25=62. 61-18=44. Answer: 44": 1,                    # copy error with the right-looking result
        "36+25=61. 61-18=43. Answer: 43": 0,                    # copy error of the first number
        "37+25=62. 62+18=80. Answer: 80": 1,                    # wrong operator
        "37+25=62. 62-18=44. Answer: 45": 2,                    # wrong answer step
        "37+25=62. Answer: 62": 1,                              # a skipped step
        "37+25=62. 62-18=44. Answer: 44. 1+1=2": 2,             # the answer step is not "Answer: c" alone
        "37+25=62. 62-1": 1,                                    # truncated inside step 1
        "37+25=62. 62-18=44.": None,                            # truncated at a boundary: nothing wrong yet
        "hello": 0,
        "": 0,
    }
    for text, expected in cases.items():
        assert ev.first_wrong_step(text, nums, ops) == expected, text


def test_perturb_number_changes_one_result_and_names_its_step():
    gold = "She has 1,200 apples.\nShe buys 30 more, so 1200 + 30 = 1230.\nHalf: 1230 / 2 = 615.5\n#### 615.5"
    number = r"\d[\d,]*(?:\.\d+)?"
    seen = set()
    for seed in range(40):
        text, step = ev.perturb_number(gold, random.Random(seed))
        old, new = re.findall(number, gold), re.findall(number, text)
        diff = [i for i, (o, n) in enumerate(zip(old, new)) if o != n]
        assert len(old) == len(new) and len(diff) == 1, text
        assert old[diff[0]] in ("1230", "615.5"), (old[diff[0]], text)          # a number right after "="
        assert step == (1 if old[diff[0]] == "1230" else 2)
        seen.add(step)
    assert seen == {1, 2}
    assert ev.perturb_number("no numbers", random.Random(0)) is None
    for seed in range(10):                                                         # "=-5" is a result too
        assert ev.perturb_number("3-8=-5. Answer: -5", random.Random(seed))[1] == 0
    text, step = ev.perturb_number("We have 7 cats.\nAnd 3 dogs", random.Random(1))  # no "=": any number
    assert text != "We have 7 cats.\nAnd 3 dogs" and step in (0, 1)


# ----------------------------------------------------------------------------- PRM quality, localisation, all-fail groups

def test_step_labels_and_step_auc():
    assert ev.step_labels(4, 1) == [1, 0, None, None]
    assert ev.step_labels(3, None) == [1, 1, 1]
    scores = [torch.tensor([2.0, -1.0, 5.0]), torch.tensor([1.0, 3.0])]             # the 5.0 after the error is dropped
    out = ev.step_auc(scores, [1, None])
    assert out == {"auc": 1.0, "steps": 4, "wrong_steps": 1}


def test_localisation_accuracy_chance_and_fixed_step_baseline():
    scores = [torch.tensor([0.0, -1.0, 0.5]), torch.tensor([-2.0, 0.0]), torch.tensor([1.0, 1.0, 1.0])]
    out = ev.localisation(scores, [1, 1, 0])          # hit, miss, hit (tie: earliest step)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert out["best_fixed_step"] == pytest.approx(2 / 3)
    assert out["first_wrong_hist"] == [1, 2] and out["lowest_hist"] == [2, 1]
    assert ev.localisation([], [])["n"] == 0


def test_all_fail_stats_on_hand_groups():
    correct = [[0, 0, 0, 0, 1, 0, 0, 0]]                           # k = 4: one all-fail group, one mixed
    R = [[1.0, 2.0, 3.0, 3.0, 9.0, 0.0, 0.0, 0.0]]
    progress = [[0, 1, 2, 3, 0, 0, 0, 0]]
    out = ev.all_fail_stats(correct, R, 4, progress)
    assert out["groups"] == 2 and out["all_fail_fraction"] == 0.5
    assert out["R_std_all_fail"] == pytest.approx(torch.tensor([1.0, 2, 3, 3]).std(unbiased=False).item())
    assert out["pairs"] == 6 and out["closer_failure_concordance"] == pytest.approx(5.5 / 6)   # one R tie
    out = ev.all_fail_stats(correct, [[-x for x in R[0]]], 4, progress)
    assert out["closer_failure_concordance"] == pytest.approx(0.5 / 6)


# ----------------------------------------------------------------------------- HTML and SVG

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class Balance(HTMLParser):
    """Every non-void start tag is closed by the matching end tag, in order."""
    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], Counter()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] += 1

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.errors.append(f"</{tag}> with open {self.stack[-3:]}")


def balanced(text: str) -> Balance:
    parser = Balance()
    parser.feed(text)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    return parser


def hostile_trace(correct: bool) -> report.Trace:
    """Multi-character tokens (as BPE makes them), so a missing escape would emit a whole tag."""
    pieces = ["1+2=3. ", "<script>", "alert('x')", "</script>", " & ", "3+1=4.\n", "Answer", ": 4", ""]
    return report.Trace(prompt="What is <script>1+2+1</script>?", pieces=pieces, r=[math.sin(i) for i in range(len(pieces))],
                    steps=prm_lib.token_steps(pieces), label="<b>label</b>", correct=correct, first_wrong=None if correct else 1)


def test_heatmap_page_is_well_formed_and_escapes_the_trace():
    pairs = [(hostile_trace(True), hostile_trace(False)), (None, hostile_trace(False))]
    for gamma in (0.0, 0.9):
        doc = report.page("traces <x>", report.heatmap_table(pairs, ("correct", "wrong"), gamma))
        parser = balanced(doc)
        assert parser.tags["script"] == 0 and parser.tags["b"] == 0
        assert "&lt;script&gt;" in doc and "<script" not in doc.lower()
        assert doc.count('class="step fw') == 2                                  # the known first wrong step, twice
        assert 'class="t ans"' in doc                                            # the answer is marked
        n_steps = len(prm_lib.split_steps("".join(hostile_trace(True).pieces)))
        assert doc.count('<span class="step') == 3 * n_steps + 1                 # 3 traces, plus the legend's


def test_heatmap_legend_reads_small_rewards():
    """The legend's mean and std keep 3 significant digits: rewards of a fresh PRM are ~1e-4, not 0.000."""
    trace = hostile_trace(True)
    trace.r = [1e-4 * v for v in trace.r]
    values = trace.r
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    legend = report.heatmap_table([(trace, None)], ("a", "b"), 0.0).split("</p>")[0]
    assert f"mean {mean:.3g}, std {std:.3g})" in legend and "0.000" not in legend, legend
    assert 1e-5 < std < 1e-4                                                     # small, and now readable


def test_reward_to_go_is_discounted():
    assert report.reward_to_go([1.0, 0.0, 2.0], 0.5) == [1.5, 1.0, 2.0]
    assert report.reward_to_go([1.0, 2.0], 0.0) == [1.0, 2.0]


def write_metrics(path, accuracy):
    with open(path, "w") as f:
        for i, acc in enumerate(accuracy):
            f.write(json.dumps({"rollout/accuracy": acc, "policy/entropy": 0.1, "iteration": i + 1}) + "\n")
        f.write(json.dumps({"eval/accuracy_end": 0.9}) + "\n")                  # the summary line has no iteration


def svgs(fragment: str) -> dict:
    """title -> parsed <svg> element, for every chart in an HTML fragment."""
    out = {}
    for text in re.findall(r"<svg.*?</svg>", fragment, re.S):
        root = ET.fromstring(text)                                               # well-formed XML
        title = root.find("{http://www.w3.org/2000/svg}text").text
        out[title] = root
    return out


def test_training_curves_draw_one_polyline_point_per_iteration(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", [0.0, 0.5, 1.0])
    html_fragment = report.training_curves(str(tmp_path / "metrics.jsonl"))
    balanced(html_fragment)
    charts = svgs(html_fragment)
    assert set(charts) == {"rollout/accuracy", "policy/entropy"}                 # no chart for absent metrics
    lines = charts["rollout/accuracy"].findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 1
    points = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    assert len(points) == 3
    assert points[0][0] < points[1][0] < points[2][0]                            # iterations left to right
    assert points[0][1] > points[1][1] > points[2][1]                            # higher accuracy is higher up
    assert report.training_curves(str(tmp_path / "missing.jsonl")) == ""


def test_svg_chart_breaks_lines_at_missing_values_and_escapes_names():
    svg = report.svg_chart([{"name": "a<b", "x": [0, 1, 2, 3, 4], "y": [0.0, 1.0, None, 2.0, 3.0]},
                        {"name": "c", "x": [0, 1], "y": [float("nan"), 5.0]}], "t & u")
    root = ET.fromstring(svg)
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert [len(p.get("points").split()) for p in lines] == [2, 2]               # (0, 1) and (3, 4); "c" is one dot
    assert len(root.findall("{http://www.w3.org/2000/svg}circle")) == 1
    assert "a&lt;b" in svg and "t &amp; u" in svg


# ----------------------------------------------------------------------------- end to end on an untrained tiny model

def test_main_end_to_end_on_a_tiny_run(tmp_path):
    run = tmp_path / "run"
    for part in ("policy", "prm"):
        tiny.save_tiny(str(run / "ckpt-000002" / part))
    (run / "ckpt-000003.tmp").mkdir()                                            # a torn checkpoint is never picked
    (run / "args.json").write_text(json.dumps({"task": "arithmetic", "n_terms": 3, "lo": 1, "hi": 9, "n_test": 10,
                                               "n_train": 10, "k": 2, "max_new_tokens": 12, "temperature": 1.0}))
    write_metrics(run / "metrics.jsonl", [0.1, 0.2])
    res = ev.main(ev.parse_args(["--run", str(run), "--prompts", "3", "--n", "1,2,4", "--subsets", "2",
                                 "--heatmap-pairs", "2"]))
    assert res["policy"].endswith("ckpt-000002/policy") and res["prompts"] == 3
    assert set(res["scaling"]) >= {"N", "best-of-N sum", "majority vote", "PRM-weighted vote", "oracle (pass@N)"}
    assert all(len(v) == 3 for v in res["scaling"].values())
    assert res["localisation"]["injected"]["n"] == 3 and res["all_fail"]["groups"] == 6
    assert json.loads((run / "eval.json").read_text())["n_samples"] == 4
    for name in ("report.html", "heatmap-injected.html", "heatmap-rollouts-discounted.html"):
        balanced((run / name).read_text())


@pytest.mark.parametrize("method", ["prime", "tango"])
def test_main_skips_the_prm_parts_of_a_run_whose_reward_model_is_a_causal_lm(tmp_path, capsys, method):
    """PRIME's and Tango's `prm` folders hold causal LMs: read as a token-reward PRM (a zero head) they would
    score every rollout 0; eval says so and measures the policy alone."""
    run = tmp_path / "run"
    for part in ("policy", "prm"):
        tiny.save_tiny(str(run / "ckpt-000002" / part))
    (run / "args.json").write_text(json.dumps({"method": method, "task": "arithmetic", "n_terms": 3, "lo": 1, "hi": 9,
                                               "n_test": 10, "n_train": 10, "k": 2, "max_new_tokens": 8}))
    res = ev.main(ev.parse_args(["--run", str(run), "--prompts", "2", "--n", "1,2", "--subsets", "2"]))
    assert res["prm"] is None and "majority vote" in res["scaling"] and "localisation" not in res
    assert not any("best-of-N" in key or "PRM" in key for key in res["scaling"])
    assert f"trained with --method {method}" in capsys.readouterr().out
