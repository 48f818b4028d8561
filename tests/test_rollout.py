"""The batch layout, generation, and the one token_logprobs."""
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

import rollout
import tiny


def test_tokenizer_round_trips_through_save_and_auto_load(tiny_path):
    text = "What is 37+25-18?\n37+25=62. 62-18=44. Answer: 44"
    built, loaded = tiny.build_tokenizer(), AutoTokenizer.from_pretrained(tiny_path)
    assert built(text).input_ids == loaded(text).input_ids
    assert len(built(text).input_ids) == len(text)                      # one token per character
    assert loaded.decode(loaded(text).input_ids) == text


def test_token_logprobs_equal_minus_model_cross_entropy(tiny_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    ids = torch.randint(2, 90, (3, 12))
    mask = torch.ones_like(ids)
    logp = rollout.token_logprobs(model, ids, mask)
    logits = model(input_ids=ids).logits
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    torch.testing.assert_close(logp[:, 1:], -ce.view(3, 11), atol=1e-5, rtol=1e-5)
    assert (logp[:, 0] == 0).all()
    # temperature divides the logits
    logp_t = rollout.token_logprobs(model, ids, mask, temperature=0.5)
    ref = (logits[:, :-1] / 0.5).log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(logp_t[:, 1:], ref, atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_logprobs_and_inputs_untouched(tiny_path):
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    batch = rollout.encode(tok, ["What is 1+2?\n", "Hi\n"], ["1+2=3. Answer: 3", "ok"])
    alone = rollout.encode(tok, ["Hi\n"], ["ok"])
    ids, mask = batch.ids.clone(), batch.attention_mask.clone()
    logp = rollout.token_logprobs(model, batch.ids, batch.attention_mask)
    assert torch.equal(ids, batch.ids) and torch.equal(mask, batch.attention_mask)
    row = logp[1][batch.completion_mask[1]]
    ref = rollout.token_logprobs(model, alone.ids, alone.attention_mask)[0][alone.completion_mask[0]]
    torch.testing.assert_close(row, ref, atol=1e-5, rtol=1e-5)


def test_generate_layout_masks_after_eos(tiny_path):
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    # make EOS likely so some rows stop early
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] += 0.5 * model.lm_head.weight.norm(dim=1).mean()
    torch.manual_seed(0)
    b = rollout.generate(model, tok, ["What is 1+2?\n", "Hi\n", "x\n"], k=4, max_new_tokens=12, temperature=1.0)
    assert b.ids.shape[0] == 12 and b.group.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for i in range(12):
        comp = b.ids[i][b.completion_mask[i]].tolist()
        assert tok.eos_token_id not in comp[:-1]                         # nothing after the first EOS
        assert b.completions[i] == tok.decode(comp, skip_special_tokens=True)
        after = b.completion_mask[i].nonzero().max() + 1
        assert (b.attention_mask[i, after:] == 0).all()
    assert any(tok.eos_token_id in b.ids[i][b.completion_mask[i]].tolist() for i in range(12))


def test_generate_from_ids_continues_a_state_token_for_token(tiny_path):
    """From the ids of a prompt plus the first 4 tokens of its greedy completion, greedy decoding
    continues with the rest of that completion, in each of the k copies (left padding included)."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    prompts = ["What is 1+2?\n", "Hi\n"]
    full = rollout.generate(model, tok, prompts, k=1, max_new_tokens=10, temperature=0.0)
    prefixes = [tok(p, add_special_tokens=False).input_ids + full.ids[i][full.completion_mask[i]].tolist()[:4]
                for i, p in enumerate(prompts)]
    rest = rollout.generate_from_ids(model, tok, prefixes, k=2, max_new_tokens=6, temperature=0.0)
    assert rest.group.tolist() == [0, 0, 1, 1]
    for i in range(2):
        tail = full.ids[i][full.completion_mask[i]].tolist()[4:10]
        assert len(tail) == 6                                            # no EOS before the cut
        for j in (2 * i, 2 * i + 1):
            assert rest.ids[j][rest.completion_mask[j]].tolist() == tail
            assert tok.decode(prefixes[i][-4:] + tail, skip_special_tokens=True) == full.completions[i]


def test_sampling_logprobs_match_generation_scores(tiny_path):
    """Recomputed log-probs at the sampling temperature are those of the sampler (ratios start at 1)."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    enc = tok(["What is 1+2?\n", "Hi\n"], padding=True, padding_side="left", return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, temperature=0.7, top_k=None, top_p=None, max_new_tokens=6,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    scores = torch.stack(out.scores, 1).log_softmax(-1)                  # (B, L, V) processed logits
    gen = out.sequences[:, enc.input_ids.shape[1]:]
    ref = scores.gather(-1, gen[..., None]).squeeze(-1)
    mask = torch.cat([enc.attention_mask, torch.ones_like(gen)], 1)
    logp = rollout.token_logprobs(model, out.sequences, mask, temperature=0.7)[:, enc.input_ids.shape[1]:]
    torch.testing.assert_close(logp, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_generate_records_the_logprob_of_each_sampled_token(tiny_path, temperature):
    """Batch.logp, recorded while sampling, is the forward pass's log-prob of each completion token at the
    sampling temperature, 0 elsewhere; select and concat carry it; greedy records none."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    model.model.norm.weight.data *= 8                                   # peaked: EOS is drawn early in some rows
    torch.manual_seed(0)
    prompts = ["What is 1+2?\n", "Hi\n", "7"]
    a = rollout.generate(model, tok, prompts, k=3, max_new_tokens=10, temperature=temperature)
    b = rollout.generate(model, tok, prompts[:1], k=2, max_new_tokens=4, temperature=temperature)
    both = rollout.concat([a, b], tok.pad_token_id)
    m = both.completion_mask
    assert 0 < m.sum(1).min() < m.sum(1).max()                          # ragged: the rows end at different columns
    ref = rollout.token_logprobs(model, both.ids, both.attention_mask, temperature)  # (N, T)
    torch.testing.assert_close(both.logp[m], ref[m], atol=1e-5, rtol=1e-5)
    assert (both.logp[~m] == 0).all() and both.logp[m].max() < 0
    rows = torch.tensor([1, 4, 9])
    torch.testing.assert_close(rollout.select(both, rows).logp.sum(-1), both.logp[rows].sum(-1))
    assert rollout.generate(model, tok, prompts, k=1, max_new_tokens=4, temperature=0).logp is None


def test_generate_samples_at_the_temperature(tiny_path):
    """The first token's frequencies over 3000 draws follow softmax(logits / 0.5), not softmax(logits)."""
    tok = AutoTokenizer.from_pretrained(tiny_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    model.model.norm.weight.data *= 3
    ids = tok("Hi\n", return_tensors="pt").input_ids
    logits = model(ids).logits[0, -1].detach()                          # (V,)
    torch.manual_seed(0)
    first = rollout.generate(model, tok, ["Hi\n"], k=3000, max_new_tokens=1, temperature=0.5).ids[:, -1]
    freq = torch.bincount(first, minlength=logits.numel()).float() / 3000  # (V,)
    at = {t: (logits / t).softmax(-1) for t in (0.5, 1.0)}
    assert (at[0.5] - at[1.0]).abs().max() > 0.1                        # the two temperatures are far apart
    assert (freq - at[0.5]).abs().max() < 0.03


def test_concat_realigns_batches():
    a = rollout.pack([[5, 6, 7]], [[8, 1]], pad_id=0)
    b = rollout.pack([[5], [6, 6]], [[9, 9, 9, 1], [4, 1]], pad_id=0)
    c = rollout.concat([a, b], pad_id=0)
    assert c.ids.tolist() == [[5, 6, 7, 8, 1, 0, 0], [0, 0, 5, 9, 9, 9, 1], [0, 6, 6, 4, 1, 0, 0]]
    assert c.completion_mask.long().tolist() == [[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]]
    assert c.group.tolist() == [0, 1, 2]
