#!/usr/bin/env bash
# Multi-GPU RL with `accelerate launch` (one process per GPU, DDP). Usage:
#   NUM_GPUS=4 scripts/launch_rl_multigpu.sh configs/rl_sapo.yaml [--flag value ...]
# Extra flags are passed to `genrec rl` (they override the YAML). Examples:
#   vLLM colocated with training on every GPU (needs `pip install genrec[vllm]`, vLLM 0.22-0.31):
#     NUM_GPUS=4 scripts/launch_rl_multigpu.sh configs/rl_sapo.yaml --use_vllm true --vllm_mode colocate \
#         --vllm_gpu_memory_utilization 0.3 --bf16 true
#   vLLM server on its own GPU (start it first, see docs/rl.md "vLLM"), training on the other GPUs:
#     CUDA_VISIBLE_DEVICES=1,2,3 NUM_GPUS=3 scripts/launch_rl_multigpu.sh configs/rl_sapo.yaml \
#         --use_vllm true --vllm_mode server --vllm_server_host 127.0.0.1
# Groups of G rollouts may span GPUs: per-step rewards are gathered and normalised across processes.
# CPU-only check of the same code path (2 processes on gloo; not `--cpu`, which starts a single process):
#     torchrun --nproc_per_node 2 -m genrec.cli rl --config configs/rl_sapo.yaml --use_cpu true
set -euo pipefail
CONFIG=${1:?usage: NUM_GPUS=N $0 CONFIG.yaml [--flag value ...]}
shift
NUM_GPUS=${NUM_GPUS:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
MIXED=${MIXED_PRECISION:-bf16}
exec accelerate launch --multi_gpu --num_processes "$NUM_GPUS" --mixed_precision "$MIXED" \
    -m genrec.cli rl --config "$CONFIG" "$@"
