#!/usr/bin/env bash
# Offline top-k evaluation of models (comma-separated) against the baselines.
# Usage: scripts/evaluate.sh DATA MODELS OUT [flags]     e.g. scripts/evaluate.sh runs/data runs/sft2/final,runs/sapo/final runs/eval
set -euo pipefail
data=${1:?data folder}; models=${2:?model folders, comma-separated}; out=${3:?output folder}; shift 3
exec genrec evaluate --config configs/eval.yaml --data "$data" --model "$models" --output_dir "$out" \
  --baselines mostpop,recent,sasrec "$@"
