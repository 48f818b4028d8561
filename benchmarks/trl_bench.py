"""TRL's GRPOTrainer or RLOOTrainer on the same work as one of our iterations, for benchmarks/speed.py.

Runs with the python of the TRL virtual environment that `speed.py --trl` makes (runs/trl-venv);
TRL is never a dependency of the project.

    runs/trl-venv/bin/python benchmarks/trl_bench.py --trainer grpo --policy P --prompts-file p.json \
        --k 4 --max-new-tokens 40 --lr 1e-5 --micro-batch 64 --iterations 12 --result r.json

Identical work, setting by setting:
- model and tokenizer: the same folder, loaded in float32 (TRL's bf16 default is turned off, and so
  is its gradient-checkpointing default: our loop does neither);
- prompts: the same text in the same order, one optimizer step per iteration's prompts
  (`shuffle_dataset=False`); `num_generations = k`, `per_device_train_batch_size` = our micro-batch
  and `gradient_accumulation_steps` = (prompts x k) / micro-batch, so one optimizer step sees
  prompts x k completions, as one of our iterations does, generated in one `generate` call;
- completion length: `generation_kwargs={"min_new_tokens": L}` with `max_completion_length = L`
  (unless --free-length), as speed_worker.py forces in our rows;
- sampling at temperature 1, no top-k/top-p; learning rate constant, AdamW without weight decay,
  gradient clip 1.0, PPO clip 0.2, one pass over the batch (`num_iterations=1`), `beta=0` (no KL, no
  reference model), `use_vllm=False`;
- reward: the arithmetic task's own `reward` (tasks.py imported from the repository).

Per step (TrainerCallback, on_step_begin to on_step_end): wall time, time inside `model.generate`,
time inside `_generate_and_score_completions` (generation plus rewards, old log-probs, padding),
and the peak RSS, its mark reset at on_train_begin.
"""
import json
import os
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

import torch                                                    # noqa: E402
import transformers                                             # noqa: E402
import trl                                                      # noqa: E402
from datasets import Dataset                                    # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402

import cli                                                      # noqa: E402
import tasks                                                    # noqa: E402
from speed_worker import Completions, GenerateClock, reset_peak, rss_mb   # noqa: E402


@dataclass
class Args:
    trainer: str
    """grpo (GRPOTrainer) or rloo (RLOOTrainer)"""
    policy: str
    """model and tokenizer folder"""
    prompts_file: str
    """JSON {prompts, answers}: lists per iteration"""
    result: str
    """JSON file to write"""
    lr: float = 1e-5
    """learning rate"""
    micro_batch: int = 64
    """completions per forward/backward pass (per_device_train_batch_size)"""
    iterations: int = 12
    """optimizer steps (warm-up included)"""
    temperature: float = 1.0
    """sampling temperature"""
    out: str = "runs/bench/trl"
    """TRL's output_dir (no checkpoints are saved)"""


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, and the phases measured inside it."""

    def __init__(self, clock, phase):
        self.clock, self.phase, self.records, self.marks = clock, phase, [], {}

    def on_train_begin(self, args, state, control, **kw):
        self.marks["rss_start_mb"] = reset_peak()

    def on_step_begin(self, args, state, control, **kw):
        self.clock.take()
        self.phase["s"] = 0.0
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kw):
        step_s, step_cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        gen_s, gen_cpu, tokens = self.clock.take()
        self.records.append({"time/iteration": step_s, "time/model_generate": gen_s, "time/generate": gen_s,
                             "time/gen_and_score": self.phase["s"], "cpu/iteration": step_cpu,
                             "cpu/generate": gen_cpu, "cpu/model_generate": gen_cpu, "gen_tokens": tokens} | rss_mb())


def main():
    flags = cli.dataclass_parser((Args, Completions), __doc__.split("\n\n")[0]).parse_args()
    opts, completions = cli.split(flags, Args), cli.split(flags, Completions)
    cli.check_choices(opts, {"trainer": ("grpo", "rloo")})
    k, length = completions.k, completions.max_new_tokens
    os.chdir(ROOT)

    with open(opts.prompts_file) as f:
        data = json.load(f)
    prompts, answers = data["prompts"][:opts.iterations], data["answers"][:opts.iterations]
    n_prompts = len(prompts[0])
    batch = n_prompts * k                                                    # completions per optimizer step
    micro = min(opts.micro_batch, batch)
    if batch % micro or micro % k:
        raise SystemExit(f"prompts x k = {batch} must be a multiple of the micro-batch {micro}, itself a multiple of k")
    dataset = Dataset.from_dict({"prompt": [t for it in prompts for t in it], "answer": [a for it in answers for a in it]})

    task = tasks.get_task("arithmetic", **data.get("task_args", {}))

    def outcome_reward(prompts, completions, answer, **kw):
        """The arithmetic task's r_o: 1 when the last line is 'Answer: N' with the gold N."""
        return [task.reward(c, tasks.Example(id="", prompt="", answer=a)) for c, a in zip(completions, answer)]

    common = dict(
        output_dir=opts.out, report_to="none", save_strategy="no", logging_steps=10**6, disable_tqdm=True,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, seed=0, dataloader_num_workers=0,
        learning_rate=opts.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        per_device_train_batch_size=micro, gradient_accumulation_steps=batch // micro,
        max_steps=opts.iterations, num_generations=k, max_completion_length=length,
        temperature=opts.temperature, top_k=0, top_p=1.0, shuffle_dataset=False,
        generation_kwargs=None if completions.free_length else {"min_new_tokens": length},
        beta=0.0, num_iterations=1, epsilon=0.2, use_vllm=False, log_completions=False,
    )
    if opts.trainer == "grpo":
        config, Trainer = trl.GRPOConfig(**common), trl.GRPOTrainer
    else:
        config, Trainer = trl.RLOOConfig(**common), trl.RLOOTrainer

    tok = AutoTokenizer.from_pretrained(opts.policy)
    model = AutoModelForCausalLM.from_pretrained(opts.policy, dtype=torch.float32)
    clock = GenerateClock(force_length=False)                # timing only: the length is forced by TRL's config
    phase = {"s": 0.0}
    trainer = Trainer(model=model, reward_funcs=outcome_reward, args=config, train_dataset=dataset,
                      processing_class=tok)
    original = trainer._generate_and_score_completions
    def timed(*a, **kw):
        t0 = time.perf_counter()
        out = original(*a, **kw)
        phase["s"] += time.perf_counter() - t0
        return out
    trainer._generate_and_score_completions = timed
    timer = StepTimer(clock, phase)
    trainer.add_callback(timer)
    trainer.train()

    result = {"iterations": timer.records, **timer.marks, "batch": batch, "micro_batch": micro,
              "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                           "torch": torch.__version__, "python": sys.version.split()[0]}}
    with open(opts.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
