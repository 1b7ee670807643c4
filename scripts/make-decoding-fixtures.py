#!/usr/bin/env python3
"""Hugging Face `generate` reference outputs for gfnlm-models' decoding baselines (search.rs).

    python3 -m venv ~/.cache/gfnlm/decoding-venv
    ~/.cache/gfnlm/decoding-venv/bin/pip install -r scripts/requirements-decoding.txt
    ~/.cache/gfnlm/decoding-venv/bin/python scripts/make-decoding-fixtures.py

transformers is pinned to 4.55.x because group (diverse) beam search left the library in 4.56
(it moved to a Hub `custom_generate` repository, which an offline run cannot load); the
vectorised beam search of 4.55 is the one of later versions.

For the tiny random-weight fixtures tiny-llama and tiny-gpt2 (crates/gfnlm-test-support/
fixtures, loaded as in make-parity-fixtures.py: float32, eager attention, CPU, one thread) and
the three prompts of expected.json (token ids, no BOS), runs greedy search, beam search
(n = 2 of 4 beams, n = 4 of 8, and n = 4 of 8 with min_new_tokens = 8) and group beam search
(4 beams in 2 groups, 8 beams in 4 groups; diversity_penalty 1.0, n = 4) with
`eos_token_id = pad_token_id = EOS` and `max_new_tokens = 10`, and writes the generated tokens
(the EOS and the padding after it cut off) and HF's `sequences_scores` to
crates/gfnlm-models/tests/fixtures/decoding-expected.json.

EOS is chosen per prompt, twice, so that finished hypotheses are exercised (see pick_eos):
one that ends some hypotheses early and lets others run to the limit, and one that is likely
everywhere.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates/gfnlm-test-support/fixtures"
OUT = ROOT / "crates/gfnlm-models/tests/fixtures/decoding-expected.json"
MAX_NEW = 10
MODELS = ["tiny-llama", "tiny-gpt2"]
VOCAB_NONE = 0  # placeholder EOS for the plain search: <|endoftext|>, never likely here
CASES = [
    # name, generate kwargs (besides eos/pad/max_new_tokens)
    ("greedy", dict(num_beams=1)),
    ("beam4_n2", dict(num_beams=4, num_return_sequences=2)),
    ("beam8_n4", dict(num_beams=8, num_return_sequences=4)),
    ("beam8_n4_min8", dict(num_beams=8, num_return_sequences=4, min_new_tokens=8)),
    (
        "diverse4g2_n4",
        dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=4),
    ),
    (
        "diverse8g4_n4",
        dict(num_beams=8, num_beam_groups=4, diversity_penalty=1.0, num_return_sequences=4),
    ),
]


def load(name):
    return AutoModelForCausalLM.from_pretrained(
        str(FIXTURES / name), torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()


def generated(seq, prompt_len, eos):
    out = seq[prompt_len:].tolist()
    return out[: out.index(eos)] if eos in out else out


@torch.no_grad()
def run(model, prompt, eos, kwargs):
    ids = torch.tensor([prompt], dtype=torch.long)
    beam = kwargs.get("num_beams", 1) > 1
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=MAX_NEW,
        eos_token_id=eos,
        pad_token_id=eos,
        do_sample=False,
        length_penalty=1.0,
        early_stopping=False,
        return_dict_in_generate=True,
        output_scores=True,
        **kwargs,
    )
    seqs = [generated(s, len(prompt), eos) for s in out.sequences]
    scores = out.sequences_scores.tolist() if beam else None
    return seqs, scores


def pick_eos(model, prompt):
    """Two EOS choices for a prompt: (a) among the tokens of its plain 8-beam search and its 20
    most likely first tokens, the one whose 8-beam search returns hypotheses of the most
    distinct lengths (then the most of them ended early; the first on a tie); (b) the most
    frequent token of the plain search, so that EOS is likely everywhere (pools fill early,
    the early-stop heuristic fires, diverse-beam groups finish)."""
    plain, _ = run(model, prompt, VOCAB_NONE, dict(num_beams=8, num_return_sequences=8))
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1]
    flat = [t for s in plain for t in s]
    frequent = max(dict.fromkeys(flat), key=flat.count)
    candidates = list(dict.fromkeys(flat + torch.topk(logits, 20).indices.tolist()))
    best = None
    for tok in candidates:
        seqs, _ = run(model, prompt, tok, dict(num_beams=8, num_return_sequences=8))
        key = (len({len(s) for s in seqs}), sum(len(s) < MAX_NEW for s in seqs))
        if key[1] > 0 and (best is None or key > best[0]):
            best = (key, tok)
    if best is None:
        raise SystemExit("no EOS candidate ends a hypothesis early")
    return [best[1], frequent] if frequent != best[1] else [best[1]]


def main():
    expected = json.loads((FIXTURES / "expected.json").read_text())
    prompts = [p["token_ids"] for p in expected["prompts"]]
    result = {
        "meta": {
            "made_by": "scripts/make-decoding-fixtures.py",
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "max_new_tokens": MAX_NEW,
            "length_penalty": 1.0,
            "early_stopping": False,
            "pad_token_id": "= eos",
            "sequences": "generated tokens only, EOS and padding removed",
            "scores": "HF sequences_scores (beam searches only)",
        },
        "models": {},
    }
    for name in MODELS:
        model = load(name)
        cases = []
        for pi, prompt in enumerate(prompts):
            for eos in pick_eos(model, prompt):
                for case, kwargs in CASES:
                    seqs, scores = run(model, prompt, eos, kwargs)
                    cases.append(
                        {
                            "case": case,
                            "prompt_index": pi,
                            "prompt": prompt,
                            "eos": eos,
                            "kwargs": kwargs,
                            "sequences": seqs,
                            "scores": scores,
                        }
                    )
                    print(name, pi, eos, case, [len(s) for s in seqs], scores)
        result["models"][name] = {"cases": cases}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
