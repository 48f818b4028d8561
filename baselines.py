"""The baselines' own steps in rePIRL's loop: the reward models of AIRL, PRIME and Math-Shepherd, RL Tango's
verifier, PPO's critic, behaviour cloning and KTO.

train.py runs every method through the same phases (rollout, reward-model update, scoring, policy
update); where a method differs from rePIRL, its step is here, dispatched from train.py:
- `airl_update`: R-AIRL's token discriminator (irl.airl_loss), expert tokens 1, policy tokens 0;
- `prime_update`: PRIME's implicit PRM beta log(pi_psi / pi_ref), cross-entropy on outcome labels;
- `mcts_update`: Math-Shepherd's step labels from Monte Carlo continuations (`mc_correct_counts`),
  BCE on the PRM's step logits;
- `tango_update`, `tango_rewards`: RL Tango's verifier, a causal LM whose next token after each step is
  a verdict '+' or '-', its last one trained by RLOO on the outcome; its expected verdicts are the process
  rewards;
- `critic_advantages`: --estimator ppo, GAE on a learned critic that takes its own steps;
- `bc_step`: behaviour cloning on expert trajectories (--method bc, and the tiny default's warm start);
- `kto_step`: KTO on the rollouts labelled by r_o, against the starting policy (--method kto).
`bc_step` and `kto_step` replace the whole reward-model and RLOO update for their methods.
Each reward-model step ends in `finish_reward_step`: one clipped AdamW step, its gradient norm logged.
"""
import torch

import irl
import prm as prm_lib
import rloo
import rollout
from batching import merge_stats, micro_batches, per_token, ppo_minibatches, sequence_logprobs
from distributed import DEVICE, RANK, WORLD, all_max, all_sum, apply_gradients, sampling_seed, sharded
from loop_data import outcome_rewards


def airl_update(prm, prm_opt, policy, experts, rolls, logp_old, args):
    """2) AIRL: the PRM's token output is the discriminator logit f; expert tokens 1, policy tokens 0."""
    logp_E = sequence_logprobs(policy, experts, args)                           # (E, T_E) at the sampling temperature
    n_E = all_sum(experts.completion_mask.sum().float())                        # whole-batch normalisers
    n_pi = all_sum(rolls.completion_mask.sum().float())
    prm_opt.zero_grad(set_to_none=True)
    loss_total, none = 0.0, torch.zeros(0, device=DEVICE)
    for batch, logp, is_expert in ((experts, logp_E, True), (rolls, logp_old, False)):
        for rows, cols, part in micro_batches(batch, args):
            m = part.completion_mask
            f = prm_lib.token_rewards(prm, part.ids, part.attention_mask, m)[m]  # (n_tokens,)
            sides = (f, logp[rows, cols][m], none, none) if is_expert else (none, none, f, logp[rows, cols][m])
            loss, _ = irl.airl_loss(*sides, form=args.airl_form, n_E=n_E, n_pi=n_pi)
            loss.backward()
            loss_total += loss.item()
    return finish_reward_step(prm, prm_opt, args, {"irl/loss": loss_total})


def prime_update(prm, prm_opt, ref, rolls, r_o, args):
    """2) PRIME: cross-entropy of sigmoid(beta sum_t log pi_psi / pi_ref) against the outcome labels."""
    n_seq = all_sum(torch.tensor(float(len(rolls)), device=DEVICE))
    prm_opt.zero_grad(set_to_none=True)
    loss_total = 0.0
    for rows, _, part in micro_batches(rolls, args):
        logp_psi = rollout.token_logprobs(prm, part.ids, part.attention_mask)                      # (n, t)
        with torch.no_grad():
            logp_ref = rollout.token_logprobs(ref, part.ids, part.attention_mask)                  # (n, t)
        loss, _ = irl.prime_loss(logp_psi, logp_ref, part.completion_mask, r_o[rows], args.prime_beta, n_seq)
        loss.backward()
        loss_total += loss.item()
    return finish_reward_step(prm, prm_opt, args, {"irl/loss": loss_total})


def mcts_update(prm, prm_opt, policy, tok, task, examples, rolls, r_o, it, args):
    """2) Math-Shepherd: Monte Carlo labels for the steps of some rollouts, then BCE on the PRM's step logits.

    The first `mc_rollouts` rollouts of each prompt are cut into steps (prm.batch_steps); every step
    but the last is labelled by `mc_n` continuations of its prefix (`mc_correct_counts`), the last by
    the rollout's own outcome (irl.rollout_step_labels); the PRM's output at each step's last token
    is the step logit, trained with one AdamW step on irl.step_bce_loss (mean over all ranks' steps).
    """
    per_prompt = min(args.mc_rollouts or args.k, args.k)
    rows = torch.tensor([i for i in range(len(rolls)) if i % args.k < per_prompt], device=DEVICE)
    labelled = rollout.select(rolls, rows)
    step_end = irl.step_end_positions(prm_lib.batch_steps(tok, labelled)[0])   # (n, S)
    n_correct, n_prefixes = mc_correct_counts(policy, tok, task, [examples[i // args.k] for i in rows.tolist()],
                                              labelled, step_end, per_prompt, it, args)  # (n, S)
    labels = irl.rollout_step_labels(n_correct, args.mc_n, r_o[rows], step_end, hard=not args.mc_soft)  # (n, S)
    valid = step_end >= 0                                                       # (n, S)
    n_steps = all_sum(valid.sum().float())                                      # whole-batch normaliser
    prm_opt.zero_grad(set_to_none=True)
    loss_total = 0.0
    for rows, cols, part in micro_batches(labelled, args):
        r = prm_lib.token_rewards(prm, part.ids, part.attention_mask, part.completion_mask)  # (n_mb, t)
        z = irl.gather_step_scores(r, step_end[rows] - cols.start)              # (n_mb, S) step logits; -1 stays < 0
        loss, _ = irl.step_bce_loss(z[valid[rows]], labels[rows][valid[rows]], n_steps)
        loss.backward()
        loss_total += loss.item()
    stats = {"irl/loss": loss_total, "irl/step_label": (all_sum(labels[valid].sum()) / n_steps).item(),
             "irl/mc_prefixes": all_sum(torch.tensor(float(n_prefixes), device=DEVICE)).item()}  # over all ranks
    return finish_reward_step(prm, prm_opt, args, stats)


@torch.no_grad()
def mc_correct_counts(policy, tok, task, examples, batch, step_end, per_prompt, it, args):
    """How many of `mc_n` continuations of each step's prefix reach the answer: (n, S), 0 at last steps.

    The prefix of step s is the prompt and the completion tokens up to the step's last token, the
    state the rollout was in after writing the step; the current policy continues it at the sampling
    temperature within what is left of the rollout's token budget, and the task's checker judges the
    whole completion (prefix and continuation). `batch` holds `per_prompt` rows of each of this rank's
    prompts, in prompt order, `examples` the rows' examples. One generate call per generation chunk
    of prompts, seeded by (seed, iteration, chunk, "mc") as the rollouts are, so with the same
    --gen-chunk the labels do not depend on the number of processes. Returns the counts and the
    number of prefixes continued.
    """
    n, S = step_end.shape
    first = int(batch.completion_mask.any(0).long().argmax())                   # first completion column
    start = batch.attention_mask.long().argmax(1)                               # (n,) first real token of each row
    n_steps = (step_end >= 0).sum(1)                                            # (n,)
    per_rank = args.prompts // WORLD
    chunk = args.gen_chunk or per_rank
    counts, n_prefixes = torch.zeros(n, S, device=DEVICE), 0
    for c in range(0, per_rank, chunk):
        torch.manual_seed(sampling_seed(args.seed, it, (RANK * per_rank + c) // chunk, "mc"))
        jobs = [(i, s) for i in range(c * per_prompt, (c + chunk) * per_prompt) for s in range(int(n_steps[i]) - 1)]
        if not (all_max(len(jobs)) if sharded(args) else jobs):                 # every rollout of the chunk is one step
            continue
        if not jobs:                                                            # sharded: join the other ranks' passes
            rollout.generate_from_ids(policy, tok, [batch.ids[0, start[0]:first].tolist()], 1, 1, args.temperature,
                                      synced_gpus=True)                         # (1 row, unused)
            continue
        prefixes = [batch.ids[i, start[i]:step_end[i, s] + 1].tolist() for i, s in jobs]
        used = [int(step_end[i, s]) + 1 - first for i, s in jobs]              # completion tokens written so far
        cont = rollout.generate_from_ids(policy, tok, prefixes, args.mc_n, args.max_new_tokens - min(used),
                                         args.temperature, sharded(args))       # (jobs * mc_n) rows
        texts = []
        for j in range(len(jobs)):
            written = prefixes[j][len(prefixes[j]) - used[j]:]                  # the completion up to the step
            for row in range(j * args.mc_n, (j + 1) * args.mc_n):
                rest = cont.ids[row][cont.completion_mask[row]].tolist()[:args.max_new_tokens - used[j]]
                texts.append(tok.decode(written + rest, skip_special_tokens=True))
        r = outcome_rewards(task, texts, [examples[i] for i, _ in jobs for _ in range(args.mc_n)])
        correct = (torch.tensor(r, device=DEVICE) > 0.5).float().view(len(jobs), args.mc_n).sum(1)  # (jobs,)
        for j, (i, s) in enumerate(jobs):
            counts[i, s] = correct[j]
        n_prefixes += len(jobs)
    return counts, n_prefixes


VERDICTS = ("+", "-")
"""RL Tango's verdict tokens: the step is right, the step is wrong (one token each, in the tiny character
vocabulary and in byte-level BPE ones)."""


def verdict_ids(tok) -> list[int]:
    """The token ids of the verdicts '+' and '-'; a tokenizer that splits either is refused."""
    ids = [tok(v, add_special_tokens=False).input_ids for v in VERDICTS]
    if any(len(i) != 1 for i in ids):
        raise SystemExit(f"--method tango: the verdicts {VERDICTS} must be one token each; this tokenizer gives {ids}")
    return [i[0] for i in ids]


def verdict_logits(verifier, part, ids: list[int]) -> torch.Tensor:
    """z (n, t): log p('+') - log p('-') of the verifier's next token after each token, at temperature 1;
    its distribution restricted to the two verdicts is p('+') = sigmoid(z)."""
    logits = rollout.logits_as_generated(verifier, part.ids, part.attention_mask)  # (n, t, V)
    pair = logits[..., ids].float()                                             # (n, t, 2) the verdicts' logits
    return pair[..., 0] - pair[..., 1]                                          # (n, t)


def verdict_uniforms(n: int, args, it: int) -> torch.Tensor:
    """Uniforms (n, m) that sample the m verdicts of each rollout of this rank; row i's come from a seed of
    (seed, iteration, its row over all ranks), so they do not depend on the number of processes."""
    rows = [torch.rand(args.tango_samples, generator=torch.Generator().manual_seed(
        sampling_seed(args.seed, it, RANK * n + i, "tango"))) for i in range(n)]
    return torch.stack(rows).to(DEVICE)                                         # (n, m)


def tango_update(verifier, opt, tok, rolls, r_o, it, args):
    """2) RL Tango: one RLOO step of the verifier on its judgement of each rollout (irl.tango_loss).

    The verifier reads each rollout teacher-forced; its verdict logit after the last completion token
    (`verdict_logits`; the end of the last step) gives p('+') = sigmoid(z). --tango-samples verdicts
    are drawn from it per rollout, each rewarded 1 when it agrees with the checker's r_o, and the
    verifier takes one AdamW step (--prm-lr) on the leave-one-out policy gradient, mean over all
    ranks' rollouts, correct and wrong rollouts weighted to count alike. One forward pass per
    micro-batch: the verdicts are drawn from its own detached logits.
    """
    u = verdict_uniforms(len(rolls), args, it)                                  # (N, m)
    ids = verdict_ids(tok)
    n_seq = all_sum(torch.tensor(float(len(rolls)), device=DEVICE))             # whole-batch normaliser
    n_correct = all_sum((r_o > 0.5).sum().float())                              # whole-batch class count
    opt.zero_grad(set_to_none=True)
    parts = []
    for rows, _, part in micro_batches(rolls, args):
        m = part.completion_mask                                                # (n, t)
        last = m.shape[1] - 1 - m.flip(1).long().argmax(1)                      # (n,) last completion column
        z = verdict_logits(verifier, part, ids).gather(1, last[:, None]).squeeze(1)  # (n,) the judgement's logit
        verdicts = (u[rows] < z.detach().sigmoid()[:, None]).float()           # (n, m) 1: '+'
        loss, s = irl.tango_loss(z, verdicts, r_o[rows], n_seq, n_correct)
        loss.backward()
        parts.append(s)
    stats = merge_stats(parts, "irl/tango_pg")
    return finish_reward_step(verifier, opt, args, stats | {"irl/loss": stats["irl/tango_pg"]})


@torch.no_grad()
def tango_rewards(verifier, tok, rolls, args) -> torch.Tensor:
    """3) RL Tango's process rewards (N, T) for the policy: the verifier's expected verdict (2 p('+') - 1) / S
    on the last token of each of a rollout's S steps (irl.tango_step_rewards)."""
    step_end = irl.step_end_positions(prm_lib.batch_steps(tok, rolls)[0])      # (N, S)
    ids = verdict_ids(tok)
    z = per_token(lambda part: verdict_logits(verifier, part, ids), rolls, args)  # (N, T)
    return irl.tango_step_rewards(irl.gather_step_scores(z, step_end), step_end, z.shape[1])


def finish_reward_step(prm, prm_opt, args, stats):
    """Apply the reward model's gradients; the gradient norm joins the stats."""
    stats["irl/grad_norm"] = apply_gradients(prm, prm_opt, args.prm_grad_clip)
    return stats


def critic_advantages(critic, critic_opt, outcome, r_phi, rolls, logp_old, alpha, args):
    """4) --estimator ppo: GAE advantages on the critic's values, then the critic's own steps (rloo.py).

    The values V(s_t) of the batch before any step (prm.state_values) give the advantages and the
    returns G_t (rloo.gae_advantages, gamma = 1, lambda = --gae-lambda) of the same token rewards
    rloo.advantages would baseline; the critic then takes one AdamW step on the clipped value loss
    per policy step, on the same minibatches. Returns the advantages (N, T) and the critic's stats.
    """
    mask = rolls.completion_mask
    in_return = args.entropy == "return"
    rewards = rloo.per_token_rewards(outcome, r_phi, mask, alpha, logp_old if in_return else None,
                                     args.ent_coef if in_return else 0.0)       # (N, T)
    with torch.no_grad():
        v_old = per_token(lambda part: prm_lib.state_values(critic, part.ids, part.attention_mask,
                                                            part.completion_mask), rolls, args)  # (N, T) V(s_t)
    adv, returns = rloo.gae_advantages(rewards, v_old, mask, 1.0, args.gae_lambda)  # (N, T), (N, T)
    stats = []
    for mb in ppo_minibatches(len(rolls), args):
        n_tokens = all_sum(mask[mb].sum().float())                              # whole-batch normaliser
        critic_opt.zero_grad(set_to_none=True)
        for rows, cols, part in micro_batches(rolls, args, mb):
            v = prm_lib.state_values(critic, part.ids, part.attention_mask, part.completion_mask)  # (n, t)
            loss, s = rloo.value_loss(v, v_old[rows, cols], returns[rows, cols], part.completion_mask, args.clip,
                                      n_tokens)
            loss.backward()
            stats.append(s)
        grad_norm = apply_gradients(critic, critic_opt, args.grad_clip)
    n = mask.sum().clamp(min=1).item()
    return adv, merge_stats(stats, "critic/loss") | {"critic/grad_norm": grad_norm,
                                                     "policy/adv_abs": (adv.abs() * mask).sum().item() / n}


def bc_step(policy, opt, batch, args, grad_clip):
    """One behaviour-cloning step on expert trajectories (irl.bc_loss), whole-batch normalised."""
    n_tokens = all_sum(batch.completion_mask.sum().float())
    opt.zero_grad(set_to_none=True)
    stats = []
    for _, _, part in micro_batches(batch, args):
        logp = rollout.token_logprobs(policy, part.ids, part.attention_mask)   # (n, t)
        loss, s = irl.bc_loss(logp, part.completion_mask, n_tokens)
        loss.backward()
        stats.append(s)
    return merge_stats(stats, "bc/nll") | {"policy/grad_norm": apply_gradients(policy, opt, grad_clip)}


def kto_step(policy, opt, ref, rolls, r_o, args):
    """2-4) --method kto: one AdamW step of KTO on this iteration's rollouts, desirable when r_o = 1 (irl.kto_loss).

    The implied reward r = sum_t log pi_theta / pi_ref of every rollout before the step (pi_theta as the
    sampler recorded it, rolls.logp) gives the reference point z_ref: its mean over the whole batch (all
    ranks), an estimate of KL(pi_theta || pi_ref) since the rollouts are samples of pi_theta.
    Log-probabilities of the policy and of the frozen reference (the starting policy) at the sampling
    temperature. KTO's implied reward carries its own anchor to the reference, so --kl-coef,
    --ent-coef, --alpha and the advantage flags do not enter (as for bc); one step per iteration,
    whatever --ppo-epochs and --minibatches.
    """
    mask = rolls.completion_mask
    logp_ref = sequence_logprobs(ref, rolls, args)                              # (N, T)
    r = ((rolls.logp - logp_ref) * mask).sum(-1)                                # (N,) implied rewards before the step
    n_seq = all_sum(torch.tensor(float(len(rolls)), device=DEVICE))             # whole-batch normaliser
    z_ref = all_sum(r.sum()) / n_seq                                            # batch mean over all ranks
    opt.zero_grad(set_to_none=True)
    stats = []
    for rows, cols, part in micro_batches(rolls, args):
        logp = rollout.token_logprobs(policy, part.ids, part.attention_mask, args.temperature)   # (n, t)
        loss, s = irl.kto_loss(logp, logp_ref[rows, cols], part.completion_mask, r_o[rows], z_ref, args.kto_beta,
                               n_seq=n_seq)
        loss.backward()
        stats.append(s)
    all_fail = (r_o.view(-1, args.k) <= 0).all(1).float().mean().item()      # groups with no desirable rollout
    return merge_stats(stats, "policy/loss") | {"policy/grad_norm": apply_gradients(policy, opt, args.grad_clip),
                                                "policy/all_fail_groups": all_fail}
