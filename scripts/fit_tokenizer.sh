#!/usr/bin/env bash
# Fit semantic IDs for a dataset folder.  Usage: scripts/fit_tokenizer.sh DATA_DIR OUT_DIR [extra genrec flags]
# Config: configs/tokenizer.yaml (RQ-KMeans, TF-IDF) or configs/tokenizer_rqvae.yaml / tokenizer_minilm.yaml.
set -euo pipefail
data=${1:?data folder}; out=${2:?output folder}; shift 2
exec genrec fit-tokenizer --config "${GENREC_TOKENIZER_CONFIG:-configs/tokenizer.yaml}" --data "$data" --out "$out" "$@"
