#!/usr/bin/env bash
# Ablations of the random-integer run (docs/ablations.md): each variant is configs/rng.toml with
# a few keys changed, trained with the FULL schedule (same LR decay as the main run) but
# stopped at checkpoint step $AT, then evaluated exactly (KL(q‖U), valid mass). Compare with the
# main run's step-$AT row in results/rng/results.md.
#
#   scripts/ablate-rng.sh [AT] [VARIANT...]      (AT defaults to 100; variants below)
#
# Writes results/rng-ablations/<variant>/{config.toml,run/,eval.json} and appends one line per
# variant to results/rng-ablations/summary.tsv. Re-running a finished variant only re-prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
AT="${1:-100}"
shift || true
declare -A OVERRIDES=(
  [subtb]=""
  [tb]='objective = "tb"'
  [tb-lr1]=$'objective = "tb"\nlr_log_z = 1.0'
  [vargrad]='objective = "vargrad"'
  [db]='objective = "db"'
  [lambda0.9]='subtb_lambda = 0.9'
  [no-epsilon]='epsilon = 0.0'
  [no-replay]='replay_prob = 0.0'
  [unrestricted-50]=$'[task]\nrestrict_vocab = false\ninvalid_log_reward = -50.0'
)
VARIANTS=("$@")
[ ${#VARIANTS[@]} -eq 0 ] && VARIANTS=(tb vargrad db)
cargo build --release --quiet -p gfnlm
GFNLM=target/release/gfnlm
[ -n "${CARGO_TARGET_DIR:-}" ] && GFNLM="$CARGO_TARGET_DIR/release/gfnlm"
OUT=results/rng-ablations
mkdir -p "$OUT"
for v in "${VARIANTS[@]}"; do
  [ -n "${OVERRIDES[$v]+x}" ] || { echo "unknown variant '$v' (known: ${!OVERRIDES[*]})" >&2; exit 2; }
  d="$OUT/$v"
  mkdir -p "$d"
  # Top-level keys replace those of configs/rng.toml; a [task] block replaces task keys.
  python3 - "$d/config.toml" "${OVERRIDES[$v]}" <<'PY'
import re, sys
base = open("configs/rng.toml").read()
over = sys.argv[2]
section = None
for line in over.splitlines():
    if line.startswith("["):
        section = line
        continue
    key = line.split("=")[0].strip()
    if section is None:
        head, sep, tail = base.partition("\n[")
        head = re.sub(rf"(?m)^{key} = .*$", line, head) if re.search(rf"(?m)^{key} = ", head) else head + line + "\n"
        base = head + sep + tail
    else:
        start = base.index(section)
        nxt = base.find("\n[", start + 1)
        block = base[start: nxt if nxt != -1 else len(base)]
        new = re.sub(rf"(?m)^{key} = .*$", line, block) if re.search(rf"(?m)^{key} = ", block) else block.rstrip("\n") + "\n" + line + "\n"
        base = base.replace(block, new)
open(sys.argv[1], "w").write(base)
PY
  ckpt="$d/run/checkpoints/step-$AT"
  if [ ! -f "$ckpt/state.json" ]; then
    start=$(date +%s)
    "$GFNLM" train --config "$d/config.toml" --out "$d/run" --resume > "$d/train.log" 2>&1 &
    pid=$!
    while [ ! -f "$ckpt/state.json" ] && kill -0 $pid 2>/dev/null; do sleep 5; done
    kill $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    [ -f "$ckpt/state.json" ] || { echo "$v: training stopped before step $AT, see $d/train.log" >&2; exit 1; }
    echo "$(( $(date +%s) - start ))" > "$d/seconds"
  fi
  [ -f "$d/eval.json" ] || "$GFNLM" eval --config "$d/config.toml" --adapter "$ckpt/adapter" --samples 0 --json "$d/eval.json" > /dev/null
  python3 - "$v" "$AT" "$d" <<'PY' | tee -a "$OUT/summary.tsv"
import json, sys
v, at, d = sys.argv[1:]
e = json.load(open(f"{d}/eval.json"))
c, u = e["constrained"], e.get("unconstrained", {})
secs = open(f"{d}/seconds").read().strip()
print(f"{v}\tstep {at}\t{secs} s\tvalid {c['valid_mass']:.4f}\tKL(q||U) {c['kl_q_u']:.4f}\tunconstrained valid {u.get('valid_mass', float('nan')):.4f}")
PY
done
