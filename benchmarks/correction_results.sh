#!/usr/bin/env bash
# Reproduces the correction sections of docs/RESULTS.md on the embedded SmolLM2-135M-Instruct.
# Each command writes a folder under runs/results/ with report.md (tables), plots and the adapter.
# About 1-2 h on 2 CPU cores in total; run a single line to reproduce one table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-runs/results}
MODEL=${MODEL:-smollm2-135m-instruct}
run() { echo "+ hf-sparc $*"; /usr/bin/time -f "%e s wall" python -m hf_sparc.cli "$@" --model "$MODEL" --overwrite; }

# Toxicity, MLP neurons: counts grid -> Pareto plot, pick within +2% perplexity; Gradient x Input and
# random (1 seed per count) along the same grid.
run sweep --behavior toxicity --level neuron --counts 35 69 138 276 552 \
    --controls gradient random --random-seeds 1 --output "$OUT/toxicity-neuron-sweep"
# Repetition, up-projection weights (paper: ~7,000 fc1 weights = 0.03%), all weight-level controls.
run correct --behavior repetition --level weight --target-modules up_proj --count 7000 \
    --output "$OUT/repetition-weight"
# Repetition, MLP neurons (138 = 0.3%), all neuron-level controls.
run correct --behavior repetition --level neuron --output "$OUT/repetition-neuron"
# Toxicity, up-projection weights; random with 3 seeds (not 5) to fit the shared machine's time.
run correct --behavior toxicity --level weight --target-modules up_proj --count 7000 \
    --controls gradient wanda magnitude random --random-seeds 3 --output "$OUT/toxicity-weight"
