#!/usr/bin/env bash
# RL from a stage-2 checkpoint on one machine.  Usage: scripts/train_rl.sh {sapo|grpo|grpo_prefix} MODEL DATA OUT [flags]
# Several GPUs: scripts/launch_rl_multigpu.sh (accelerate launch).  vLLM rollouts: add --use_vllm true.
set -euo pipefail
algo=${1:?sapo, grpo or grpo_prefix}; model=${2:?stage-2 model folder}; data=${3:?data folder}; out=${4:?output folder}
shift 4
exec genrec rl --config "configs/rl_${algo}.yaml" --model "$model" --data "$data" --output_dir "$out" "$@"
