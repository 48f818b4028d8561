"""The loop's own steps, called as train.main calls them, on a tiny batch of known correct and wrong
rollouts: each wires its loss the way the method defines it.

- the PRM step (`train.update_reward_model`) takes the gradient of Eqn 5 (`irl.repirl_loss`) with the
  pseudo-expert routing of `--pseudo-expert paper | both | off`, and a few steps raise J; the token
  rewards the policy then sees add up to the R_phi(tau) it trained (`--reduce sum | mean`);
- the AIRL and PRIME steps take the gradients of `irl.airl_loss` and `irl.prime_loss`, and
  `train.process_rewards` hands the policy f - log pi (AIRL) and beta log(pi_psi / pi_ref) (PRIME);
- RL Tango's verifier step takes the gradient of `irl.tango_loss` on the verdict logit ('+' against '-')
  after each rollout's last token, a few steps raise its expected reward, and the policy gets its
  expected verdicts (2 p('+') - 1) / S after every step; the KTO step takes the gradient of
  `irl.kto_loss` with the batch's mean implied reward as reference point, and raises the desirable
  rollouts against the reference;
- the outcome reward and alpha per method (`train.method_rewards`);
- one policy step (`train.policy_update`) raises the log-probability of a completion with a positive
  advantage and lowers one with a negative advantage; the entropy bonus raises the entropy, the KL
  penalty pulls the policy towards its reference; ratios start at 1 at any sampling temperature;
- `checkpoint.load_optimizer` takes the warm start's AdamW state; `--bc-steps 0` warm-starts nothing; the loop
  stops after `--max-bad-steps`.

Reference gradients are autograd through the loss on the whole batch in one pass; the loop's steps
run in micro-batches of a few rows (as the loop does with a small --micro-batch-tokens).

Run: OMP_NUM_THREADS=1 python -m pytest -q tests/test_loop.py   (CPU, no downloads, ~10 s)
"""
import copy
import dataclasses
import json
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

import baselines
import batching
import checkpoint
import irl
import loop_data
import prm as prm_lib
import rloo
import rollout
import tiny
import train
import warmstart

PROMPTS = ["What is 1+2?\n", "What is 3+4?\n", "What is 5+6?\n"]
EXPERT = ["1+2=3. Answer: 3", "3+4=7. Answer: 7", "5+6=11. Answer: 11"]
ROLLOUTS = ["1+2=3. Answer: 3", "1+2=4. Answer: 4",            # k = 2 per prompt: right, wrong
            "3+4=8. Answer: 8", "Answer: 7",                    # wrong, right
            "5+6=11. Answer: 11", "5+6=11. 11. Answer: 11"]     # both right
R_O = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])              # (N,) what the checker says of ROLLOUTS
K = 2
MB = 60                                                          # --micro-batch-tokens: 2 to 4 rows a pass


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The tiny tokenizer and a smaller Qwen2 (2 layers, width 32), saved like any checkpoint."""
    tok = tiny.build_tokenizer()
    path = str(tmp_path_factory.mktemp("small"))
    tiny.build_model(tok, hidden=32, layers=2, heads=4, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return tok, path


def batches(tok):
    """The expert trajectories of the 3 prompts (3 rows) and the 6 rollouts (2 per prompt)."""
    experts = rollout.encode(tok, PROMPTS, EXPERT)
    rolls = rollout.encode(tok, [p for p in PROMPTS for _ in range(K)], ROLLOUTS,
                           group=torch.arange(len(PROMPTS)).repeat_interleave(K))
    return experts, rolls


def noisy(model, seed: int, scale: float = 0.5):
    """The model with every parameter moved by seeded noise (a PRM head that is not zero, a policy that
    differs from its reference)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            size = p.abs().mean() if p.any() else 0.2                           # a zero head: rewards of ~1 a token
            p.add_(scale * size * torch.randn(p.shape, generator=g))
    return model


def load_prm(path, seed=2):
    return noisy(prm_lib.load_prm(path), seed).eval()


def fake_logp(rolls, seed=3):
    """log pi_old(a_t | s_t) of the rollouts: any negative numbers will do for the weights of Eqn 5."""
    g = torch.Generator().manual_seed(seed)
    return -3 * torch.rand(rolls.ids.shape, generator=g) * rolls.completion_mask      # (N, T)


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def assert_same_grads(got, expected):
    """Equal up to float32 rounding: every entry within 1e-5 of the largest entry (sums over a batch run in
    another order in micro-batches), or 1e-4 of itself."""
    assert len(got) == len(expected)
    got, expected = torch.cat([g.flatten() for g in got]), torch.cat([g.flatten() for g in expected])
    assert expected.abs().max() > 0, "a zero reference gradient would compare nothing"
    torch.testing.assert_close(got, expected, atol=1e-5 * expected.abs().max().item(), rtol=1e-4)


def no_step(model):
    """An optimiser that leaves the parameters and their .grad as the step found them."""
    return torch.optim.SGD(model.parameters(), lr=0.0)


def reward_step(model, args, experts, rolls, logp_old, ref=None, policy=None, tok=None):
    """train.update_reward_model as the loop calls it, for one step that only computes gradients."""
    return train.update_reward_model(model, no_step(model), ref, policy, experts, rolls, logp_old, R_O.clone(), args,
                                     tok=tok, task=None, examples=None, it=0)


# ----------------------------------------------------------------------------- rePIRL's PRM step (Eqn 5)

def eqn5_reference(prm, experts, rolls, logp_old, routing: str, reduce: str, partition: str = "uniform"):
    """-J of Eqn 5 on the whole batch, in one pass, with the rollouts routed as --pseudo-expert says."""
    R_E = prm_lib.trajectory_reward(prm_lib.token_rewards(prm, experts.ids, experts.attention_mask,
                                                          experts.completion_mask), experts.completion_mask, reduce)  # (E,)
    R = prm_lib.trajectory_reward(prm_lib.token_rewards(prm, rolls.ids, rolls.attention_mask, rolls.completion_mask),
                                  rolls.completion_mask, reduce)                  # (N,)
    logp_tau = (logp_old * rolls.completion_mask).sum(-1)                         # (N,) log pi_theta(tau)
    correct = R_O > 0.5                                                           # (N,)
    if routing == "paper":          # correct rollouts are expert samples, only the failed ones policy samples
        return irl.repirl_loss(R_E, R, logp_tau, ~correct, partition)[0]
    if routing == "off":            # every rollout is a policy sample
        return irl.repirl_loss(R_E, R, logp_tau, torch.ones_like(correct), partition)[0]
    # both: correct rollouts join the expert side and stay policy samples
    return irl.repirl_loss(torch.cat([R_E, R[correct]]), R, logp_tau, torch.ones_like(correct), partition)[0]


@pytest.mark.parametrize("routing, reduce, budget, partition", [
    ("paper", "sum", MB, "uniform"), ("both", "sum", MB, "uniform"), ("off", "mean", MB, "uniform"),
    ("paper", "sum", 10**6, "uniform"), ("both", "mean", 10**6, "uniform"),
    ("paper", "sum", MB, "policy"), ("both", "sum", 10**6, "policy")])
def test_prm_step_takes_the_gradient_of_eqn5_with_the_pseudo_expert_routing(small, routing, reduce, budget, partition):
    """In micro-batches (R_phi recomputed under grad, slices put together) and in one pass (R_phi once),
    with the paper's partition estimate and with --partition policy."""
    tok, path = small
    experts, rolls = batches(tok)
    logp_old = fake_logp(rolls)                                                   # (N, T)
    prm = load_prm(path)
    reference = copy.deepcopy(prm)
    eqn5_reference(reference, experts, rolls, logp_old, routing, reduce, partition).backward()
    args = train.Args(pseudo_expert=routing, reduce=reduce, prm_grad_clip=1e9, micro_batch_tokens=budget,
                      partition=partition)
    assert (len(batching.micro_batches(rolls, args)) > 1) == (budget == MB)
    stats = reward_step(prm, args, experts, rolls, logp_old)
    assert_same_grads(grads(prm), grads(reference))
    expected_norm = torch.cat([p.grad.flatten() for p in reference.parameters()]).norm().item()
    assert stats["irl/grad_norm"] == pytest.approx(expected_norm, rel=1e-4)
    assert stats["irl/n_policy"] == {"paper": 2, "both": 6, "off": 6}[routing]


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_the_policy_sees_the_trajectory_reward_eqn5_trained(small, reduce):
    """rePIRL's token rewards for the policy step (train.process_rewards) add up, over each rollout, to the
    R_phi(tau) the PRM step trained: the sum of r_phi, or with --reduce mean their mean."""
    tok, path = small
    _, rolls = batches(tok)
    prm = load_prm(path)
    args = train.Args(reduce=reduce, micro_batch_tokens=MB)
    r = train.process_rewards(prm, None, rolls, fake_logp(rolls), args, tok)   # (N, T)
    with torch.no_grad():
        r_phi = prm_lib.token_rewards(prm, rolls.ids, rolls.attention_mask, rolls.completion_mask)  # (N, T)
    R = prm_lib.trajectory_reward(r_phi, rolls.completion_mask, reduce)          # (N,)
    torch.testing.assert_close(r.sum(-1), R, atol=1e-5, rtol=1e-5)
    assert (r[~rolls.completion_mask] == 0).all() and R.abs().min() > 1e-3


def test_the_three_routings_give_three_gradients(small):
    """So that the test above tells them apart: on this batch no routing's gradient is another's."""
    tok, path = small
    experts, rolls = batches(tok)
    logp_old = fake_logp(rolls)
    flat = {}
    for routing in ("paper", "both", "off"):
        prm = load_prm(path)
        eqn5_reference(prm, experts, rolls, logp_old, routing, "sum").backward()
        flat[routing] = torch.cat([p.grad.flatten() for p in prm.parameters()])
    for a, b in (("paper", "both"), ("paper", "off"), ("both", "off")):
        assert (flat[a] - flat[b]).norm() > 1e-3 * flat[a].norm(), (a, b)


def test_prm_steps_raise_J_and_separate_expert_from_policy(small):
    """Five AdamW steps on the same batch: J of Eqn 5 rises, and the experts' R_phi rises above the
    failed rollouts' (the head starts at zero: every R_phi is 0 before the first step)."""
    tok, path = small
    experts, rolls = batches(tok)
    logp_old = fake_logp(rolls)
    prm = prm_lib.load_prm(path).eval()
    opt = torch.optim.AdamW(prm.parameters(), lr=1e-3, weight_decay=0.0)
    args = train.Args(micro_batch_tokens=MB)
    history = [train.update_reward_model(prm, opt, None, None, experts, rolls, logp_old, R_O, args, tok=None,
                                         task=None, examples=None, it=0) for _ in range(5)]
    gap = [s["irl/R_expert"] - s["irl/R_policy"] for s in history]               # before each step
    assert gap[0] == 0.0
    assert history[-1]["irl/J"] > history[0]["irl/J"] + 0.1, [s["irl/J"] for s in history]
    assert gap[-1] > 0.1, gap


# ----------------------------------------------------------------------------- AIRL and PRIME

@pytest.mark.parametrize("form", ["airl", "sigmoid"])
def test_airl_step_and_reward_are_the_discriminator_of_irl_airl_loss(small, form):
    """The discriminator step: expert tokens labelled 1, rollout tokens 0, log pi of the expert tokens
    from the policy at the sampling temperature. The policy's reward: f - log pi_old (AIRL), f (sigmoid)."""
    tok, path = small
    experts, rolls = batches(tok)
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    args = train.Args(method="airl", airl_form=form, prm_grad_clip=1e9, micro_batch_tokens=MB, temperature=0.8)
    logp_old = batching.sequence_logprobs(policy, rolls, args)                      # (N, T) at 0.8
    prm = load_prm(path)
    reference = copy.deepcopy(prm)
    m_E, m = experts.completion_mask, rolls.completion_mask
    with torch.no_grad():
        logp_E = rollout.token_logprobs(policy, experts.ids, experts.attention_mask, 0.8)  # (E, T_E)
    f_E = prm_lib.token_rewards(reference, experts.ids, experts.attention_mask, m_E)        # (E, T_E)
    f = prm_lib.token_rewards(reference, rolls.ids, rolls.attention_mask, m)                # (N, T)
    loss, _ = irl.airl_loss(f_E[m_E], logp_E[m_E], f[m], logp_old[m], form)
    loss.backward()
    reward_step(prm, args, experts, rolls, logp_old, policy=policy)
    assert_same_grads(grads(prm), grads(reference))

    r = train.process_rewards(reference, None, rolls, logp_old, args, tok)       # (N, T)
    expected = f.detach() - (logp_old if form == "airl" else 0)                  # (N, T) log D - log(1 - D)
    torch.testing.assert_close(r[m], expected[m], atol=1e-5, rtol=1e-5)
    assert (r[~m] == 0).all()


def test_prime_step_and_reward_are_the_implicit_prm_of_irl_prime_loss(small):
    """PRIME: BCE of beta log(pi_psi / pi_ref)(tau) against the outcome labels, log-probs at temperature 1
    whatever the sampling temperature; the policy's reward beta (log pi_psi - log pi_ref) per token."""
    tok, path = small
    experts, rolls = batches(tok)
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    psi = noisy(AutoModelForCausalLM.from_pretrained(path), seed=4, scale=0.2).eval()
    reference = copy.deepcopy(psi)
    args = train.Args(method="prime", prime_beta=0.5, prm_grad_clip=1e9, micro_batch_tokens=MB, temperature=0.7)
    m = rolls.completion_mask
    logp_psi = rollout.token_logprobs(reference, rolls.ids, rolls.attention_mask, 1.0)   # (N, T)
    with torch.no_grad():
        logp_ref = rollout.token_logprobs(ref, rolls.ids, rolls.attention_mask, 1.0)     # (N, T)
    loss, _ = irl.prime_loss(logp_psi, logp_ref, m, R_O, 0.5)
    loss.backward()
    reward_step(psi, args, None, rolls, None, ref=ref)
    assert_same_grads(grads(psi), grads(reference))

    r = train.process_rewards(reference, ref, rolls, None, args, tok)            # (N, T)
    torch.testing.assert_close(r[m], 0.5 * (logp_psi - logp_ref).detach()[m], atol=1e-5, rtol=1e-5)
    assert (r[~m] == 0).all()


# ----------------------------------------------------------------------------- RL Tango's verifier, KTO

def tango_reference(verifier, tok, rolls):
    """The verdict logits z (N, T) written out: the logits of the vocabulary's '+' minus '-' after every token,
    in one pass; each rollout's judgement logit (N,), after its last completion token; the step ends (N, S)."""
    vocab = tok.get_vocab()
    position_ids = (rolls.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = verifier(input_ids=rolls.ids, attention_mask=rolls.attention_mask, position_ids=position_ids).logits
    z = logits[..., vocab["+"]] - logits[..., vocab["-"]]                       # (N, T)
    last = torch.tensor([max(t for t in range(z.shape[1]) if rolls.completion_mask[i, t]) for i in range(len(rolls))])
    return z, z[torch.arange(len(rolls)), last], irl.step_end_positions(prm_lib.batch_steps(tok, rolls)[0])


def test_tango_step_and_reward_are_the_verifier_of_irl_tango_loss(small):
    """The verifier step: irl.tango_loss on the logit of '+' against '-' after each rollout's last token, the
    verdicts drawn from baselines.verdict_uniforms, the checker's labels; the policy's reward: (2 p('+') - 1) / S
    after the last token of each of its S steps."""
    tok, path = small
    _, rolls = batches(tok)
    verifier = noisy(AutoModelForCausalLM.from_pretrained(path), seed=6, scale=0.5).eval()
    reference = copy.deepcopy(verifier)
    args = train.Args(method="tango", tango_samples=3, prm_grad_clip=1e9, micro_batch_tokens=MB, temperature=0.7)
    assert len(batching.micro_batches(rolls, args)) > 1
    z_tok, z, step_end = tango_reference(reference, tok, rolls)                  # (N, T), (N,), (N, S)
    verdicts = (baselines.verdict_uniforms(len(rolls), args, it=0) < z.detach().sigmoid()[:, None]).float()  # (N, m)
    assert 0 < verdicts.mean() < 1                                              # both verdicts drawn
    loss, _ = irl.tango_loss(z, verdicts, R_O)
    loss.backward()
    reward_step(verifier, args, None, rolls, None, tok=tok)
    assert_same_grads(grads(verifier), grads(reference))

    r = train.process_rewards(reference, None, rolls, None, args, tok)          # (N, T)
    expected = torch.zeros(rolls.ids.shape)
    for i, s in (step_end >= 0).nonzero().tolist():
        expected[i, step_end[i, s]] = (2 * z_tok[i, step_end[i, s]].sigmoid() - 1) / (step_end[i] >= 0).sum()
    torch.testing.assert_close(r, expected.detach(), atol=1e-5, rtol=1e-5)
    assert (r != 0).sum() == (step_end >= 0).sum() > len(rolls)                  # every step end, none else


def test_tango_steps_raise_the_verifiers_expected_reward(small):
    """Five AdamW steps of the verifier on the same batch: its expected reward, p('+') on the correct rollouts and
    p('-') on the wrong ones (the class weights' balanced mean), rises."""
    tok, path = small
    _, rolls = batches(tok)
    verifier = AutoModelForCausalLM.from_pretrained(path).eval()
    opt = torch.optim.AdamW(verifier.parameters(), lr=3e-3, weight_decay=0.0)
    args = train.Args(method="tango", tango_samples=8, micro_batch_tokens=MB)

    def expected_reward():
        with torch.no_grad():
            p = tango_reference(verifier, tok, rolls)[1].sigmoid()               # (N,) p('+') of the judgement
        return 0.5 * (p[R_O > 0.5].mean() + (1 - p[R_O < 0.5]).mean()).item()
    before = expected_reward()
    for it in range(5):
        train.update_reward_model(verifier, opt, None, None, None, rolls, None, R_O, args, tok=tok, task=None,
                                  examples=None, it=it)
    assert expected_reward() > before + 0.05, (before, expected_reward())


def test_kto_step_is_the_gradient_of_irl_kto_loss_with_the_batch_reference_point(small):
    """KTO: irl.kto_loss on log pi_theta - log pi_ref at the sampling temperature, z_ref the mean implied reward
    of the whole batch before the step, r_o the labels."""
    tok, path = small
    _, rolls = batches(tok)
    ref = noisy(AutoModelForCausalLM.from_pretrained(path), seed=7, scale=1.0).eval()
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    reference = copy.deepcopy(policy)
    args = train.Args(method="kto", k=K, kto_beta=0.5, grad_clip=1e9, micro_batch_tokens=MB, temperature=0.8)
    m = rolls.completion_mask
    logp = rollout.token_logprobs(reference, rolls.ids, rolls.attention_mask, 0.8)          # (N, T)
    with torch.no_grad():
        logp_ref = rollout.token_logprobs(ref, rolls.ids, rolls.attention_mask, 0.8)        # (N, T)
    z_ref = ((logp - logp_ref) * m).sum(-1).mean().detach()                                 # the batch's mean r
    assert z_ref > 0.1                                                          # so a reference point of 0 would differ
    loss, _ = irl.kto_loss(logp, logp_ref, m, R_O, z_ref, 0.5)
    loss.backward()
    rolls = dataclasses.replace(rolls, logp=logp.detach())                      # as the sampler records them
    stats = baselines.kto_step(policy, no_step(policy), ref, rolls, R_O.clone(), args)
    assert_same_grads(grads(policy), grads(reference))
    assert stats["kto/z_ref"] == pytest.approx(z_ref.item(), rel=1e-4)


def test_kto_step_raises_desirable_rollouts_and_lowers_undesirable_ones_against_the_reference(small):
    """From the reference itself (r = 0 = z_ref), one SGD step: the right answers to 1+2 and 3+4 gain
    log-probability over the reference, the wrong ones lose it."""
    tok, path = small
    rolls = rollout.select(batches(tok)[1], torch.arange(4))                    # 1+2=3 (right), 1+2=4, 3+4=8, Answer: 7
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    args = train.Args(method="kto", k=K, grad_clip=1e9, micro_batch_tokens=MB)
    with torch.no_grad():
        rolls = dataclasses.replace(rolls, logp=rollout.token_logprobs(policy, rolls.ids, rolls.attention_mask))
    before = row_logprobs(policy, rolls)
    stats = baselines.kto_step(policy, torch.optim.SGD(policy.parameters(), lr=0.1), ref, rolls, R_O[:4], args)
    gain = row_logprobs(policy, rolls) - before                                  # log pi(tau) - log pi_ref(tau)
    assert stats["kto/z_ref"] == 0 and gain[[0, 3]].min() > 1e-2 and gain[[1, 2]].max() < -1e-2, gain


# ----------------------------------------------------------------------------- the return per method

@pytest.mark.parametrize("method, with_outcome, alpha", [
    ("rloo", True, 0.0),            # outcome only, no PRM
    ("prm-only", False, 1.0),       # the PRM's reward only (paper 4.4)
    ("repirl", True, 0.3), ("airl", True, 0.3), ("prime", True, 0.3), ("mcts", True, 0.3), ("tango", True, 0.3)])
def test_each_method_takes_its_outcome_and_alpha(method, with_outcome, alpha):
    r_o = R_O.clone()
    outcome, a = train.method_rewards(train.Args(method=method, alpha=0.3), r_o)
    assert a == alpha
    assert torch.equal(outcome, R_O if with_outcome else torch.zeros_like(R_O))
    assert torch.equal(r_o, R_O)                                                  # the caller's tensor untouched
    # what the policy's advantages then hear: rloo not the PRM, prm-only not the checker, rePIRL both
    mask = torch.ones(len(R_O), 4, dtype=torch.bool)                              # (N, T)
    r_phi = torch.arange(len(R_O) * 4, dtype=torch.float32).view(-1, 4) / 10     # (N, T) differs across rows

    def adv(r_o, r_phi):
        outcome, alpha = train.method_rewards(train.Args(method=method, alpha=0.3), r_o)
        return rloo.advantages(outcome, r_phi, mask, K, alpha)[0]               # (N, T)
    hears_outcome = not torch.equal(adv(R_O, r_phi), adv(1 - R_O, r_phi))
    hears_prm = not torch.equal(adv(R_O, r_phi), adv(R_O, r_phi.flip(0)))
    assert (hears_outcome, hears_prm) == (with_outcome, alpha > 0)


# ----------------------------------------------------------------------------- the policy step

def row_logprobs(model, rolls, temperature=1.0):
    """log pi(tau) of each rollout: (N,)."""
    with torch.no_grad():
        logp = rollout.token_logprobs(model, rolls.ids, rolls.attention_mask, temperature)  # (N, T)
    return (logp * rolls.completion_mask).sum(-1)


def policy_step(policy, rolls, adv, args, ref=None, lr=1e-2):
    """One train.policy_update, with plain SGD (a step along the gradient, nothing else)."""
    logp_old = batching.sequence_logprobs(policy, rolls, args)                      # (N, T) at args.temperature
    return train.policy_update(policy, torch.optim.SGD(policy.parameters(), lr=lr), rolls, logp_old, adv, ref, args)


def test_policy_step_raises_a_positive_advantage_completion_and_lowers_a_negative_one(small):
    tok, path = small
    _, rolls = batches(tok)
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    adv = torch.zeros(rolls.ids.shape)                                           # (N, T)
    adv[0], adv[1] = 1.0, -1.0                                                   # the right and the wrong 1+2
    adv = adv * rolls.completion_mask
    args = train.Args(ent_coef=0.0, grad_clip=1e9, micro_batch_tokens=MB)
    before = row_logprobs(policy, rolls)
    stats = policy_step(policy, rolls, adv, args)
    after = row_logprobs(policy, rolls)
    assert after[0] > before[0] + 1e-3 and after[1] < before[1] - 1e-3, (before, after)
    assert stats["policy/clip_frac"] == 0 and abs(stats["policy/approx_kl"]) < 1e-6   # ratios started at 1


def test_entropy_bonus_raises_the_entropy_and_nothing_else_moves_without_it(small):
    tok, path = small
    _, rolls = batches(tok)
    zero = torch.zeros(rolls.ids.shape)                                          # (N, T) no advantage
    entropy = []
    for ent_coef in (0.0, 0.5):
        policy = AutoModelForCausalLM.from_pretrained(path).eval()
        start = [p.detach().clone() for p in policy.parameters()]
        args = train.Args(ent_coef=ent_coef, grad_clip=1e9, micro_batch_tokens=MB)
        before = policy_step(policy, rolls, zero, args, lr=0.5)["policy/entropy"]
        moved = any(not torch.equal(a, p) for a, p in zip(start, policy.parameters()))
        after = policy_step(policy, rolls, zero, args, lr=0.0)["policy/entropy"]   # a second look, no step
        entropy.append((moved, before, after))
    assert entropy[0][0] is False                                                # nothing to follow: no step
    assert entropy[1][0] and entropy[1][2] > entropy[1][1] + 1e-4, entropy


def k3_kl(policy, ref, rolls):
    """Mean k3 estimate of KL(pi || ref) over the rollouts' tokens."""
    m = rolls.completion_mask
    with torch.no_grad():
        d = (rollout.token_logprobs(ref, rolls.ids, rolls.attention_mask)
             - rollout.token_logprobs(policy, rolls.ids, rolls.attention_mask))[m]  # (n_tokens,) log ref / pi
    return (d.exp() - d - 1).mean().item()


def test_kl_penalty_pulls_the_policy_towards_its_reference(small):
    """--kl-coef: with no advantage and no entropy bonus, the step is the KL penalty's alone: it lowers
    KL(pi || ref); with --kl-coef 0 the same step moves nothing."""
    tok, path = small
    _, rolls = batches(tok)
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    zero = torch.zeros(rolls.ids.shape)                                          # (N, T)
    kl = {}
    for kl_coef in (0.0, 1.0):
        policy = noisy(AutoModelForCausalLM.from_pretrained(path), seed=5, scale=1.0).eval()
        args = train.Args(ent_coef=0.0, kl_coef=kl_coef, grad_clip=1e9, micro_batch_tokens=MB)
        before = k3_kl(policy, ref, rolls)
        policy_step(policy, rolls, zero, args, ref=ref, lr=0.05)
        kl[kl_coef] = (before, k3_kl(policy, ref, rolls))
    assert kl[0.0][0] > 0.01 and kl[0.0][1] == kl[0.0][0]
    assert kl[1.0][1] < kl[1.0][0] - 1e-3, kl


def test_ratios_start_at_one_at_a_sampling_temperature_other_than_one(small):
    """Old log-probs and the step's log-probs are both taken at --temperature 0.7: the first step's
    ratios are exactly 1 (no clipping, approx_kl 0), and the step follows the advantage at 0.7."""
    tok, path = small
    _, rolls = batches(tok)
    policy = AutoModelForCausalLM.from_pretrained(path).eval()
    adv = torch.zeros(rolls.ids.shape)                                           # (N, T)
    adv[0] = 1.0
    adv = adv * rolls.completion_mask
    args = train.Args(temperature=0.7, ent_coef=0.0, grad_clip=1e9, micro_batch_tokens=MB, clip=0.01)
    before = row_logprobs(policy, rolls, 0.7)
    stats = policy_step(policy, rolls, adv, args)
    assert stats["policy/clip_frac"] == 0 and abs(stats["policy/approx_kl"]) < 1e-7, stats
    assert row_logprobs(policy, rolls, 0.7)[0] > before[0]


# ----------------------------------------------------------------------------- the warm start's optimiser, bad steps

def test_warm_start_optimizer_state_loads_with_its_scheduler_entries(small):
    """--keep-warm-optimizer: the warm start saved `opt.state_dict()` of an AdamW driven by a LambdaLR,
    whose groups carry `initial_lr`; its moments load into the loop's AdamW, the loop's lr stays."""
    tok, path = small
    model = AutoModelForCausalLM.from_pretrained(path)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    _, rolls = batches(tok)
    (-(rollout.token_logprobs(model, rolls.ids, rolls.attention_mask) * rolls.completion_mask).sum()).backward()
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    saved = opt.state_dict()
    assert "initial_lr" in saved["param_groups"][0]
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    checkpoint.load_optimizer(model, fresh, copy.deepcopy(saved))
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(fresh.state[p][key], opt.state[p][key]), key
    assert fresh.state[next(model.parameters())]["step"] == 1


def test_warm_start_of_zero_steps_is_the_initial_model(tmp_path):
    """--bc-steps 0: no behaviour cloning, the tiny model as initialised (the schedule divided by zero)."""
    args = train.parse_args(["--bc-steps", "0", "--cache", str(tmp_path)])
    path = warmstart.warm_start(args, loop_data.load_task(train.parse_args(["--n-train", "100"])))
    init = tiny.build_model(tiny.build_tokenizer(), seed=0)
    assert torch.equal(torch.cat([p.flatten() for p in init.parameters()]),
                       torch.cat([p.flatten() for p in AutoModelForCausalLM.from_pretrained(path).parameters()]))


def test_the_warm_start_clones_the_careless_teachers_demonstrations(tmp_path, monkeypatch):
    """--bc-stop-early 1: every demonstration the warm start clones stops after the first step
    ('a+b=c. Answer: c'); 0: every one is the expert's, all steps written."""
    seen = []
    real = warmstart.expert_batch
    monkeypatch.setattr(warmstart, "expert_batch", lambda tok, task, exs: seen.append(exs) or real(tok, task, exs))
    task = loop_data.load_task(train.parse_args(["--n-train", "100"]))
    for p, steps in (("1", 1), ("0", 2)):
        seen.clear()
        args = train.parse_args(["--bc-steps", "2", "--bc-batch", "16", "--bc-stop-early", p,
                                 "--cache", str(tmp_path / p)])
        warmstart.warm_start(args, task)
        assert [len(exs) for exs in seen] == [16, 16]
        assert all(ex.solution.count(". ") == steps for exs in seen for ex in exs), p


def test_the_loop_hands_eqn5_log_pi_of_the_rollouts_at_the_sampling_temperature(tmp_path, monkeypatch, small):
    """The importance weights' log pi_theta(tau) in the loop (recorded by the sampler) are the sampling
    policy's log-probs of each rollout at --temperature, summed over its completion tokens."""
    _, path = small
    seen = []
    real = train.prm_update
    monkeypatch.setattr(train, "prm_update", lambda prm, opt, experts, rolls, logp_tau, correct, args:
                        seen.append((rolls, logp_tau)) or real(prm, opt, experts, rolls, logp_tau, correct, args))
    monkeypatch.setattr(train, "install_sigterm_handler", threading.Event)
    args = train.parse_args(["--policy", path, "--iterations", "1", "--prompts", "2", "--k", "3", "--n-test", "2",
                             "--max-new-tokens", "8", "--temperature", "0.8", "--out", str(tmp_path / "run")])
    train.main(args)
    (rolls, logp_tau), = seen
    policy = AutoModelForCausalLM.from_pretrained(path).eval()                    # the sampling policy: iteration 1
    with torch.no_grad():
        logp = rollout.token_logprobs(policy, rolls.ids, rolls.attention_mask, 0.8)   # (N, T)
    torch.testing.assert_close(logp_tau, (logp * rolls.completion_mask).sum(-1), atol=1e-4, rtol=1e-5)


def test_loop_stops_after_max_bad_steps_without_applying_them(tmp_path, monkeypatch, small):
    """Non-finite PRM gradients (Eqn 5's loss made nan) in every iteration: each step is skipped, and the
    loop stops after --max-bad-steps of them in a row, the PRM as it started, one record per iteration."""
    _, path = small
    real = irl.repirl_loss
    monkeypatch.setattr(irl, "repirl_loss", lambda *a: (lambda loss, stats: (loss * float("nan"), stats))(*real(*a)))
    monkeypatch.setattr(train, "install_sigterm_handler", threading.Event)    # pytest keeps its own SIGTERM
    out = tmp_path / "run"
    args = train.parse_args(["--policy", path, "--iterations", "6", "--max-bad-steps", "2", "--save-every", "1",
                             "--prompts", "2", "--k", "2", "--n-test", "2", "--max-new-tokens", "8", "--out", str(out)])
    with pytest.raises(SystemExit, match="non-finite gradients in 2 iterations in a row"):
        train.main(args)
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["iteration"] for r in records] == [1, 2]
    assert all(r["irl/grad_norm"] != r["irl/grad_norm"] for r in records)     # nan: skipped
    assert sorted(c.name for c in out.iterdir() if c.name.startswith("ckpt-")) == ["ckpt-000001"]
    start, saved = prm_lib.load_prm(path), prm_lib.load_prm(str(out / "ckpt-000001" / "prm"))
    assert all(torch.equal(a, b) for a, b in zip(start.parameters(), saved.parameters(), strict=True))
