"""The embedded default model: a character tokenizer and a ~0.8M-parameter Qwen2, built offline.

Everything in this project runs against any Hugging Face causal LM, but a student on a laptop (or
CI with no network) needs one that exists without a download. This file builds it:

- a character-level tokenizer over printable ASCII plus newline, so every digit is one token and
  any text the tasks produce can be encoded; two special tokens, `<|pad|>` and `<|endoftext|>`.
  It is a byte-level BPE with no merges, the format of Qwen2's own tokenizer: `AutoTokenizer`
  loads any folder holding a Qwen2 config as `Qwen2Tokenizer`, which keeps the vocabulary and
  merges but imposes its own byte-level pre-tokenizer, and with no merges that gives the same ids;
- a Qwen2 causal LM from a config (4 layers, width 128, tied embeddings), randomly initialised.

Both are saved with `save_pretrained`, so the rest of the code loads them like any hub model:
`AutoTokenizer.from_pretrained(path)`, `AutoModelForCausalLM.from_pretrained(path)`.

    python tiny.py out/tiny        # writes the tokenizer and an untrained model to out/tiny
"""
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIALS = ["<|pad|>", "<|endoftext|>"]
BYTES = list(range(32, 127)) + [10]                   # printable ASCII and newline


def byte_char(b: int) -> str:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest move to 256 + b."""
    return chr(b) if 33 <= b <= 126 else chr(256 + b)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; decoding concatenates the characters back."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + [byte_char(b) for b in BYTES])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=SPECIALS[0], eos_token=SPECIALS[1])


def build_model(tokenizer, hidden: int = 128, layers: int = 4, heads: int = 4, max_len: int = 256,
                seed: int = 0) -> Qwen2ForCausalLM:
    """A small Qwen2 with the tokenizer's vocabulary, initialised from `seed`."""
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=3 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
        max_position_embeddings=max_len, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def save_tiny(path: str, seed: int = 0) -> str:
    """Write the tokenizer and an untrained tiny model to `path`; return `path`."""
    tokenizer = build_tokenizer()
    build_model(tokenizer, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


if __name__ == "__main__":
    from dataclasses import dataclass

    import cli

    @dataclass
    class Args:
        path: str = "tiny-model"
        """folder to write the tokenizer and the untrained model to"""

    parser = cli.dataclass_parser(Args, __doc__.split("\n\n")[0], positional=("path",))
    print(save_tiny(Args(**vars(parser.parse_args())).path))
