"""Mutation check: miswire the project on purpose, in a copy, and show that a test written for each
miswiring fails.

    python benchmarks/mutations.py                       # every mutation (about 10 minutes on 2 cores)
    python benchmarks/mutations.py --only prm-grad-negated,policy-adv-negated
    python benchmarks/mutations.py --list                # the mutations and the tests named for them

The project (its tracked files) is copied to a temporary folder once. Each mutation replaces one exact
piece of source, which must occur exactly once (else the source moved on and the mutation is reported
as stale, not as caught), runs only the tests named for it, and restores the file. It is caught when
pytest exits 1 (a test failed; the table names which); a copy that does not even collect (exit 2 to 5)
counts as not caught. The named tests first run once on the unmutated copy and must pass, or nothing is shown.
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
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import cli  # noqa: E402  (the project's modules live one folder up)
ENV = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@dataclass
class Mutation:
    name: str
    what: str              # the miswiring, in words
    file: str
    old: str               # exact source, present once
    new: str
    tests: list            # pytest node ids that must catch it


LOOP = "tests/test_loop.py::"
MUTATIONS = [
    # the five of issue 15
    Mutation("prm-grad-negated", "the per-slice PRM gradient negated in prm_update", "train.py",
             "(trajectory_R(prm, part, args) * grad[rows]).sum().backward()",
             "(-trajectory_R(prm, part, args) * grad[rows]).sum().backward()",
             [LOOP + "test_prm_step_takes_the_gradient_of_eqn5_with_the_pseudo_expert_routing",
              LOOP + "test_prm_steps_raise_J_and_separate_expert_from_policy"]),
    Mutation("policy-adv-negated", "-adv handed to rloo.policy_loss in policy_update", "train.py",
             "loss, s = rloo.policy_loss(logp, old, adv[rows, cols],",
             "loss, s = rloo.policy_loss(logp, old, -adv[rows, cols],",
             [LOOP + "test_policy_step_raises_a_positive_advantage_completion_and_lowers_a_negative_one"]),
    Mutation("prm-only-keeps-outcome", "--method prm-only keeps the outcome reward", "train.py",
             'outcome = torch.zeros_like(r_o) if args.method == "prm-only" else r_o', "outcome = r_o",
             [LOOP + "test_each_method_takes_its_outcome_and_alpha"]),
    Mutation("pseudo-expert-flipped", "the pseudo-expert routing flipped (is_policy = correct_all)", "train.py",
             "is_policy = ~correct_all if", "is_policy = correct_all if",
             [LOOP + "test_prm_step_takes_the_gradient_of_eqn5_with_the_pseudo_expert_routing"]),
    Mutation("logp-negated", "-logp_tau handed to the Eqn 5 loss", "train.py",
             "return prm_update(prm, prm_opt, experts, rolls, logp_tau, r_o > 0.5, args)",
             "return prm_update(prm, prm_opt, experts, rolls, -logp_tau, r_o > 0.5, args)",
             [LOOP + "test_prm_step_takes_the_gradient_of_eqn5_with_the_pseudo_expert_routing"]),
    # more of the loop's wiring
    Mutation("prm-one-pass-drops-experts", "one-pass PRM step: the experts' slice of the gradient dropped", "train.py",
             "((R_E * dR_E).sum() + (R * dR).sum()).backward()", "(R * dR).sum().backward()",
             [LOOP + "test_prm_step_takes_the_gradient_of_eqn5_with_the_pseudo_expert_routing"]),
    Mutation("loop-eqn5-without-log-pi", "the loop hands Eqn 5 zeros for log pi_theta (weights exp(R) alone)",
             "train.py", "update_reward_model(prm, prm_opt, ref, policy, experts, rolls, rolls.logp, r_o, args,",
             "update_reward_model(prm, prm_opt, ref, policy, experts, rolls, 0 * rolls.logp, r_o, args,",
             [LOOP + "test_the_loop_hands_eqn5_log_pi_of_the_rollouts_at_the_sampling_temperature"]),
    Mutation("sampler-ignores-temperature", "the sampler draws and records at temperature 1", "rollout.py",
             "scores = scores / self.temperature", "scores = scores",
             ["tests/test_rollout.py::test_generate_records_the_logprob_of_each_sampled_token",
              "tests/test_rollout.py::test_generate_samples_at_the_temperature"]),
    Mutation("sampler-logp-shifted", "each token recorded with the log-prob of the token before it", "rollout.py",
             "self.take(input_ids[:, -1])", "self.take(input_ids[:, -2])",
             ["tests/test_rollout.py::test_generate_records_the_logprob_of_each_sampled_token"]),
    Mutation("both-routing-as-paper", "--pseudo-expert both drops the correct rollouts from the policy side",
             "train.py", "R_all, all_gather(logp_tau),\n                                      torch.ones_like(correct_all))",
             "R_all, all_gather(logp_tau),\n                                      ~correct_all)",
             [LOOP + "test_prm_step_takes_the_gradient_of_eqn5_with_the_pseudo_expert_routing"]),
    Mutation("repirl-ignores-alpha", "alpha ignored: the process reward at weight 1 for rePIRL", "train.py",
             '(1.0 if args.method == "prm-only" else args.alpha)', "1.0",
             [LOOP + "test_each_method_takes_its_outcome_and_alpha"]),
    Mutation("reduce-mean-not-seen-by-policy", "--reduce mean trains Eqn 5 on the mean, the policy sees sums",
             "train.py", 'if args.reduce == "mean":                                                   # the policy',
             'if False:                                                   # the policy',
             [LOOP + "test_the_policy_sees_the_trajectory_reward_eqn5_trained"]),
    Mutation("prm-update-skipped", "the PRM update skipped in the loop", "train.py",
             "if uses_prm and not args.freeze_prm:", "if False:",
             ["tests/test_train.py::test_repirl_run_changes_policy_and_prm_and_writes_metrics"]),
    Mutation("frozen-prm-updated", "--freeze-prm true still updates the PRM", "train.py",
             "if uses_prm and not args.freeze_prm:", "if uses_prm:",
             ["tests/test_flags.py::test_flag_group_runs[test-time]"]),
    Mutation("airl-sides-swapped", "AIRL: rollout tokens labelled expert, expert tokens policy", "baselines.py",
             "((experts, logp_E, True), (rolls, logp_old, False))",
             "((experts, logp_E, False), (rolls, logp_old, True))",
             [LOOP + "test_airl_step_and_reward_are_the_discriminator_of_irl_airl_loss"]),
    Mutation("airl-reward-without-log-pi", "AIRL: the policy's reward is f, without - log pi", "train.py",
             "return irl.airl_reward(r_phi, logp_old, mask, args.airl_form)",
             'return irl.airl_reward(r_phi, logp_old, mask, "sigmoid")',
             [LOOP + "test_airl_step_and_reward_are_the_discriminator_of_irl_airl_loss"]),
    Mutation("prime-labels-flipped", "PRIME trained on 1 - r_o", "baselines.py",
             "part.completion_mask, r_o[rows], args.prime_beta, n_seq)",
             "part.completion_mask, 1 - r_o[rows], args.prime_beta, n_seq)",
             [LOOP + "test_prime_step_and_reward_are_the_implicit_prm_of_irl_prime_loss"]),
    Mutation("prime-reward-reversed", "PRIME: the policy's reward beta log(pi_ref / pi_psi)", "train.py",
             "irl.prime_rewards(sequence_logprobs(prm, rolls, args, 1.0), sequence_logprobs(ref, rolls, args, 1.0),",
             "irl.prime_rewards(sequence_logprobs(ref, rolls, args, 1.0), sequence_logprobs(prm, rolls, args, 1.0),",
             [LOOP + "test_prime_step_and_reward_are_the_implicit_prm_of_irl_prime_loss"]),
    Mutation("entropy-bonus-negated", "the entropy bonus minimised", "train.py",
             'args.ent_coef if args.entropy == "bonus" else 0.0', '-args.ent_coef if args.entropy == "bonus" else 0.0',
             [LOOP + "test_entropy_bonus_raises_the_entropy_and_nothing_else_moves_without_it"]),
    Mutation("kl-penalty-negated", "the KL penalty rewarded (-kl_coef)", "train.py",
             "args.kl_coef, n_tokens)", "-args.kl_coef, n_tokens)",
             [LOOP + "test_kl_penalty_pulls_the_policy_towards_its_reference"]),
    Mutation("kl-reference-dropped", "the reference's log-probs never reach the policy loss", "train.py",
             "None if ref is None else logp_ref[rows, cols],", "None,",
             [LOOP + "test_kl_penalty_pulls_the_policy_towards_its_reference"]),
    Mutation("step-at-temperature-1", "the policy step scores tokens at temperature 1, not the sampler's",
             "train.py", "args.temperature, with_entropy=True)", "1.0, with_entropy=True)",
             [LOOP + "test_ratios_start_at_one_at_a_sampling_temperature_other_than_one",
              "tests/test_flags.py::test_flag_group_runs[temperature]"]),
    Mutation("ranks-average-gradients", "gradients averaged over ranks instead of summed", "distributed.py",
             "            dist.all_reduce(p.grad)\n",
             "            dist.all_reduce(p.grad)\n            p.grad /= WORLD\n",
             ["tests/test_distributed.py::test_two_processes_equal_one_process_on_the_same_global_batch"]),
    # KTO and RL Tango (issue 17)
    Mutation("kto-labels-flipped", "KTO: failed rollouts desirable, correct ones undesirable", "baselines.py",
             "part.completion_mask, r_o[rows], z_ref, args.kto_beta,",
             "part.completion_mask, 1 - r_o[rows], z_ref, args.kto_beta,",
             [LOOP + "test_kto_step_is_the_gradient_of_irl_kto_loss_with_the_batch_reference_point",
              LOOP + "test_kto_step_raises_desirable_rollouts_and_lowers_undesirable_ones_against_the_reference"]),
    Mutation("kto-reference-point-zero", "KTO: z_ref = 0 instead of the batch's mean implied reward", "baselines.py",
             "r_o[rows], z_ref, args.kto_beta,", "r_o[rows], 0.0, args.kto_beta,",
             [LOOP + "test_kto_step_is_the_gradient_of_irl_kto_loss_with_the_batch_reference_point"]),
    Mutation("kto-reference-point-unclamped", "KTO: a negative z_ref is not clamped at 0", "irl.py",
             "z = torch.as_tensor(z_ref, dtype=r.dtype, device=r.device).detach().clamp(min=0)",
             "z = torch.as_tensor(z_ref, dtype=r.dtype, device=r.device).detach()",
             ["tests/test_irl_methods.py::test_kto_loss_matches_brute_force_and_clamps_the_reference_point"]),
    Mutation("kto-runs-rloo", "--method kto falls through to the RLOO step", "train.py",
             'if args.method in ("bc", "kto"):', 'if args.method == "bc":',
             ["tests/test_flags.py::test_flag_group_runs[kto]"]),
    Mutation("tango-verdict-reward-inverted", "Tango: the verifier rewarded for disagreeing with the checker",
             "baselines.py", "irl.tango_loss(z, verdicts, r_o[rows], n_seq, n_correct)",
             "irl.tango_loss(z, verdicts, 1 - r_o[rows], n_seq, n_correct)",
             [LOOP + "test_tango_step_and_reward_are_the_verifier_of_irl_tango_loss",
              LOOP + "test_tango_steps_raise_the_verifiers_expected_reward"]),
    Mutation("tango-classes-unweighted", "Tango: correct and wrong rollouts weigh 1 each, whatever their counts",
             "irl.py", "if 0 < n_correct < n_seq else torch.ones_like(n_class)", "if False else torch.ones_like(n_class)",
             ["tests/test_irl_methods.py::test_tango_loss_matches_brute_force_with_classes_weighted_alike"]),
    Mutation("tango-class-count-per-micro-batch", "Tango: the class weights counted in each micro-batch, not the batch",
             "baselines.py", "r_o[rows], n_seq, n_correct)", "r_o[rows], n_seq)",
             [LOOP + "test_tango_step_and_reward_are_the_verifier_of_irl_tango_loss"]),
    Mutation("tango-judgement-at-first-token", "Tango: the judgement read after the first completion token",
             "baselines.py", "last = m.shape[1] - 1 - m.flip(1).long().argmax(1)", "last = m.long().argmax(1)",
             [LOOP + "test_tango_step_and_reward_are_the_verifier_of_irl_tango_loss"]),
    Mutation("tango-verdict-tokens-swapped", "Tango: '-' read as the verdict 'right', '+' as 'wrong'", "baselines.py",
             'VERDICTS = ("+", "-")', 'VERDICTS = ("-", "+")',
             [LOOP + "test_tango_step_and_reward_are_the_verifier_of_irl_tango_loss"]),
    Mutation("tango-process-reward-negated", "Tango: the policy rewarded for steps judged wrong", "irl.py",
             "_at_step_ends((2 * z.detach().float().sigmoid() - 1) / n_steps,",
             "_at_step_ends((1 - 2 * z.detach().float().sigmoid()) / n_steps,",
             [LOOP + "test_tango_step_and_reward_are_the_verifier_of_irl_tango_loss"]),
    # the loop around the steps
    Mutation("bad-steps-never-counted", "non-finite steps never counted: --max-bad-steps never stops", "train.py",
             "bad = bad + 1 if any(", "bad = 0 if any(",
             [LOOP + "test_loop_stops_after_max_bad_steps_without_applying_them"]),
    Mutation("resume-ignores-checkpoint", "--resume starts again from iteration 1", "train.py",
             "ckpt = checkpoints(args.out)[-1] if args.resume and checkpoints(args.out) else None", "ckpt = None",
             ["tests/test_train.py::test_ppo_trains_its_critic_and_resumes_exactly"]),
    Mutation("sigterm-no-checkpoint", "SIGTERM exits without writing a checkpoint", "train.py",
             "or it + 1 == args.iterations or stopping:", "or it + 1 == args.iterations:",
             ["tests/test_distributed.py::test_sigterm_checkpoints_the_iteration_and_exits_then_resumes_exactly"]),
    Mutation("warm-optimizer-initial-lr", "the warm start's scheduler entries handed to torch's loader",
             "checkpoint.py", "[{k: v for k, v in g.items() if k in opt.param_groups[0]}\n                                  |",
             "[g\n                                  |",
             [LOOP + "test_warm_start_optimizer_state_loads_with_its_scheduler_entries",
              "tests/test_flags.py::test_flag_group_runs[rloo-warm-optimizer]"]),
    Mutation("bc-steps-zero-divides", "the warm start's schedule divides by --bc-steps", "warmstart.py",
             "math.pi * s / max(1, args.bc_steps)", "math.pi * s / args.bc_steps",
             [LOOP + "test_warm_start_of_zero_steps_is_the_initial_model"]),
    # input handling and reporting
    Mutation("prm-zero-fills-any-missing-weight", "load_prm zero-fills every missing weight silently", "prm.py",
             "if keys:\n            more", "if False:\n            more",
             ["tests/test_prm.py::test_only_the_reward_head_may_be_missing_from_a_checkpoint"]),
    Mutation("code-bad-record-swallowed", "a malformed code record skipped with a count only", "tasks.py",
             "            except ValueError as e:\n                bad(where, str(e))\n                continue\n",
             "            except ValueError as e:\n                continue\n",
             ["tests/test_code_tasks.py::test_bad_code_record_names_file_line_and_reason_or_is_skipped",
              "tests/test_code_tasks.py::test_bad_code_record_stops_train_before_the_first_iteration"]),
    Mutation("heatmap-std-3f", "the heatmap legend prints std to 3 decimals", "report.py",
             "(mean {mean:.3g}, std {std:.3g})", "(mean {mean:.3f}, std {std:.3f})",
             ["tests/test_eval.py::test_heatmap_legend_reads_small_rewards"]),
    Mutation("too-few-prompts-after-dropping", "no check after --max-prompt-tokens drops prompts", "loop_data.py",
             "        check_prompts(task, args, hint, hint)\n", "",
             ["tests/test_hardening.py::test_max_prompt_tokens_leaving_too_few_prompts_is_refused"]),
]


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
