"""Expert trajectories for rePIRL: a JSONL file of {"prompt", "response", "answer"} records.

`prompt` is the question as the data set states it (`Example.prompt`, no template), so the file
serves any model and prompt style; train.py matches it to a task's examples with
`tasks.load_expert` / `tasks.attach_expert`. Two sources:

- gold:  the data set's own solutions (GSM8K rationales, cleaned; MATH solutions), one per prompt;
- model: k samples per prompt from any Hugging Face causal LM (`rollout.generate`, the same
  batched sampler as training), kept only when the answer checks (`task.reward`, i.e. the
  grader) and the sample ended with EOS inside --max-new-tokens: rejection sampling. Identical
  samples of one prompt are kept once; --keep caps the number per prompt.

    python scripts/make_expert.py --task gsm8k --source gold --out expert/gsm8k_gold.jsonl
    python scripts/make_expert.py --task eurus-math --n 2000 --model Qwen/Qwen2.5-7B-Instruct \\
        --k 4 --max-new-tokens 1024 --batch 16 --out expert/eurus_qwen7b.jsonl

Resume: the model source appends to --out and, once a batch's records are written, appends the
batch's prompts to OUT.done (one JSON string per line). Run the same command again after an
interruption: prompts found in either file are skipped, and a line torn by the interruption is
cut off first. A resumed run draws different random numbers than an uninterrupted one would.
"""
import json
import os
import sys
from dataclasses import dataclass

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli    # noqa: E402
import tasks  # noqa: E402


@dataclass
class Args:
    task: str
    """a task of tasks.py (gsm8k, math, eurus-math, jsonl, ...)"""
    out: str
    """the JSONL file to write (appended to with --source model)"""
    split: str = "train"
    """which of the task's splits: train or test"""
    data: str = ""
    """that split's source, not the task's default (hub id, folder, file)"""
    n: int = 0
    """a seeded subset of this many prompts (0: all)"""
    source: str = "model"
    """gold (the data set's own solutions) or model (rejection sampling)"""
    model: str = ""
    """HF name or path of the sampling model (--source model)"""
    k: int = 4
    """samples per prompt"""
    max_new_tokens: int = 1024
    """completion length limit"""
    temperature: float = 1.0
    """sampling temperature (0: greedy)"""
    batch: int = 8
    """prompts per generate call"""
    keep: int = 0
    """at most this many accepted samples per prompt (0: all)"""
    prompt_style: str = "auto"
    """prompt template: auto (the chat template when the tokenizer has one), chat or plain"""
    max_prompt_tokens: int = 0
    """skip (and report) longer prompts (0: no limit)"""
    seed: int = 0
    """seed of the subset and of sampling"""


def parse_args(argv=None) -> Args:
    """The CLI from `Args` (cli.py), its choices checked."""
    args = Args(**vars(cli.dataclass_parser(Args, __doc__.split("\n\n")[0]).parse_args(argv)))
    cli.check_choices(args, {"split": ("train", "test"), "source": ("gold", "model"),
                             "prompt_style": tasks.PROMPT_STYLES})
    return args


def record(ex, response: str) -> str:
    return json.dumps({"prompt": ex.prompt, "response": response, "answer": ex.answer}) + "\n"


def write_gold(examples, out: str) -> int:
    """One record per example with a gold solution, written whole (temp file, then rename)."""
    with_solution = [ex for ex in examples if ex.solution]
    if not with_solution:
        raise SystemExit("these examples have no gold solutions: use --source model")
    with open(out + ".tmp", "w") as f:
        f.writelines(record(ex, ex.solution) for ex in with_solution)
    os.replace(out + ".tmp", out)
    return len(with_solution)


def repair(path: str):
    """Cut a last line that an interruption left without its newline."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def done_prompts(out: str) -> set[str]:
    """Prompts already processed: those with records in `out` and those listed in `out`.done."""
    done = set()
    for path, key in ((out, "prompt"), (out + ".done", None)):
        repair(path)
        if os.path.exists(path):
            with open(path) as f:
                done.update(json.loads(line)[key] if key else json.loads(line) for line in f if line.strip())
    return done


def rejection_sample(examples, sample, check, out: str, batch: int, keep: int = 0) -> dict:
    """Append to `out` the samples that pass `check`, `batch` prompts at a time, skipping done prompts.

    sample(examples) -> one list of completions (str, or None for a sample that did not finish)
    per example; check(completion, example) -> bool. Returns counts for the report.
    """
    done = done_prompts(out)
    todo = [ex for ex in examples if ex.prompt not in done]
    stats = {"prompts": len(examples), "skipped_done": len(examples) - len(todo), "samples": 0, "accepted": 0,
             "prompts_with_expert": 0}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    bar = tqdm(total=len(examples), initial=stats["skipped_done"], desc="expert prompts", unit="prompt")
    with open(out, "a") as out_f, open(out + ".done", "a") as done_f:
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            for ex, completions in zip(chunk, sample(chunk)):
                accepted = []
                for c in completions:
                    if c is not None and c not in accepted and check(c, ex):
                        accepted.append(c)
                accepted = accepted[:keep] if keep > 0 else accepted
                out_f.writelines(record(ex, c) for c in accepted)
                stats["samples"] += len(completions)
                stats["accepted"] += len(accepted)
                stats["prompts_with_expert"] += bool(accepted)
            out_f.flush()                                         # records first, then "done"
            done_f.writelines(json.dumps(ex.prompt) + "\n" for ex in chunk)
            done_f.flush()
            bar.update(len(chunk))
            bar.set_postfix(accept=f"{stats['accepted'] / max(stats['samples'], 1):.2f}")
    bar.close()
    return stats


def load_policy(name: str):
    """Model and tokenizer of any HF causal LM, ready for rollout.generate (a pad token is needed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name)
    if tok.pad_token is None:                   # Llama, Mistral and GPT-2 tokenizers come without one
        tok.pad_token = tok.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype).to(device).eval()
    return model, tok


def model_sampler(model, tok, task, k: int, max_new_tokens: int, temperature: float):
    """sample(examples) for `rejection_sample`: k completions per example, None where no EOS came."""
    import rollout

    def sample(examples):
        b = rollout.generate(model, tok, [task.render(ex, tok) for ex in examples], k, max_new_tokens, temperature)
        ended = ((b.ids == tok.eos_token_id) & b.completion_mask).any(1).tolist()    # (N,)
        texts = [text if end else None for text, end in zip(b.completions, ended)]
        return [texts[j * k:(j + 1) * k] for j in range(len(examples))]
    return sample


def main(argv=None):
    args = parse_args(argv)
    train = args.split == "train"
    source = {"data": args.data, "n_train": args.n} if train else {"test_data": args.data, "n_test": args.n}
    task = tasks.get_task(args.task, prompt_style=args.prompt_style, seed=args.seed, **source)
    examples = getattr(task, args.split)
    if args.source == "gold":
        print(f"wrote {write_gold(examples, args.out)} gold trajectories of {len(examples)} prompts to {args.out}")
        return
    if not args.model:
        raise SystemExit("--source model needs --model (a Hugging Face name or a local path)")
    import torch
    torch.manual_seed(args.seed)
    model, tok = load_policy(args.model)
    tasks.drop_long_prompts(task, tok, args.max_prompt_tokens, splits=(args.split,))
    examples = getattr(task, args.split)
    sample = model_sampler(model, tok, task, args.k, args.max_new_tokens, args.temperature)
    stats = rejection_sample(examples, sample, lambda c, ex: task.reward(c, ex) > 0.5, args.out, args.batch, args.keep)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
