#!/usr/bin/env python3
"""NLTK reference values for gfnlm-tasks' sentence BLEU-4 and GLEU (src/text_metrics.rs).

    python3 -m pip install nltk==3.10.4
    python3 scripts/make-bleu-fixtures.py

Story infilling (issue #15) scores a generated 4th sentence against the gold one the way the
paper's evaluation does (GFNOrg/gfn-lm-tuning, infill_subj_arithmetic/eval_infill.py,
`compute_metrics`):

    ref_tokens = ref.split()
    cands_tokens = [cand.split() for cand in cands]
    sentence_bleu([ref_tokens], cand, smoothing_function=SmoothingFunction().method1)
    sentence_gleu([ref_tokens], cand)

i.e. Python `str.split()` with no argument (runs of Unicode whitespace, no punctuation
splitting, no lower-casing), one reference, BLEU with the default weights (0.25,) * 4 and
smoothing method 1 (epsilon 0.1), GLEU with min_len 1 and max_len 4.

For each (hypothesis, references) pair below, given as raw text, this writes the tokens of
`str.split()`, `sentence_bleu` with method 1 and `sentence_gleu` to
crates/gfnlm-tasks/tests/fixtures/bleu_gleu_nltk.json (floats as Python's shortest repr, which
round-trips exactly). Some pairs have two references (NLTK's multi-reference path: clipping by
the max count over references, the closest reference length for the brevity penalty, the best
reference for GLEU), although the paper only ever uses one.
"""

import json
import warnings
from pathlib import Path

import nltk
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from nltk.translate.gleu_score import sentence_gleu

OUT = (
    Path(__file__).resolve().parent.parent
    / "crates/gfnlm-tasks/tests/fixtures/bleu_gleu_nltk.json"
)

# (name, hypothesis text, [reference texts])
PAIRS = [
    ("identical", "She decided to bake a cake for her mother.",
     ["She decided to bake a cake for her mother."]),
    ("identical_no_final_period", "He ran to the store to buy some milk",
     ["He ran to the store to buy some milk"]),
    ("partial_overlap", "She went to the store to buy a new dress.",
     ["She went to the mall to find a new dress for the party."]),
    ("partial_overlap_longer_hyp", "Tom finally got the job he had always wanted at the big company downtown.",
     ["Tom got the job he wanted."]),
    ("reordered", "the dog chased the cat across the yard",
     ["across the yard the cat chased the dog"]),
    ("reversed_four", "down sat cat the", ["the cat sat down"]),
    ("one_word_match", "Yes", ["Yes"]),
    ("one_word_vs_sentence", "Then", ["Then she called her best friend to tell her the news."]),
    ("two_words", "He smiled", ["He smiled at her and waved goodbye."]),
    ("three_words_exact", "They went home", ["They went home"]),
    ("three_words_vs_longer", "They went home.", ["They went home early that night."]),
    ("empty_hypothesis", "", ["She was very happy with the result."]),
    ("whitespace_only_hypothesis", "   \t ", ["She was very happy with the result."]),
    ("no_overlap", "A storm rolled over the hills.", ["Jenny bought two apples yesterday"]),
    ("no_unigram_overlap_short", "Wow", ["Jenny bought two apples yesterday"]),
    ("punctuation_attached", "The kids were excited, and they laughed.",
     ["The kids were excited and they laughed"]),
    ("punctuation_only_difference", "Mary loved her new puppy!", ["Mary loved her new puppy."]),
    ("case_differs", "the teacher gave him an a on the test",
     ["The teacher gave him an A on the test"]),
    ("repeated_words", "the the the the the the the", ["The cat is on the mat."]),
    ("repeated_words_both", "he ran and ran and ran and ran", ["he ran and ran until he was tired"]),
    ("repeated_bigram", "so so so so good", ["it was so so good"]),
    ("unigrams_only", "mat the on sat cat", ["the cat sat on the mat"]),
    ("bigrams_no_trigrams", "the cat on the mat sat", ["the cat sat on the mat"]),
    ("hyp_longer_than_ref", "After a long day at work Sam came home and cooked a big dinner for everyone.",
     ["Sam cooked dinner."]),
    ("ref_shorter_than_four", "Amy called her friend Beth", ["Amy called"]),
    ("two_refs_closest_length_tie", "He bought a new red bike",
     ["He bought a bike", "He bought a brand new red bike today"]),
    ("two_refs_clip_max", "the boy and the girl and the dog played",
     ["the boy played with the dog", "the girl and the boy played and the dog ran"]),
    ("two_refs_second_better", "She fell asleep on the couch.",
     ["He stayed awake all night.", "She fell asleep on the couch."]),
    ("two_refs_one_empty", "I won the race", ["", "I won the big race"]),
    ("two_refs_both_empty", "I won the race", ["", ""]),
    ("empty_hyp_two_refs", "", ["The sun came out.", "It was sunny"]),
    ("empty_both", "", [""]),
    ("extra_whitespace", "  She  was\tso\nhappy  ", ["She was so happy"]),
    ("unicode_whitespace", "Café\u00a0au lait\u2003was\u3000great\u001fand hot",
     ["Café au lait was great and hot"]),
    ("unicode_words", "Zoë naïvely paid €5 for the crème brûlée.",
     ["Zoë paid €5 for the crème brûlée."]),
    ("long_partial", "When the rain stopped the children ran outside to play in the big muddy puddles near the old barn",
     ["When the rain finally stopped all the children ran outside and played in the muddy puddles by the barn"]),
    ("numbers_and_quotes", "He said \"I'll be there at 5 pm\" and left.",
     ["He said \"I'll be there at 5\" and then he left."]),
    ("same_words_different_case_refs", "The End", ["the end", "THE END"]),
]


def main():
    smooth = SmoothingFunction().method1
    cases = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, hyp_text, ref_texts in PAIRS:
            hyp = hyp_text.split()
            refs = [r.split() for r in ref_texts]
            bleu = sentence_bleu(refs, hyp, smoothing_function=smooth)
            gleu = sentence_gleu(refs, hyp)
            cases.append({
                "name": name,
                "hypothesis_text": hyp_text,
                "reference_texts": ref_texts,
                "hypothesis": hyp,
                "references": refs,
                "bleu4_method1": float(bleu),
                "gleu": float(gleu),
            })
    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"
    data = {
        "generator": "scripts/make-bleu-fixtures.py",
        "nltk_version": nltk.__version__,
        "tokenisation": "Python str.split() (no argument), as in eval_infill.py",
        "bleu": "nltk.translate.bleu_score.sentence_bleu(references, hypothesis, "
                "smoothing_function=SmoothingFunction().method1), default weights (0.25,)*4",
        "gleu": "nltk.translate.gleu_score.sentence_gleu(references, hypothesis), "
                "min_len 1, max_len 4",
        "warnings": sorted({str(w.message).strip() for w in caught}),
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One case per line, so that a regenerated file diffs case by case.
    head = json.dumps({k: v for k, v in data.items() if k != "cases"}, indent=1,
                      ensure_ascii=False)
    body = ",\n  ".join(json.dumps(c, ensure_ascii=False) for c in cases)
    OUT.write_text(head[:-2] + ',\n "cases": [\n  ' + body + "\n ]\n}\n")
    assert json.loads(OUT.read_text()) == data
    print(f"wrote {len(cases)} cases to {OUT}")
    for c in cases:
        print(f"{c['name']:32} bleu {c['bleu4_method1']:.6f} gleu {c['gleu']:.6f}")


if __name__ == "__main__":
    main()
