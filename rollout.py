"""Rollouts: batched sampling of k completions per prompt, and the one `token_logprobs`.

Every sequence in this project, sampled or expert, lives in one layout, the `Batch`:

    ids              [pad pad p0 p1 p2 | c0 c1 c2 EOS pad]     (N, T)
    attention_mask   [ 0   0  1  1  1  |  1  1  1  1   0 ]     (N, T)  real tokens
    completion_mask  [ 0   0  0  0  0  |  1  1  1  1   0 ]     (N, T)  the actions a_t, EOS included
    logp             [ 0   0  0  0  0  | l0 l1 l2 l3   0 ]     (N, T)  sampled batches: log pi(a_t | s_t)

prompts left-padded (so generation appends to every row at the same column), completions
right-padded. Position ids are recomputed from the attention mask, as `generate` does, so a
sequence scores the same whatever its padding. The k samples of a prompt are adjacent rows and
`group[i]` names the prompt of row i: RLOO reshapes to (G, k) on that.

`token_logprobs(model, ids, mask, temperature)` computes a log-probability by a forward pass: the
policy loss, PPO's old log-probs, behaviour cloning and the reference all call it. It divides the
logits by the sampling temperature, so log-probs recomputed right after sampling are those of the
distribution that drew the tokens (PPO ratios start at exactly 1). The sampler itself also records
the log-probability of every token it draws (`Batch.logp`, from the distribution it sampled): Eqn
5's log pi_theta(tau), AIRL's reward and the entropy in the return read it, so no extra forward
pass over the rollouts is needed for them.

    python rollout.py      # samples from the untrained tiny model and prints the batch layout
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList


@dataclass
class Batch:
    ids: torch.Tensor               # (N, T) long
    attention_mask: torch.Tensor    # (N, T) long, 1 on real tokens
    completion_mask: torch.Tensor   # (N, T) bool, 1 on completion tokens up to and including EOS
    group: torch.Tensor             # (N,) long, index of the prompt each row answers
    completions: list[str]          # (N,) decoded completion text, special tokens removed
    logp: torch.Tensor | None = None  # (N, T) float, log pi(a_t | s_t) as sampled, 0 off completions; None if not sampled

    def __len__(self):
        return self.ids.shape[0]

    def to(self, device):
        return Batch(self.ids.to(device), self.attention_mask.to(device), self.completion_mask.to(device),
                     self.group.to(device), self.completions, None if self.logp is None else self.logp.to(device))


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int, group=None,
         completions=None) -> Batch:
    """Lay out token lists as a `Batch`: prompts left-padded, completions right-padded."""
    P = max(len(p) for p in prompt_ids)
    L = max(len(c) for c in completion_ids)
    N = len(prompt_ids)
    ids = torch.full((N, P + L), pad_id, dtype=torch.long)                  # (N, T)
    attention_mask = torch.zeros(N, P + L, dtype=torch.long)                # (N, T)
    completion_mask = torch.zeros(N, P + L, dtype=torch.bool)               # (N, T)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
        attention_mask[i, P - len(p):P + len(c)] = 1
        completion_mask[i, P:P + len(c)] = True
    group = torch.arange(N) if group is None else torch.as_tensor(group)
    return Batch(ids, attention_mask, completion_mask, group, completions or [""] * N)


def concat(batches: list[Batch], pad_id: int) -> Batch:
    """Stack Batches whose prompt and completion widths differ: pad prompts left, completions right."""
    starts = [int(b.completion_mask.any(0).long().argmax()) for b in batches]    # first completion column
    P = max(starts)
    L = max(b.ids.shape[1] - s for b, s in zip(batches, starts))
    def pad(x, b, s, value):
        return F.pad(x, (P - s, L - (b.ids.shape[1] - s)), value=value)
    groups, offset = [], 0
    for b in batches:
        groups.append(b.group + offset)
        offset += int(b.group.max()) + 1
    sampled = all(b.logp is not None for b in batches)
    return Batch(ids=torch.cat([pad(b.ids, b, s, pad_id) for b, s in zip(batches, starts)]),
                 attention_mask=torch.cat([pad(b.attention_mask, b, s, 0) for b, s in zip(batches, starts)]),
                 completion_mask=torch.cat([pad(b.completion_mask, b, s, False) for b, s in zip(batches, starts)]),
                 group=torch.cat(groups), completions=[t for b in batches for t in b.completions],
                 logp=torch.cat([pad(b.logp, b, s, 0.0) for b, s in zip(batches, starts)]) if sampled else None)


def select(batch: Batch, rows: torch.Tensor) -> Batch:
    """The given rows of a batch (their groups renumbered 0, 1, ..), trimmed of all-pad columns."""
    used = batch.attention_mask[rows].any(0).nonzero().squeeze(-1)             # columns some row uses
    cols = slice(int(used[0]), int(used[-1]) + 1)
    group = batch.group[rows]
    return Batch(batch.ids[rows, cols], batch.attention_mask[rows, cols], batch.completion_mask[rows, cols],
                 torch.unique_consecutive(group, return_inverse=True)[1], [batch.completions[i] for i in rows.tolist()],
                 None if batch.logp is None else batch.logp[rows, cols])


def encode(tokenizer, prompts: list[str], responses: list[str], group=None) -> Batch:
    """Tokenise (prompt, response) text pairs, e.g. expert trajectories; EOS ends every response."""
    prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    completion_ids = [tokenizer(r, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for r in responses]
    return pack(prompt_ids, completion_ids, tokenizer.pad_token_id, group, list(responses))


class SampledLogprobs(LogitsProcessor):
    """Applies the sampling temperature and records log pi(y_t | s_t) of every token `generate` draws.

    `generate` runs with temperature 1 and this as its only logits processor, so the scores it
    returns, logits / temperature, are exactly what is sampled. It keeps their log-softmax (N, V)
    for one step: the token drawn from them shows up as the last column of `input_ids` at the next
    call (`take` reads the final one). One step of (N, V) in memory, and no forward pass of its own.
    """
    def __init__(self, temperature: float):
        self.temperature, self.last, self.logp = temperature, None, []           # _, (N, V), [(N,) per token]

    def __call__(self, input_ids, scores):
        self.take(input_ids[:, -1])
        scores = scores / self.temperature                                      # (N, V)
        self.last = scores.float().log_softmax(-1)                              # (N, V)
        return scores

    def take(self, token):
        if self.last is not None:
            self.logp.append(self.last.gather(-1, token[:, None]).squeeze(-1))  # (N,)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], k: int, max_new_tokens: int, temperature: float,
             synced_gpus: bool = False) -> Batch:
    """Sample k completions for each prompt in one batched `generate` call (temperature 0: greedy).

    Sampling is plain softmax(logits / temperature): no top-k, no top-p, so `token_logprobs` at the
    same temperature is exactly the sampling distribution; `Batch.logp` holds the log-probability
    of each sampled token as drawn (`SampledLogprobs`; None when greedy). `synced_gpus`: a model
    sharded over ranks (FSDP) gathers its weights from every rank in every forward pass, so a rank
    whose rows are done keeps running passes (their output unused) until every rank's are.
    """
    prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    return generate_from_ids(model, tokenizer, prompt_ids, k, max_new_tokens, temperature, synced_gpus)


@torch.no_grad()
def generate_from_ids(model, tokenizer, prompt_ids: list[list[int]], k: int, max_new_tokens: int,
                      temperature: float, synced_gpus: bool = False) -> Batch:
    """`generate` from token ids: continue any state s_t = [x, y_0..y_{t-1}] exactly as it was sampled
    (Math-Shepherd's completions start from a prompt and part of a rollout; text would re-tokenise)."""
    device = next(model.parameters()).device
    prompts = pack(prompt_ids, [[] for _ in prompt_ids], tokenizer.pad_token_id)  # (G, P) left-padded, no completion
    P = prompts.ids.shape[1]
    input_ids = prompts.ids.repeat_interleave(k, 0).to(device)                   # (N, P), N = G * k
    prompt_mask = prompts.attention_mask.repeat_interleave(k, 0).to(device)     # (N, P)
    config = GenerationConfig(                                                   # the temperature: SampledLogprobs
        do_sample=temperature > 0, temperature=None, top_k=None, top_p=None,
        max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    recorder = SampledLogprobs(temperature)
    out = model.generate(input_ids=input_ids, attention_mask=prompt_mask, generation_config=config,
                         logits_processor=LogitsProcessorList([recorder]) if temperature > 0 else None,
                         synced_gpus=synced_gpus)                                # (N, P + L)
    completion = out[:, P:]                                                      # (N, L)
    is_eos = completion == tokenizer.eos_token_id                                # (N, L)
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0                           # (N, L) strictly after the first EOS
    completion_mask = ~after_eos                                                 # (N, L)
    texts = tokenizer.batch_decode(completion.masked_fill(after_eos, tokenizer.pad_token_id), skip_special_tokens=True)
    logp = None
    if temperature > 0:
        recorder.take(out[:, -1])
        drawn = torch.stack(recorder.logp, 1)                                    # (N, L) one per generated column
        logp = F.pad(torch.where(completion_mask, drawn, 0.0), (P, 0))           # (N, T)
    return Batch(
        ids=out,
        attention_mask=torch.cat([prompt_mask, completion_mask.long()], 1),     # (N, T)
        completion_mask=torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), completion_mask], 1),  # (N, T)
        group=torch.arange(len(prompt_ids)).repeat_interleave(k).to(device),     # (N,)
        completions=texts,
        logp=logp,
    )


def logits_as_generated(model, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The model's logits (B, T, V) for a left-padded batch, positions numbered from each row's first real
    token as `generate` numbers them, so a sequence scores the same whatever its padding."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)                 # (B, T)
    return model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids).logits  # (B, T, V)


def token_logprobs(model, ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False):
    """logp[b, t] = log pi(ids[b, t] | ids[b, :t]) at `temperature`; column 0 (no context) is 0.

    Returns logp (B, T), or (logp, entropy) with the entropy (B, T) of the full next-token
    distribution that produced each token. Mask with `completion_mask` before use.
    """
    assert temperature > 0, "log-probs need a positive temperature (greedy decoding has none)"
    logits = logits_as_generated(model, ids, attention_mask)                   # (B, T, V)
    logp_all = (logits[:, :-1].float() / temperature).log_softmax(-1)           # (B, T-1, V) predicts ids[:, 1:]
    logp = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1)                    # (B, T-1)
    logp = F.pad(logp, (1, 0))                                                  # (B, T)
    if not with_entropy:
        return logp
    entropy = -(logp_all.exp() * logp_all).sum(-1)                              # (B, T-1)
    return logp, F.pad(entropy, (1, 0))                                         # (B, T), (B, T)


if __name__ == "__main__":
    import tiny
    tok = tiny.build_tokenizer()
    batch = generate(tiny.build_model(tok).eval(), tok, ["What is 1+2?\n", "Hi\n"], k=2, max_new_tokens=8, temperature=1.0)
    print(batch.ids, batch.attention_mask, batch.completion_mask.long(), batch.group, batch.completions, sep="\n")
