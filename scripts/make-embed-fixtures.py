#!/usr/bin/env python3
"""Writes crates/gfnlm-embed/tests/fixtures/minilm-expected.json: reference embeddings of
all-MiniLM-L6-v2 computed by sentence-transformers (Transformer, max_seq_length 256 → mean
Pooling → Normalize), for the parity test crates/gfnlm-embed/tests/minilm_parity.rs.

Run with the fixture venv (torch 2.9.0, transformers 5.24.0, sentence-transformers 6.2.0:
`~/.cache/gfnlm/fixture-venv/bin/pip install sentence-transformers==6.2.0`):

    cargo xtask fetch-model minilm
    ~/.cache/gfnlm/fixture-venv/bin/python scripts/make-embed-fixtures.py [ENCODER_DIR]

ENCODER_DIR defaults to the folder `cargo xtask fetch-model minilm` fills
($GFNLM_CACHE or ~/.cache/gfnlm, then models/all-MiniLM-L6-v2). The result is also checked
against a plain transformers forward with hand-written mean pooling.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

try:  # sentence-transformers ≥ 6
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
except ImportError:  # older releases
    from sentence_transformers.models import Normalize, Pooling, Transformer
from transformers import AutoModel, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/gfnlm-embed/tests/fixtures/minilm-expected.json"

LONG = " ".join(
    f"Sentence number {i} of a long paragraph about rivers, mountains, and the weather in spring."
    for i in range(40)
)

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Hello!",
    "",
    "What's the capital of France? Paris, of course...",
    "GFlowNets sample sequences in proportion to a reward.",
    "¿Dónde está la biblioteca? Café, naïve, résumé — déjà vu.",
    "東京は日本の首都です。",
    "Emoji test: 🙂🚀 and symbols #$%&*()[]{}<>",
    "   leading and trailing spaces   ",
    "UPPER CASE and lower case and MiXeD CaSe",
    "3 + 4 = 7, 12 * 12 = 144, and pi is about 3.14159.",
    "The quick brown fox jumps over the lazy dog.",
    LONG,
]


def cache_dir() -> Path:
    if os.environ.get("GFNLM_CACHE"):
        return Path(os.environ["GFNLM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gfnlm"


def g7(x: float) -> float:
    return float(f"{x:.7g}")


def main() -> None:
    enc_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else cache_dir() / "models/all-MiniLM-L6-v2"
    torch.set_grad_enabled(False)
    transformer = Transformer(str(enc_dir), max_seq_length=256)
    dim_of = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    pooling = Pooling(dim_of(), pooling_mode="mean")
    st = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    emb = st.encode(SENTENCES, batch_size=32, convert_to_numpy=True).astype(np.float64)

    # Cross-check: transformers forward + hand-written masked mean + L2 normalisation.
    tok = AutoTokenizer.from_pretrained(str(enc_dir))
    bert = AutoModel.from_pretrained(str(enc_dir)).eval()
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    hidden = bert(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    manual = torch.nn.functional.normalize(mean, p=2, dim=1).double().numpy()
    err = np.abs(manual - emb).max()
    assert err < 1e-5, f"sentence-transformers and the manual pooling differ by {err}"

    ids = [tok(s, truncation=True, max_length=256)["input_ids"] for s in SENTENCES]
    assert max(len(i) for i in ids) == 256, "the long sentence must be truncated to 256 tokens"
    full_len = len(tok(LONG)["input_ids"])
    assert full_len > 256, full_len

    n = len(SENTENCES)
    sims = emb @ emb.T
    mean_cos = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    diversity = 1.0 - mean_cos

    import sentence_transformers
    import transformers

    out = {
        "encoder": "all-MiniLM-L6-v2",
        "generator": "scripts/make-embed-fixtures.py",
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "max_seq_length": 256,
        "long_sentence_untruncated_tokens": full_len,
        "semantic_diversity": diversity,
        "sentences": SENTENCES,
        "token_ids": ids,
        "embeddings": [[g7(x) for x in row] for row in emb],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}: {n} sentences, dim {emb.shape[1]}, diversity {diversity:.6f}, "
          f"ST vs manual max |diff| {err:.2e}, long sentence {full_len} → 256 tokens")


if __name__ == "__main__":
    main()
