"""Make a tiny random Llama that vLLM on CPU can serve: the test stand-in for a real model.

Run with the vLLM venv's python (it has torch, transformers, tokenizers, safetensors):
    python make_tiny_model.py OUT_DIR
    python make_tiny_model.py OUT_DIR --hidden-size 2048 --layers 20 --intermediate-size 5632   # ~1.9 GB
(the sizes: benchmarks/cold_start needs a model of about 2 GB; the tests use the defaults).

Everything is local and seeded: a byte-level BPE (~340 tokens) trained on the built-in text below, a
ChatML chat template, and random weights. Head dim 32 because vLLM's CPU attention needs >= 32.
"""

import argparse
import json
import pathlib
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SEED = 0
TARGET_VOCAB_SIZE = 340
HIDDEN_SIZE = 128
NUM_LAYERS = 2
NUM_ATTENTION_HEADS = 4
NUM_KV_HEADS = 2
INTERMEDIATE_SIZE = 256
MAX_POSITION_EMBEDDINGS = 2048

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]

# ChatML; generation stops on <|im_end|> (also listed as an eos id in generation_config.json).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TRAINING_TEXT = """\
The model server answers requests over HTTP. A client sends a prompt and the server returns tokens.
What is the capital of France? The capital of France is Paris. Hello, how are you today?
Spot instances can be interrupted with two minutes of notice; the watcher drains the target first.
The health check returns 200 when the engine is ready. Streaming responses end with a done marker.
A tokenizer splits text into pieces; the vocabulary is small, so most words become several tokens.
Numbers like 0 1 2 3 4 5 6 7 8 9 10 42 100 2048 appear in logs, ports and sizes.
System: you are a helpful assistant. User: tell me a short story. Assistant: once upon a time.
"""


def build_tokenizer():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeated so pair counts favour real words; the training itself is deterministic.
    tokenizer.train_from_iterator(TRAINING_TEXT.splitlines() * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITION_EMBEDDINGS,
    )


def build_model(tokenizer, hidden_size=HIDDEN_SIZE, layers=NUM_LAYERS, intermediate_size=INTERMEDIATE_SIZE):
    token_id = tokenizer.convert_tokens_to_ids
    heads = max(NUM_ATTENTION_HEADS, hidden_size // 64)  # head dim 32 at the default size, 64 for larger ones
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(NUM_KV_HEADS, heads // 4),
        head_dim=hidden_size // heads,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        bos_token_id=token_id(BOS),
        eos_token_id=token_id(EOS),
        pad_token_id=token_id(PAD),
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=token_id(BOS),
        eos_token_id=[token_id(EOS), token_id(IM_END)],
        pad_token_id=token_id(PAD),
    )
    return model


def smoke_test(out_dir, tokenizer):
    """Reload what was written and run one forward pass, so a broken save fails here, not in vLLM."""
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out_dir)
    prompt = reloaded_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    if not prompt.startswith(BOS + IM_START + "user\n"):
        raise RuntimeError(f"chat template renders unexpectedly: {prompt!r}")
    ids = reloaded_tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if reloaded_tokenizer.decode(ids[0]) != prompt:
        raise RuntimeError("tokenizer does not round-trip the chat prompt")
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    with torch.no_grad():
        logits = model(ids).logits
    if tuple(logits.shape) != (1, ids.shape[1], len(tokenizer)):
        raise RuntimeError(f"unexpected logits shape {tuple(logits.shape)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path, help="directory to write (created; must be empty)")
    parser.add_argument("--hidden-size", type=int, default=HIDDEN_SIZE)
    parser.add_argument("--layers", type=int, default=NUM_LAYERS)
    parser.add_argument("--intermediate-size", type=int, default=INTERMEDIATE_SIZE)
    parser.add_argument("--no-smoke-test", action="store_true", help="skip the reload and forward pass (big models)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        parser.error(f"{out_dir} is not empty")

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, args.hidden_size, args.layers, args.intermediate_size)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if not args.no_smoke_test:
        smoke_test(out_dir, tokenizer)
    # safetensors writes 0600; the model dir is bind-mounted into the test host, where vLLM may run as
    # another user.
    for path in out_dir.iterdir():
        path.chmod(0o644)

    config = json.loads((out_dir / "config.json").read_text())
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"tiny llama: vocab {config['vocab_size']}, {parameters} parameters, written to {out_dir}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
