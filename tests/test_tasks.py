"""Tasks: every loader on local files shaped like the hub copies, prompts, filters, expert data.

The fixtures in tests/fixtures/ have the field names and formats of the real data sets (see
math_data.py) with problems written for this project. Hub ids are never reached: the hub is
switched to offline mode for every test, and the one test of the default hub sources replaces
`datasets.load_dataset` and checks what it was asked for.

Run: python -m pytest tests/test_tasks.py -q   (CPU, no downloads, seconds)
"""
import collections
import logging
import os
import random
import sys

import datasets
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

import grader
import math_data
import prm as prm_lib
import rollout
import tasks
from data_helpers import FIXTURES, check_hub_calls, fixture, read_jsonl
import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_expert  # noqa: E402


def write_parquet(records: list[dict], path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    datasets.Dataset.from_list(records).to_parquet(str(path))
    return str(path)


pytestmark = pytest.mark.usefixtures("offline")                 # no test reaches the hub

# ----------------------------------------------------------------------------- the synthetic task

def test_arithmetic_is_unchanged():
    task = tasks.get_task("arithmetic", n_terms=3, lo=1, hi=30, n_test=200, seed=0, data="ignored")
    assert task.test[0] == tasks.Example("17+18-30", "What is 17+18-30?", "5", "17+18=35. 35-30=5. Answer: 5")
    assert task.render(task.test[0], None) == "What is 17+18-30?\n"
    assert task.reward("17+18=35. 35-30=5. Answer: 5", task.test[0]) == 1.0
    assert task.reward("Answer: 6", task.test[0]) == 0.0


# ----------------------------------------------------------------------------- loaders, one per layout

def test_gsm8k_loads_and_cleans_the_expert_rationale():
    task = tasks.get_task("gsm8k", data=fixture("gsm8k_train.jsonl"), test_data=fixture("gsm8k_test.jsonl"))
    assert [len(task.train), len(task.test)] == [4, 2]
    ex = task.train[0]
    assert ex.id == "train/0" and ex.answer == "16" and ex.prompt.startswith("Priya bakes 36 muffins.")
    assert ex.solution == ("In the morning she sells 36/3 = 12 muffins.\nBy the evening she has sold 12+8 = 20 "
                           "muffins.\nSo 36-20 = 16 muffins are left.\nThe final answer is \\boxed{16}.")
    assert [e.answer for e in task.train + task.test] == ["16", "24", "-4", "1625", "60", "24"]
    for e in task.train + task.test:
        assert "<<" not in e.solution and "####" not in e.solution
        assert task.reward(e.solution, e) == 1.0              # the expert passes its own check
    assert task.test[0].id == "test/0"


@pytest.mark.parametrize("name, file, answers, has_solution", [
    ("math", "math.jsonl", ["25", "5", "\\frac{3}{4}", "(-1, 3)"], True),
    ("math500", "math500.jsonl", ["6", "10", "3\\sqrt{2}"], True),
    ("aime24", "aime24.jsonl", ["19", "23"], True),
    ("amc23", "amc23.jsonl", ["55", "28", "0.75"], False),               # floats on the hub
    ("minerva", "minerva.jsonl", ["60", "9"], False),
    ("olympiadbench", "olympiadbench.jsonl", ["38", "$2,3$", "31"], True),
])
def test_benchmark_layouts(name, file, answers, has_solution):
    task = tasks.get_task(name, data="" if name != "math" else fixture(file), test_data=fixture(file))
    assert [ex.answer for ex in task.test] == answers
    assert all((ex.solution is not None) == has_solution for ex in task.test)
    assert all(ex.prompt == ex.prompt.strip() and ex.prompt for ex in task.test)
    if name != "olympiadbench":                                   # its solutions state, not box, the answer
        assert all(task.reward(ex.solution, ex) == 1.0 for ex in task.test if ex.solution)
    assert task.reward(f"so the answer is \\boxed{{{answers[0]}}}", task.test[0]) == 1.0
    assert task.reward("\\boxed{-123456}", task.test[0]) == 0.0


def test_benchmark_ids_and_fields():
    math500 = tasks.get_task("math500", test_data=fixture("math500.jsonl"))
    assert math500.train == [] and math500.test[0].id == "test/test/number_theory/101.json"
    aime = tasks.get_task("aime24", test_data=fixture("aime24.jsonl"))
    assert [ex.id for ex in aime.test] == ["test/60", "test/61"]
    olympiad = tasks.get_task("olympiadbench", test_data=fixture("olympiadbench.jsonl")).test
    assert olympiad[2].prompt == ("A sequence has $a_1 = 1$ and $a_{n+1} = 2 a_n + 1$ for $n \\geq 1$.\n"
                                  "Compute $a_5$.")                   # context, then question
    assert olympiad[0].solution.split("\n\n") == ["The squares ending in 44 below 2500 are $12^2 = 144$ and "
                                                  "$38^2 = 1444$.", "Hence $n = 38$."]
    assert grader.grade("\\boxed{3, 2}", olympiad[1].answer) == 1.0    # several answers, any order


def test_eurus_keeps_math_drops_its_instruction_and_system_turn(caplog):
    with caplog.at_level(logging.WARNING, logger="tasks"):
        task = tasks.get_task("eurus-math", data=fixture("eurus.jsonl"), test_data=fixture("eurus.jsonl"))
        train = task.train
    assert [ex.id for ex in train] == ["train/0", "train/1", "train/3"]     # index 2 is a code problem
    assert [ex.prompt for ex in train] == ["What is $15\\%$ of $80$?", "Evaluate $\\left(\\frac{2}{3}\\right)^{2}$.",
                                           "Find the sum of all integers $k$ with $-3 \\le k \\le 5$."]
    assert [ex.answer for ex in train] == ["12", "\\frac{4}{9}", "9"]
    assert all(ex.solution is None for ex in train)
    assert "skipped 1 of 4 records" in caplog.text
    assert task.reward("... = \\boxed{\\dfrac49}", train[1]) == 1.0


def test_local_jsonl_and_parquet_give_the_same_examples(tmp_path):
    parquet = write_parquet(read_jsonl(fixture("olympiadbench.jsonl")), tmp_path / "ob.parquet")
    from_jsonl = tasks.get_task("olympiadbench", test_data=fixture("olympiadbench.jsonl")).test
    from_parquet = tasks.get_task("olympiadbench", test_data=parquet).test
    assert from_jsonl == from_parquet and len(from_parquet) == 3
    eurus = write_parquet(read_jsonl(fixture("eurus.jsonl")), tmp_path / "eurus.parquet")   # nested fields
    assert tasks.get_task("eurus-math", data=eurus, test_data=eurus).train[1].answer == "\\frac{4}{9}"


def test_jsonl_task_holds_out_a_seeded_test_split(tmp_path):
    parquet = write_parquet(read_jsonl(fixture("gsm8k_train.jsonl")), tmp_path / "train.parquet")
    task = tasks.get_task("jsonl", data=parquet, n_test=1, seed=3)
    assert len(task.train) == 3 and len(task.test) == 1
    assert not {ex.prompt for ex in task.train} & {ex.prompt for ex in task.test}
    again = tasks.get_task("jsonl", data=parquet, n_test=1, seed=3)
    assert again.test == task.test and again.train == task.train
    assert len(tasks.get_task("jsonl", data=parquet, n_train=2).train) == 2
    with_test = tasks.get_task("jsonl", data=parquet, test_data=fixture("gsm8k_test.jsonl"), n_test=1)
    assert len(with_test.train) == 4 and len(with_test.test) == 1
    with pytest.raises(ValueError, match="needs a data file"):
        tasks.get_task("jsonl")
    (tmp_path / "x.csv").write_text("question,answer\n")
    with pytest.raises(ValueError, match="must end in"):
        tasks.get_task("jsonl", data=str(tmp_path / "x.csv")).train


# ----------------------------------------------------------------------------- hub sources

MATH_CONFIGS = tasks.MATH_SUBJECTS.split(",")
HUB_CALLS = {
    "gsm8k": [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")],
    "math": [("EleutherAI/hendrycks_math", c, "train") for c in MATH_CONFIGS]
            + [("EleutherAI/hendrycks_math", c, "test") for c in MATH_CONFIGS],
    "eurus-math": [("PRIME-RL/Eurus-2-RL-Data", None, "train"), ("PRIME-RL/Eurus-2-RL-Data", None, "validation")],
    "math500": [("HuggingFaceH4/MATH-500", None, "test")],
    "aime24": [("HuggingFaceH4/aime_2024", None, "train")],
    "amc23": [("math-ai/amc23", None, "test")],
    "minerva": [("math-ai/minervamath", None, "test")],
    "olympiadbench": [("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")],
}
HUB_FIXTURE = {"openai/gsm8k": "gsm8k_train.jsonl", "EleutherAI/hendrycks_math": "math.jsonl",
               "PRIME-RL/Eurus-2-RL-Data": "eurus.jsonl", "HuggingFaceH4/MATH-500": "math500.jsonl",
               "HuggingFaceH4/aime_2024": "aime24.jsonl", "math-ai/amc23": "amc23.jsonl",
               "math-ai/minervamath": "minerva.jsonl", "Hothan/OlympiadBench": "olympiadbench.jsonl"}


@pytest.mark.parametrize("name", sorted(HUB_CALLS))
def test_default_hub_sources(name, monkeypatch):
    """Each task asks datasets for exactly the hub id, config and split of the table in tasks.py."""
    check_hub_calls(monkeypatch, lambda: tasks.get_task(name), HUB_CALLS[name], HUB_FIXTURE)


def test_a_local_copy_of_a_hub_folder_loads_with_the_hub_config_and_split(tmp_path):
    """A folder laid out like openai/gsm8k (two configs, README metadata) loads like the hub id."""
    root = tmp_path / "gsm8k"
    for config in ("main", "socratic"):
        write_parquet(read_jsonl(fixture("gsm8k_train.jsonl")), root / config / "train-00000-of-00001.parquet")
        write_parquet(read_jsonl(fixture("gsm8k_test.jsonl")), root / config / "test-00000-of-00001.parquet")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*\n"
        f"  - split: test\n    path: {c}/test-*\n" for c in ("main", "socratic")) + "---\n")
    task = tasks.get_task("gsm8k", data=str(root), test_data=str(root))
    assert [len(task.train), len(task.test)] == [4, 2] and task.test[0].answer == "60"
    both = math_data.load_records(f"{root}:main,socratic@test")
    assert len(both) == 4                                         # two configs, concatenated
    with pytest.raises(ValueError, match="name one"):             # no task default to inherit
        math_data.load_records(f"{root}:main")


def test_parse_source():
    assert math_data.parse_source("openai/gsm8k:main@train") == ("openai/gsm8k", ["main"], "train")
    assert math_data.parse_source("a/b:x,y") == ("a/b", ["x", "y"], None)
    assert math_data.parse_source("math-ai/amc23@test") == ("math-ai/amc23", [None], "test")
    assert math_data.parse_source(FIXTURES) == (FIXTURES, [None], None)


def test_to_fields_reads_other_spellings():
    f = math_data.to_fields({"ID": "2024-I-1", "Problem": " Find $x$. ", "Solution": "so \\boxed{7}", "Answer": 7})
    assert f == math_data.Fields("2024-I-1", "Find $x$.", "7", "so \\boxed{7}")
    with pytest.raises(ValueError, match="no answer"):
        math_data.to_fields({"problem": "no answer anywhere"})
    chat = {"prompt": [{"role": "user", "content": "1+1?"}], "answer": "2"}
    assert math_data.to_fields(chat).question == "1+1?"


# ----------------------------------------------------------------------------- prompts

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def chat_tokenizer(pad: bool = True) -> PreTrainedTokenizerFast:
    """The tiny character tokenizer plus ChatML turn markers and a chat template, as instruct models ship."""
    vocab = {t: i for i, t in enumerate(tiny.SPECIALS + [tiny.byte_char(b) for b in tiny.BYTES])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                  pad_token="<|pad|>" if pad else None)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def test_prompt_for_an_instruct_tokenizer_uses_its_chat_template():
    task = tasks.get_task("minerva", test_data=fixture("minerva.jsonl"))
    q = task.test[0].prompt
    expected = f"<|im_start|>user\n{q}\n\n{tasks.INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    assert task.render(task.test[0], chat_tokenizer()) == expected
    assert tasks.INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."
    plain = tasks.get_task("minerva", test_data=fixture("minerva.jsonl"), prompt_style="plain")
    assert plain.render(plain.test[0], chat_tokenizer()).startswith("Question: ")       # override


def test_prompt_for_a_base_tokenizer_is_plain():
    task = tasks.get_task("minerva", test_data=fixture("minerva.jsonl"))
    q = task.test[0].prompt
    expected = f"Question: {q}\n{tasks.INSTRUCTION}\nAnswer: Let's think step by step.\n"
    assert task.render(task.test[0], tiny.build_tokenizer()) == expected
    assert task.render(task.test[0], None) == expected
    chat = tasks.get_task("minerva", test_data=fixture("minerva.jsonl"), prompt_style="chat")
    with pytest.raises(ValueError, match="chat_template"):
        chat.render(chat.test[0], tiny.build_tokenizer())
    with pytest.raises(ValueError, match="prompt_style"):
        tasks.get_task("minerva", test_data=fixture("minerva.jsonl"), prompt_style="instruct")


def test_long_prompts_are_reported_and_skipped_never_truncated(caplog):
    tok = tiny.build_tokenizer()                                  # one token per character
    task = tasks.get_task("minerva", test_data=fixture("minerva.jsonl"))
    lengths = [len(task.render(ex, tok)) for ex in task.test]
    assert lengths[0] < lengths[1]
    rendered = task.render(task.test[0], tok)
    assert tasks.drop_long_prompts(task, tok, 0) == {"train": [], "test": []}
    with caplog.at_level(logging.WARNING, logger="tasks"):
        dropped = tasks.drop_long_prompts(task, tok, lengths[0])
    assert dropped == {"train": [], "test": ["test/1"]}
    assert [ex.id for ex in task.test] == ["test/0"] and task.render(task.test[0], tok) == rendered
    assert "skipped 1 of 2 test prompts longer than" in caplog.text
    assert f"(first: {fixture('minerva.jsonl')}:2, {lengths[1]} tokens)" in caplog.text          # file:line


# ----------------------------------------------------------------------------- group filter

def test_filter_groups_keeps_accuracy_between_bounds():
    r_o = [1, 1, 1, 1,  0, 0, 0, 0,  1, 0, 0, 0,  1, 1, 1, 0,  1, 0, 1, 0]
    assert tasks.filter_groups(r_o, k=4) == [False, False, True, True, True]
    assert tasks.filter_groups(torch.tensor(r_o, dtype=torch.float32), k=4) == [False, False, True, True, True]
    five = torch.tensor([1, 0, 0, 0, 0,  1, 1, 1, 1, 0,  1, 1, 1, 1, 1])          # 0.2 and 0.8 are kept
    assert tasks.filter_groups(five, k=5) == [True, True, False]
    assert tasks.filter_groups([1, 0, 0, 0], k=4, lo=0.3) == [False]
    with pytest.raises(ValueError, match="groups of k=4"):
        tasks.filter_groups([1, 0, 1], k=4)


# ----------------------------------------------------------------------------- expert data

def test_load_expert_and_attach_by_prompt_text(caplog):
    expert = tasks.load_expert(fixture("expert.jsonl"))
    assert len(expert["What is $15\\%$ of $80$?"]) == 2
    assert "Find the sum of all integers $k$ with $-3 \\le k \\le 5$." in expert    # surrounding space stripped
    train = tasks.get_task("eurus-math", data=fixture("eurus.jsonl"), test_data=fixture("eurus.jsonl")).train
    with caplog.at_level(logging.WARNING, logger="tasks"):
        attached = tasks.attach_expert(train, expert)
    assert [ex.id for ex in attached] == ["train/0", "train/3"]
    assert attached[0].solution == expert["What is $15\\%$ of $80$?"][0]
    assert train[0].solution is None                              # the inputs are not modified
    assert "covers 2 of 3 prompts" in caplog.text
    assert all(grader.grade(ex.solution, ex.answer) == 1.0 for ex in attached)


def test_load_expert_names_the_bad_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not a JSON record"):
        tasks.load_expert(str(bad))
    bad.write_text('{"prompt": "a", "answer": "b"}\n')
    with pytest.raises(ValueError, match=":1: .*'prompt' and 'response'"):
        tasks.load_expert(str(bad))


# ----------------------------------------------------------------------------- scripts/make_expert.py

def gsm8k_task():
    return tasks.get_task("gsm8k", data=fixture("gsm8k_train.jsonl"), test_data=fixture("gsm8k_test.jsonl"))


def test_rejection_sampling_keeps_only_distinct_checked_finished_samples(tmp_path):
    task = gsm8k_task()

    def sample(examples):                     # right, wrong, right again, right but unfinished (None)
        return [[f"so \\boxed{{{ex.answer}}}", "\\boxed{-999}", f"so \\boxed{{{ex.answer}}}", None] for ex in examples]

    out = str(tmp_path / "expert.jsonl")
    check = lambda c, ex: task.reward(c, ex) > 0.5                # noqa: E731
    stats = make_expert.rejection_sample(task.train, sample, check, out, batch=3)
    records = read_jsonl(out)
    assert [r["prompt"] for r in records] == [ex.prompt for ex in task.train]
    assert all(r["response"] == f"so \\boxed{{{r['answer']}}}" for r in records)
    assert stats == {"prompts": 4, "skipped_done": 0, "samples": 16, "accepted": 4, "prompts_with_expert": 4}
    assert len(read_jsonl(out + ".done")) == 4
    attached = tasks.attach_expert(task.train, tasks.load_expert(out))
    assert len(attached) == 4


def test_make_expert_resumes_after_an_interruption(tmp_path):
    task = gsm8k_task()
    out = str(tmp_path / "expert.jsonl")
    check = lambda c, ex: task.reward(c, ex) > 0.5                # noqa: E731
    asked = []

    def sample(examples):
        asked.append([ex.prompt for ex in examples])
        return [[f"\\boxed{{{ex.answer}}}"] for ex in examples]

    def dies_in_second_batch(examples):
        if asked:
            raise KeyboardInterrupt
        return sample(examples)

    with pytest.raises(KeyboardInterrupt):
        make_expert.rejection_sample(task.train, dies_in_second_batch, check, out, batch=2)
    with open(out, "a") as f:
        f.write('{"prompt": "torn')                               # a write cut short by the kill
    asked.clear()
    stats = make_expert.rejection_sample(task.train, sample, check, out, batch=2)
    assert asked == [[ex.prompt for ex in task.train[2:]]]        # only the prompts not yet done
    assert stats["skipped_done"] == 2 and stats["accepted"] == 2
    records = read_jsonl(out)                                     # parses: the torn line is gone
    assert sorted(r["prompt"] for r in records) == sorted(ex.prompt for ex in task.train)
    assert make_expert.rejection_sample(task.train, sample, check, out, batch=2)["skipped_done"] == 4


def test_make_expert_gold_cli(tmp_path):
    out = str(tmp_path / "gold.jsonl")                            # gsm8k's test split is never loaded
    make_expert.main(["--task", "gsm8k", "--data", fixture("gsm8k_train.jsonl"), "--source", "gold", "--out", out])
    task = gsm8k_task()
    expert = tasks.load_expert(out)
    assert [expert[ex.prompt] for ex in task.train] == [[ex.solution] for ex in task.train]
    with pytest.raises(SystemExit, match="no gold solutions"):
        make_expert.main(["--task", "minerva", "--split", "test", "--data", fixture("minerva.jsonl"),
                          "--source", "gold", "--out", out])


def test_make_expert_model_cli_end_to_end_on_the_tiny_model(tiny_path, tmp_path):
    out = str(tmp_path / "sampled.jsonl")
    argv = ["--task", "jsonl", "--data", fixture("math.jsonl"), "--model", tiny_path, "--k", "2",
            "--max-new-tokens", "4", "--batch", "3", "--max-prompt-tokens", "160", "--out", out]
    make_expert.main(argv)
    done = read_jsonl(out + ".done")
    assert len(done) == 3                  # 4 problems, one of them longer than 160 tokens: skipped
    assert all(grader.grade(r["response"], r["answer"]) == 1.0 for r in read_jsonl(out))   # only checked ones
    make_expert.main(argv)                                         # resume: nothing left to do
    assert len(read_jsonl(out + ".done")) == 3


# ----------------------------------------------------------------------------- another architecture

def build_other_architecture(kind: str, path: str) -> str:
    """A tiny Llama or GPT-2 with a chat-template tokenizer without a pad token (as Llama's ships)."""
    tok = chat_tokenizer(pad=False)
    ids = dict(bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=512, **ids))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=512, **ids))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_task_rollout_and_logprobs_with_another_architecture(kind, tmp_path):
    """As a new user: save, load with Auto classes, render with the chat template, sample, score."""
    path = build_other_architecture(kind, str(tmp_path / kind))
    assert AutoTokenizer.from_pretrained(path).pad_token is None
    model, tok = make_expert.load_policy(path)                     # gives the tokenizer a pad token
    assert type(model).__name__ == {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[kind]
    task = tasks.get_task("minerva", test_data=fixture("minerva.jsonl"))
    prompts = [task.render(ex, tok) for ex in task.test]
    assert all(p.startswith("<|im_start|>user\n") and p.endswith("<|im_start|>assistant\n") for p in prompts)

    torch.manual_seed(0)
    b = rollout.generate(model, tok, prompts, k=2, max_new_tokens=6, temperature=1.0)
    assert b.ids.shape[0] == 4 and b.group.tolist() == [0, 0, 1, 1] and len(b.completions) == 4
    assert b.completion_mask.sum(1).min() >= 1

    # the sampler's own scores equal token_logprobs at the same temperature, left padding included
    enc = tok(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
    torch.manual_seed(0)
    gen = model.generate(**enc, do_sample=True, temperature=0.7, top_k=None, top_p=None, max_new_tokens=5,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                         eos_token_id=None)
    P = enc.input_ids.shape[1]
    ref = torch.stack(gen.scores, 1).log_softmax(-1).gather(-1, gen.sequences[:, P:, None]).squeeze(-1)
    mask = torch.cat([enc.attention_mask, torch.ones_like(gen.sequences[:, P:])], 1)
    logp = rollout.token_logprobs(model, gen.sequences, mask, temperature=0.7)[:, P:]
    torch.testing.assert_close(logp, ref, atol=1e-4, rtol=1e-4)

    prm = prm_lib.load_prm(path)                                   # the PRM backbone, same architecture
    r = prm_lib.token_rewards(prm, b.ids, b.attention_mask, b.completion_mask)
    assert r.shape == b.ids.shape and (r == 0).all()               # a new head starts at zero
    assert AutoModelForCausalLM.from_pretrained(path) is not None


def test_arithmetic_small_space_takes_every_problem_and_refuses_too_many():
    task = tasks.Arithmetic(n_terms=2, lo=1, hi=3, n_test=5)                   # 3 * 3 * 2 = 18 problems
    assert len(task.train) == 13 and len({ex.prompt for ex in task.train + task.test}) == 18
    with pytest.raises(ValueError, match="18 distinct problems"):
        tasks.Arithmetic(n_terms=2, lo=1, hi=3, n_test=5, n_train=14)


def test_named_group_filters_split_all_fail_from_the_rest():
    r_o = [0, 0, 0, 0,  1, 0, 0, 0,  1, 1, 1, 1]                               # all fail, 1 of 4, all correct
    keep = {name: tasks.filter_groups(r_o, 4, *rng) for name, rng in tasks.GROUP_FILTERS.items()}
    assert keep == {"off": [True, True, True], "mixed": [False, True, False],
                    "some-correct": [False, True, True], "all-fail": [True, False, False]}


def test_the_careless_teacher_answers_after_the_first_step():
    task = tasks.Arithmetic(n_terms=3, lo=1, hi=9, n_test=5, seed=0)
    ex = tasks.Example(id="3+4-5", prompt="What is 3+4-5?", answer="2", solution="3+4=7. 7-5=2. Answer: 2")
    assert task.stop_early(ex) == "3+4=7. Answer: 7"
    assert task.reward(task.stop_early(ex), ex) == 0.0 and task.reward(ex.solution, ex) == 1.0
    for ex in task.test:                                                   # the expert's own first step, always
        assert task.stop_early(ex).split(". ")[0] == ex.solution.split(". ")[0]


def test_the_careless_teacher_stops_after_each_step_with_probability_p():
    """3 terms: one draw per demonstration, stop iff it is below p (the rule the default warm start was
    cached under). 4 terms: stops after step 1 with p, after step 2 with (1 - p) p, else complete."""
    three = tasks.Arithmetic(n_terms=3, lo=1, hi=9, n_test=5, seed=0)
    rng, ref = random.Random(1), random.Random(1)
    for ex in three.test * 40:
        assert three.careless(ex, rng, 0.7).solution == (three.stop_early(ex) if ref.random() < 0.7 else ex.solution)
    four = tasks.Arithmetic(n_terms=4, lo=1, hi=9, n_test=5, seed=0)
    ex = tasks.Example(id="3+4-5+6", prompt="What is 3+4-5+6?", answer="8",
                       solution="3+4=7. 7-5=2. 2+6=8. Answer: 8")
    assert four.stop_early(ex, 2) == "3+4=7. 7-5=2. Answer: 2"
    rng, n = random.Random(0), 20000
    counts = collections.Counter(four.careless(ex, rng, 0.6).solution.count(". ") for _ in range(n))
    for steps, p in {1: 0.6, 2: 0.4 * 0.6, 3: 0.4 * 0.4}.items():
        assert abs(counts[steps] / n - p) < 0.015, (steps, counts)
