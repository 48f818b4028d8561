"""The process reward model r_phi(s_t, a_t): a causal LM with a scalar head on every token.

The PRM is `AutoModelForTokenClassification` with `num_labels=1` on top of any causal-LM
checkpoint (Qwen2ForTokenClassification for Qwen), so anyone can load a trained one with plain
`transformers`. Causal attention makes the hidden state at position t a function of the prompt
and of y_0..y_t, i.e. of the state s_t and the action a_t = y_t, and the head reads it out:

    r_phi(s_t, a_t) = w . h_t + b          for completion tokens t (0 elsewhere)
    R_phi(tau)      = sum_t r_phi(s_t, a_t)       (or the mean: `reduce="mean"`)

A head the checkpoint does not have is initialised to zero, so a new PRM starts at r = 0 and
every early weight in Eqn 5 comes from the policy's log-probabilities alone.

The same model with the head read one position earlier is a critic (PPO's value function,
`--estimator ppo`): the hidden state at t - 1 has seen s_t = [x, y_0..y_{t-1}] but not a_t, so

    V(s_t) = w . h_{t-1} + b               for completion tokens t          (`state_values`)

Steps: what a step is, for everything that reads the PRM per step (Math-Shepherd's step labels
and rewards in train.py, step scores, error localisation and best-of-N in eval.py). A completion
is cut into steps after every period followed by whitespace (the whitespace stays with the step
it ends) and after every newline (with the whitespace after it); a cut that would leave a
whitespace-only step is skipped. "37+25=62. 62-18=44. Answer: 44" has three steps, the last one
being the answer. A token belongs to the step that holds its last character; a token with no text
(EOS) belongs to the step of the token before it, so EOS is part of the last step. `step_scores`
sums token rewards within each step.

    python prm.py     # scores a sequence with an untrained tiny PRM and prints the shapes
"""
import bisect
import re

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForTokenClassification


def load_prm(name_or_path: str, **kwargs):
    """A token-level PRM from any causal-LM checkpoint (or a saved PRM); new heads start at zero.

    Only the reward head may be missing from the checkpoint (a causal LM has none), and only the
    checkpoint's own head may go unused (a causal LM's `lm_head`): both lie outside the backbone
    (`base_model_prefix`). A backbone weight the checkpoint lacks (transformers would initialise it at
    random) or one it holds that the PRM has no place for is a ValueError naming the keys.
    """
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    config.num_labels = 1
    config.classifier_dropout = 0.0                     # the head reads a reward, not a regularised class
    prm, info = AutoModelForTokenClassification.from_pretrained(
        name_or_path, config=config, output_loading_info=True, **kwargs)
    backbone = prm.base_model_prefix + "."
    for kind in ("missing", "unexpected"):
        keys = sorted(k for k in info[f"{kind}_keys"] if k.startswith(backbone))
        if keys:
            more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
            raise ValueError(f"{name_or_path}: {len(keys)} {kind} backbone weights ({', '.join(keys[:10])}{more}); "
                             f"expected every weight of the backbone, only the reward head "
                             f"({', '.join(n for n, _ in prm.named_parameters() if not n.startswith(backbone))}) "
                             f"may be missing")
    with torch.no_grad():
        for name, p in prm.named_parameters():
            if name in info["missing_keys"]:
                p.zero_()
    return prm


def token_rewards(prm, ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor):
    """r_phi(s_t, a_t) for every completion token, 0 on prompt and padding: (B, T) float32."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)                 # (B, T) same numbering as the policy
    r = prm(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids).logits[..., 0]  # (B, T)
    return r.float() * completion_mask                                          # (B, T)


def state_values(critic, ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor):
    """V(s_t) for every completion token t, read from the critic's output at position t - 1: (B, T).

    The state before action a_t ends with token t - 1 (for the first completion token, the last
    prompt token), so `values[:, t]` lines up with the action it precedes; 0 off completion tokens.
    """
    before = F.pad(completion_mask[:, 1:], (0, 1))                             # (B, T) positions t - 1 of actions t
    out = token_rewards(critic, ids, attention_mask, before)                    # (B, T) head output there
    return F.pad(out[:, :-1], (1, 0))                                           # (B, T) shifted onto t


def trajectory_reward(r: torch.Tensor, completion_mask: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """R_phi(tau): the sum (default) or mean of the token rewards of each completion: (B,)."""
    R = (r * completion_mask).sum(-1)                                           # (B,)
    if reduce == "mean":
        R = R / completion_mask.sum(-1).clamp(min=1)
    return R


# ----------------------------------------------------------------------------- steps

BOUNDARY = re.compile(r"\.\s+|\n\s*")      # a step ends after ". " (period + whitespace) or a newline


def split_steps(text: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of the steps of `text`; they tile the text; at least one span."""
    cuts, start = [], 0
    for m in BOUNDARY.finditer(text):
        if m.end() < len(text) and text[start:m.start()].strip():
            cuts.append(m.end())
            start = m.end()
    edges = [0] + cuts + [len(text)]
    return list(zip(edges[:-1], edges[1:]))


def step_of_char(text: str, pos: int) -> int:
    """Index of the step that holds character `pos` of `text`."""
    return bisect.bisect_right([s for s, _ in split_steps(text)[1:]], pos)


def token_steps(pieces: list[str]) -> list[int]:
    """Step index of every token, given the text of each token (pieces concatenate to the completion)."""
    starts = [s for s, _ in split_steps("".join(pieces))[1:]]                 # where steps 1, 2, .. begin
    out, end, step = [], 0, 0
    for piece in pieces:
        end += len(piece)
        if piece:                                                             # last character is end - 1
            step = bisect.bisect_right(starts, end - 1)
        out.append(step)                                                      # empty (EOS): previous step
    return out


def decode_pieces(tok, ids: list[int]) -> list[str]:
    """The text of each token, such that the pieces concatenate to the decoded completion exactly.

    One decode per token when that already concatenates right (character tokenizers, most BPE);
    otherwise (multi-byte characters split over tokens, SentencePiece spaces) from the lengths of
    decoded prefixes, so a token's piece may then hold part of a neighbour's character.
    """
    text = tok.decode(ids, skip_special_tokens=True)
    pieces = [tok.decode([i], skip_special_tokens=True) for i in ids]
    if "".join(pieces) == text:
        return pieces
    ends, prev = [], 0
    for t in range(len(ids)):
        prev = min(len(text), max(prev, len(tok.decode(ids[:t + 1], skip_special_tokens=True))))
        ends.append(prev)
    return [text[a:b] for a, b in zip([0] + ends[:-1], ends)]


def batch_steps(tok, batch):
    """Step index of every completion token (N, T), -1 elsewhere, on the batch's device; and each row's
    token pieces. `batch` is a rollout.Batch."""
    step_id = torch.full(batch.ids.shape, -1, dtype=torch.long, device=batch.ids.device)  # (N, T)
    all_pieces = []
    for i in range(len(batch)):
        cols = batch.completion_mask[i].nonzero().squeeze(1)                  # (L_i,)
        pieces = decode_pieces(tok, batch.ids[i, cols].tolist())
        step_id[i, cols] = torch.tensor(token_steps(pieces), dtype=torch.long, device=step_id.device)
        all_pieces.append(pieces)
    return step_id, all_pieces


def step_scores(r: torch.Tensor, step_id: torch.Tensor) -> list[torch.Tensor]:
    """Sum token rewards within each step; `step_id` (B, T) numbers steps 0, 1, .. and is -1 off-step.

    Returns one (n_steps_b,) tensor per row.
    """
    out = []
    for r_b, s_b in zip(r, step_id):                                            # (T,), (T,)
        n = int(s_b.max()) + 1 if (s_b >= 0).any() else 0
        out.append(torch.zeros(n, dtype=r.dtype, device=r.device).index_add_(0, s_b[s_b >= 0], r_b[s_b >= 0]))
    return out


def auc(scores, labels) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties 1/2.

    nan when either class is empty. O(n log n) through ranks (average ranks for ties).
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    labels = torch.as_tensor(labels).flatten().bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():                                              # average ranks of tied scores
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


if __name__ == "__main__":
    import tempfile

    import rollout
    import tiny
    with tempfile.TemporaryDirectory() as d:
        prm = load_prm(tiny.save_tiny(d))
        tok = tiny.build_tokenizer()
        batch = rollout.encode(tok, ["What is 1+2?\n"], ["1+2=3. Answer: 3"])
        r = token_rewards(prm, batch.ids, batch.attention_mask, batch.completion_mask)
        print("r", tuple(r.shape), "R", trajectory_reward(r, batch.completion_mask))
