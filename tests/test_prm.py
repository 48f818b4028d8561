"""The PRM: one scalar per completion token, values read one position earlier, save/load round trip
(only the reward head may be missing), trajectory scores, steps, AUC."""
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Qwen2ForCausalLM

import prm as prm_lib
import rollout
import tiny


def test_one_reward_per_completion_token_and_zero_head(tiny_path):
    tok = AutoTokenizer.from_pretrained(tiny_path)
    prm = prm_lib.load_prm(tiny_path)
    b = rollout.encode(tok, ["What is 1+2?\n", "Hi\n"], ["1+2=3. Answer: 3", "ok"])
    r = prm_lib.token_rewards(prm, b.ids, b.attention_mask, b.completion_mask)
    assert r.shape == b.ids.shape and (r == 0).all()                    # a new head starts at r = 0
    with torch.no_grad():
        for p in prm.score.parameters():
            p.normal_()
    r = prm_lib.token_rewards(prm, b.ids, b.attention_mask, b.completion_mask)
    assert (r[~b.completion_mask] == 0).all() and (r[b.completion_mask] != 0).all()


def test_save_load_round_trip_gives_identical_rewards(tiny_path, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_path)
    prm = prm_lib.load_prm(tiny_path)
    with torch.no_grad():
        for p in prm.parameters():
            p.add_(0.01 * torch.randn_like(p))
    prm.save_pretrained(tmp_path)
    again = prm_lib.load_prm(str(tmp_path))
    b = rollout.encode(tok, ["What is 1+2?\n"], ["1+2=3. Answer: 3"])
    torch.testing.assert_close(prm_lib.token_rewards(prm, b.ids, b.attention_mask, b.completion_mask),
                               prm_lib.token_rewards(again, b.ids, b.attention_mask, b.completion_mask))


def edited_checkpoint(src: str, dst, drop: str = "", add: str = "") -> str:
    """A copy of checkpoint `src` in `dst` with one weight removed and/or one extra weight stored."""
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name != "model.safetensors":
            with open(os.path.join(src, name), "rb") as a, open(os.path.join(dst, name), "wb") as b:
                b.write(a.read())
    weights = load_file(os.path.join(src, "model.safetensors"))
    assert not drop or drop in weights
    weights = {k: v for k, v in weights.items() if k != drop} | ({add: torch.zeros(3)} if add else {})
    save_file(weights, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    return str(dst)


def test_only_the_reward_head_may_be_missing_from_a_checkpoint(tiny_path, tmp_path):
    """A causal LM loads (no reward head: it starts at zero; an untied lm_head goes unused); a backbone weight
    missing or a weight the PRM has no place for is an error that names it, never a silent zero."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    untied = tiny.build_model(tok, hidden=32, layers=2)
    untied.config.tie_word_embeddings = False
    Qwen2ForCausalLM(untied.config).save_pretrained(tmp_path / "untied")
    for path in (tiny_path, str(tmp_path / "untied")):
        assert all((p == 0).all() for p in prm_lib.load_prm(path).score.parameters())
    layer = "model.layers.1.mlp.up_proj.weight"
    with pytest.raises(ValueError, match=rf"1 missing backbone weights \({layer}\); .*only the reward head "
                                         r"\(score.weight, score.bias\) may be missing"):
        prm_lib.load_prm(edited_checkpoint(tiny_path, tmp_path / "missing", drop=layer))
    with pytest.raises(ValueError, match=r"1 unexpected backbone weights \(model.layers.0.mlp.extra.weight\)"):
        prm_lib.load_prm(edited_checkpoint(tiny_path, tmp_path / "extra", add="model.layers.0.mlp.extra.weight"))
    saved = prm_lib.load_prm(tiny_path)                                  # a saved PRM has its head: nothing missing
    saved.save_pretrained(tmp_path / "prm")
    without_head = edited_checkpoint(str(tmp_path / "prm"), tmp_path / "no-head", drop="score.weight")
    assert (prm_lib.load_prm(without_head).score.weight == 0).all()


def test_state_values_read_the_head_one_position_before_each_action(tiny_path):
    tok = AutoTokenizer.from_pretrained(tiny_path)
    critic = prm_lib.load_prm(tiny_path)
    with torch.no_grad():
        for p in critic.score.parameters():
            p.normal_()
    b = rollout.encode(tok, ["What is 1+2?\n", "Hi\n"], ["1+2=3. Answer: 3", "ok"])
    v = prm_lib.state_values(critic, b.ids, b.attention_mask, b.completion_mask)
    everywhere = prm_lib.token_rewards(critic, b.ids, b.attention_mask, b.attention_mask.bool())  # head at every token
    for i in range(2):
        cols = b.completion_mask[i].nonzero().squeeze(1)
        torch.testing.assert_close(v[i, cols], everywhere[i, cols - 1])  # V(s_t) from position t - 1
    assert (v[~b.completion_mask] == 0).all()
    # the value before the first completion token depends on the prompt only: change the completion
    other = rollout.encode(tok, ["What is 1+2?\n"], ["9+9=9. Answer: 9"])
    v_other = prm_lib.state_values(critic, other.ids, other.attention_mask, other.completion_mask)
    first = int(other.completion_mask[0].nonzero()[0])
    torch.testing.assert_close(v_other[0, first], v[0, b.completion_mask[0].nonzero()[0, 0]])
    assert v_other[0, first + 1] != v[0, b.completion_mask[0].nonzero()[1, 0]]


def test_trajectory_reward_sum_and_mean():
    r = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 4.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0]], dtype=torch.bool)
    assert prm_lib.trajectory_reward(r, mask).tolist() == [3.0, 4.0]
    assert prm_lib.trajectory_reward(r, mask, "mean").tolist() == [1.5, 4.0]


def test_split_steps_cuts_after_period_space_and_newline():
    text = "37+25=62. 62-18=44. Answer: 44"
    assert [text[s:e] for s, e in prm_lib.split_steps(text)] == ["37+25=62. ", "62-18=44. ", "Answer: 44"]
    text = "\nFirst 3.5 apples.\n\nThen 2 more\nSo 5"
    assert [text[s:e] for s, e in prm_lib.split_steps(text)] == ["\nFirst 3.5 apples.\n\n", "Then 2 more\n", "So 5"]
    assert prm_lib.split_steps("") == [(0, 0)]
    assert prm_lib.split_steps("a. b. ") == [(0, 3), (3, 6)]                            # no empty trailing step


def test_token_steps_puts_a_token_in_the_step_of_its_last_character_and_eos_in_the_last_step():
    text = "37+25=62. 62-18=44. Answer: 44"
    steps = prm_lib.token_steps(list(text) + [""])                                     # character tokens, then EOS
    assert steps == [0] * 10 + [1] * 10 + [2] * 10 + [2]
    assert prm_lib.token_steps(["1=2", ". ", "3"]) == [0, 0, 1]                         # ". " ends step 0
    assert prm_lib.token_steps(["1=2", ".", " 3"]) == [0, 0, 1]                         # " 3" starts step 1
    assert prm_lib.token_steps(["", "a. ", "b"]) == [0, 0, 1]


def test_batch_steps_on_an_encoded_batch():
    tok = tiny.build_tokenizer()
    batch = rollout.encode(tok, ["What is 1+2+3?\n", "Hi\n"], ["1+2=3. 3+3=6. Answer: 6", "x"])
    step_id, pieces = prm_lib.batch_steps(tok, batch)
    assert "".join(pieces[0]) == "1+2=3. 3+3=6. Answer: 6" and pieces[0][-1] == ""   # EOS has no text
    assert (step_id[~batch.completion_mask] == -1).all()
    row = step_id[0][batch.completion_mask[0]].tolist()
    assert row == [0] * 7 + [1] * 7 + [2] * 10
    assert step_id[1][batch.completion_mask[1]].tolist() == [0, 0]


def test_step_scores_sum_within_steps():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    steps = prm_lib.step_scores(r, torch.tensor([[-1, 0, 0, 1]]))
    assert steps[0].tolist() == [5.0, 4.0]


def test_auc_brute_force_with_ties():
    torch.manual_seed(0)
    scores = torch.randint(0, 5, (40,)).float()
    labels = torch.rand(40) > 0.5
    pos, neg = scores[labels], scores[~labels]
    brute = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean().item()
    assert abs(prm_lib.auc(scores, labels) - brute) < 1e-9
    assert prm_lib.auc([1.0, 2.0], [False, True]) == 1.0
    assert prm_lib.auc([1.0, 2.0], [True, True]) != prm_lib.auc([1.0, 2.0], [True, True])  # nan: one class
