#!/usr/bin/env python3
"""Regenerates the tiny PyTorch parity fixtures in crates/gfnlm-test-support/fixtures/.

    python3 -m venv ~/.cache/gfnlm/fixture-venv
    ~/.cache/gfnlm/fixture-venv/bin/pip install -r scripts/requirements-fixtures.txt
    ~/.cache/gfnlm/fixture-venv/bin/python scripts/make-parity-fixtures.py [--out DIR] [--gguf FILE]

Writes tiny-llama/, tiny-gpt2/, tiny-gptj/ (transformers `save_pretrained`), their PEFT LoRA
adapters tiny-{llama,gpt2,gptj}-lora/, and the reference outputs expected.json (llama, gpt2)
and expected-gptj.json. The recipes (seeds, perturbations, recorded quantities, JSON schema)
are those of the original parity fixtures; only the width is smaller (hidden 16 instead of 64)
so that the whole folder stays small enough to live in the repository. The vocabulary is still
SmolLM2's 49,152 tokens, so real token ids work.

Inputs that are not generated here:
  * tiny-llama/tokenizer.json + tokenizer_config.json (SmolLM2's tokenizer). They are read from
    the output folder; with `--gguf SmolLM2-135M-Instruct.Q4_1.gguf` they are first rebuilt from
    the GGUF (needs the `gguf` package) the way the original fixtures were made.
  * smollm2.json (reference figures of the real SmolLM2 GGUF), kept as it was made.

Everything runs on CPU in float32 with eager attention and one thread, so reruns are
byte-identical (README.md in the fixtures folder lists the sha256 of each safetensors).
"""

import argparse
import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU only, also on a machine with a GPU

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import peft  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTJConfig,
    GPTJForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

VOCAB = 49152
HIDDEN = 16
FIXED_TOKEN_IDS = [0, 1, 2, 30, 260, 314, 504, 1000, 20000, 49151]
PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little",
    "Question: 6 - 0 - 4 - 8 = ? Answer:",
]
DEFINITIONS = {
    "logprobs": "log_softmax over the full 49152-token vocab of the float32 logits",
    "top20": "20 largest log-probs at the LAST position, descending (ids + values)",
    "seq_logprob_sum": "sum_{t=1}^{n-1} log p(x_t | x_<t); first token unscored (no BOS)",
    "per_token_logprobs": "the n-1 terms of seq_logprob_sum, in order",
    "fixed_ids_logprobs_all_positions": "[n][10] log p(token=FIXED[j] | x_<=i) at every "
    "position i (next-token distribution after x_0..x_i)",
    "last_logits_fixed_ids": "raw logits (pre-softmax) at the last position for FIXED ids",
    "last_logsumexp": "logsumexp of raw logits at last position (logit = logprob + this)",
}
LORA_R, LORA_ALPHA, LORA_B_STD = 8, 16, 0.05


# ---------------------------------------------------------------------------------------------
# Models


def llama_config():
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HIDDEN // 4,
        hidden_act="silu",
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        attn_implementation="eager",
    )
    return cfg


def gpt2_config():
    return GPT2Config(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=2,
        n_head=4,
        n_positions=128,
        n_inner=None,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        attn_implementation="eager",
    )


def gptj_config():
    # 2 heads of 8 dims with rotary on the first 4 of each head: still a *partial*, interleaved
    # rotary with two pairs, so half-split and interleaved pairings give different outputs.
    return GPTJConfig(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=2,
        n_head=2,
        rotary_dim=4,
        n_positions=128,
        n_inner=None,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        attn_implementation="eager",
    )


@torch.no_grad()
def perturb(model, gen_seed, bias_std):
    """Every matrix × 5; every norm weight ← 1 + N(0, 0.1); every bias ← N(0, bias_std)
    (when bias_std is set). Parameters are visited in sorted-name order."""
    g = torch.Generator().manual_seed(gen_seed)
    params = dict(model.named_parameters())
    for name in sorted(params):
        p = params[name]
        if p.ndim == 2:
            p.mul_(5.0)
        elif name.endswith("bias"):
            if bias_std is not None:
                p.copy_(torch.randn(p.shape, generator=g) * bias_std)
        elif "norm" in name or ".ln_" in name or "ln_f" in name:
            p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
        else:
            raise ValueError(f"unexpected parameter {name} {tuple(p.shape)}")


def build_model(kind):
    if kind == "tiny-llama":
        torch.manual_seed(1234)
        model = LlamaForCausalLM(llama_config())
        perturb(model, 1, None)
    elif kind == "tiny-gpt2":
        torch.manual_seed(5678)
        model = GPT2LMHeadModel(gpt2_config())
        perturb(model, 2, 0.05)
    elif kind == "tiny-gptj":
        torch.manual_seed(9012)
        model = GPTJForCausalLM(gptj_config())
        perturb(model, 3, 0.05)
    else:
        raise ValueError(kind)
    return model.eval()


def write_json(path, obj, **kw):
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, **kw))
        if kw.get("indent") is not None:
            f.write("\n")


def save_model(model, kind, out):
    d = out / kind
    if d.exists():
        for f in ("config.json", "generation_config.json", "model.safetensors"):
            (d / f).unlink(missing_ok=True)
    model.save_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    if kind == "tiny-llama":
        # v4-style readers look for a top-level rope_theta next to transformers-5's
        # rope_parameters.
        cfg["rope_theta"] = cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)
    write_json(d / "config.json", cfg, indent=2, sort_keys=True)
    return d


LORA_TARGETS = {
    "tiny-llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny-gpt2": ["c_attn", "c_proj", "c_fc"],
    "tiny-gptj": ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
}
LORA_SEEDS = {"tiny-llama": 11, "tiny-gpt2": 22, "tiny-gptj": 33}


def build_and_save_lora(kind, out):
    base = load_base(out / kind)
    torch.manual_seed(LORA_SEEDS[kind])
    cfg = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=LORA_TARGETS[kind],
        fan_in_fan_out=(kind == "tiny-gpt2"),
    )
    model = get_peft_model(base, cfg)
    torch.manual_seed(LORA_SEEDS[kind] + 1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_B" in name:
                p.normal_(0.0, LORA_B_STD)
    d = out / f"{kind}-lora"
    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(d)
    (d / "README.md").unlink(missing_ok=True)
    acfg = json.loads((d / "adapter_config.json").read_text())
    acfg["base_model_name_or_path"] = kind
    # PEFT writes target_modules in set order; sort them so that reruns are byte-identical.
    acfg["target_modules"] = sorted(acfg["target_modules"])
    write_json(d / "adapter_config.json", acfg, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Tokenizer (SmolLM2's, minified)


def rebuild_tokenizer_from_gguf(gguf_path, dest):
    from transformers import AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    tok = AutoTokenizer.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        obj = json.loads(Path(tmp, "tokenizer.json").read_text(encoding="utf-8"))
        dest.mkdir(parents=True, exist_ok=True)
        write_json(dest / "tokenizer.json", obj, ensure_ascii=False, separators=(",", ":"))
        shutil.copy(Path(tmp, "tokenizer_config.json"), dest / "tokenizer_config.json")


def load_tokenizer(out):
    d = out / "tiny-llama"
    return PreTrainedTokenizerFast(
        tokenizer_file=str(d / "tokenizer.json"),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )


# ---------------------------------------------------------------------------------------------
# Reference outputs


def load_base(d):
    return AutoModelForCausalLM.from_pretrained(
        str(d), dtype=torch.float32, attn_implementation="eager"
    ).eval()


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids])).logits[0].float()


def fl(x):
    return float(x)


@torch.no_grad()
def variant_entry(model, ids):
    logits = logits_of(model, ids)
    lp = torch.log_softmax(logits, dim=-1)
    top = torch.topk(lp[-1], 20)
    per_token = [fl(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
    return {
        "top20_ids": [int(i) for i in top.indices],
        "top20_logprobs": [fl(v) for v in top.values],
        "seq_logprob_sum": sum(per_token),
        "per_token_logprobs": per_token,
        "fixed_ids_logprobs_all_positions": lp[:, FIXED_TOKEN_IDS].tolist(),
        "last_logits_fixed_ids": logits[-1, FIXED_TOKEN_IDS].tolist(),
        "last_logsumexp": fl(torch.logsumexp(logits[-1], dim=-1)),
    }


@torch.no_grad()
def all_logprobs(model, prompts):
    return [torch.log_softmax(logits_of(model, p["token_ids"]), dim=-1) for p in prompts]


@torch.no_grad()
def greedy_check(model, prompt_ids, steps=10):
    seq = list(prompt_ids)
    no_cache_ids, no_cache_lp, margins = [], [], []
    for _ in range(steps):
        lp = torch.log_softmax(logits_of(model, seq)[-1], dim=-1)
        top2 = torch.topk(lp, 2)
        tok = int(top2.indices[0])
        margins.append(fl(top2.values[0] - top2.values[1]))
        no_cache_ids.append(tok)
        no_cache_lp.append(fl(lp[tok]))
        seq.append(tok)
    out = model(torch.tensor([prompt_ids]), use_cache=True)
    past = out.past_key_values
    row = out.logits[0, -1].float()
    kv_ids, kv_lp = [], []
    for _ in range(steps):
        lp = torch.log_softmax(row, dim=-1)
        tok = int(torch.argmax(lp))
        kv_ids.append(tok)
        kv_lp.append(fl(lp[tok]))
        out = model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        row = out.logits[0, -1].float()
    check = {
        "prompt_ids": list(prompt_ids),
        "no_cache_ids": no_cache_ids,
        "kv_cache_ids": kv_ids,
        "identical": no_cache_ids == kv_ids,
        "no_cache_step_logprobs": no_cache_lp,
        "kv_cache_step_logprobs": kv_lp,
        "max_abs_diff_step_logprobs": max(abs(a - b) for a, b in zip(no_cache_lp, kv_lp)),
    }
    return check, min(margins)


def max_abs(a, b):
    return fl((a - b).abs().max())


def fingerprints(path):
    tensors = load_file(str(path))
    return {
        name: {
            "shape": list(t.shape),
            "dtype": str(t.dtype).removeprefix("torch."),
            "sum": fl(t.double().sum()),
            "first4": [fl(x) for x in t.flatten()[:4]],
        }
        for name, t in sorted(tensors.items())
    }


def top20_min_gap(entries):
    return min(
        min(a - b for a, b in zip(e["top20_logprobs"], e["top20_logprobs"][1:])) for e in entries
    )


def reference_for(kinds, out, prompts, meta, stats):
    doc = {"meta": meta, "prompts": prompts, "models": {}, "variants": {}, "checks": {}}
    for kind in kinds:
        d, ld = out / kind, out / f"{kind}-lora"
        doc["models"][kind] = {
            "config": json.loads((d / "config.json").read_text()),
            "tensors": fingerprints(d / "model.safetensors"),
        }
    for kind in kinds:
        ld = out / f"{kind}-lora"
        doc["models"][f"{kind}-lora"] = {
            "adapter_config": json.loads((ld / "adapter_config.json").read_text()),
            "tensors": fingerprints(ld / "adapter_model.safetensors"),
        }
    for kind in kinds:
        d, ld = out / kind, out / f"{kind}-lora"
        base = load_base(d)
        base_entries = [variant_entry(base, p["token_ids"]) for p in prompts]
        base_lp = all_logprobs(base, prompts)
        greedy, margin = greedy_check(base, prompts[0]["token_ids"])
        sdpa = AutoModelForCausalLM.from_pretrained(
            str(d), dtype=torch.float32, attn_implementation="sdpa"
        ).eval()
        sdpa_diff = max(max_abs(a, b) for a, b in zip(all_logprobs(sdpa, prompts), base_lp))

        model = PeftModel.from_pretrained(load_base(d), str(ld)).eval()
        lora_entries = [variant_entry(model, p["token_ids"]) for p in prompts]
        lora_lp = all_logprobs(model, prompts)
        with model.disable_adapter():
            disabled_entries = [variant_entry(model, p["token_ids"]) for p in prompts]
            disabled_lp = all_logprobs(model, prompts)
        merged = copy.deepcopy(model).merge_and_unload().eval()
        merged_lp = all_logprobs(merged, prompts)

        doc["variants"][kind] = base_entries
        doc["variants"][f"{kind}+lora"] = lora_entries
        doc["variants"][f"{kind}+lora(disabled)"] = disabled_entries
        doc["checks"][f"{kind}_greedy10_prompt0"] = greedy
        doc["checks"][f"{kind}+lora"] = {
            "disabled_vs_base_max_abs_diff_all_positions_full_vocab": [
                max_abs(a, b) for a, b in zip(disabled_lp, base_lp)
            ],
            "lora_vs_base_max_abs_diff_last_position_full_vocab": [
                max_abs(a[-1], b[-1]) for a, b in zip(lora_lp, base_lp)
            ],
            "merged_vs_unmerged_max_abs_diff_last_position_full_vocab": [
                max_abs(a[-1], b[-1]) for a, b in zip(merged_lp, lora_lp)
            ],
            "merged_vs_unmerged_max_abs_diff_all_positions_full_vocab": [
                max_abs(a, b) for a, b in zip(merged_lp, lora_lp)
            ],
        }
        stats[kind] = {
            "greedy_min_margin": margin,
            "greedy_identical": greedy["identical"],
            "greedy_kv_vs_no_cache": greedy["max_abs_diff_step_logprobs"],
            "sdpa_vs_eager_max_abs_diff": sdpa_diff,
            "top20_min_gap_base": top20_min_gap(base_entries),
            "top20_min_gap_lora": top20_min_gap(lora_entries),
            "lora_vs_base_last": doc["checks"][f"{kind}+lora"][
                "lora_vs_base_max_abs_diff_last_position_full_vocab"
            ],
            "merged_vs_unmerged_all": max(
                doc["checks"][f"{kind}+lora"][
                    "merged_vs_unmerged_max_abs_diff_all_positions_full_vocab"
                ]
            ),
        }
    # Key order as in the original files: the base models' variants/checks come grouped by model.
    doc["variants"] = {
        k: doc["variants"][k]
        for kind in kinds
        for k in (kind, f"{kind}+lora", f"{kind}+lora(disabled)")
    }
    doc["checks"] = {
        k: doc["checks"][k] for kind in kinds for k in (f"{kind}_greedy10_prompt0", f"{kind}+lora")
    }
    return doc


def main():
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=here.parent / "crates/gfnlm-test-support/fixtures",
        help="fixtures folder (default: %(default)s)",
    )
    ap.add_argument("--gguf", type=Path, help="rebuild tiny-llama/tokenizer.json from this GGUF")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    if args.gguf:
        rebuild_tokenizer_from_gguf(args.gguf, out / "tiny-llama")
    if not (out / "tiny-llama/tokenizer.json").is_file():
        raise SystemExit(f"{out}/tiny-llama/tokenizer.json is missing (pass --gguf)")
    tok = load_tokenizer(out)
    prompts = []
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        prompts.append({"text": text, "token_ids": ids, "tokens": tok.convert_ids_to_tokens(ids)})
    assert prompts[0]["token_ids"] == [504, 3575, 282, 4649, 314], prompts[0]

    kinds = ["tiny-llama", "tiny-gpt2", "tiny-gptj"]
    for kind in kinds:
        save_model(build_model(kind), kind, out)
    for kind in kinds:
        build_and_save_lora(kind, out)

    meta = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "safetensors": safetensors.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "num_threads": torch.get_num_threads(),
        "bos_added": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "fixed_token_ids": FIXED_TOKEN_IDS,
        "definitions": DEFINITIONS,
    }
    stats = {}
    expected = reference_for(["tiny-llama", "tiny-gpt2"], out, prompts, meta, stats)
    write_json(out / "expected.json", expected, indent=1, ensure_ascii=False)
    expected_gptj = reference_for(["tiny-gptj"], out, prompts, meta, stats)
    write_json(out / "expected-gptj.json", expected_gptj, indent=1, ensure_ascii=False)

    print(json.dumps(stats, indent=1))
    import hashlib

    for f in sorted(out.rglob("*.safetensors")):
        print(hashlib.sha256(f.read_bytes()).hexdigest(), f.relative_to(out))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"total {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
