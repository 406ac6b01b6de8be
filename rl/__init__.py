"""Stage 3: RL on TRL's GRPOTrainer. SAPO (step-aligned group-relative policy optimisation), outcome-GRPO and
prefix-reward GRPO baselines, and two ablations; see docs/rl.md.

`from rl import SAPOConfig, SAPOTrainer` (imported lazily, so `rl.vllm_processor` loads without TRL).
"""

from __future__ import annotations

__all__ = ["SAPOConfig", "SAPOTrainer", "build_rl_dataset"]


def __getattr__(name: str):
    if name == "SAPOConfig":
        from rl.config import SAPOConfig

        return SAPOConfig
    if name == "SAPOTrainer":
        from rl.trainer import SAPOTrainer

        return SAPOTrainer
    if name == "build_rl_dataset":
        from rl.data import build_rl_dataset

        return build_rl_dataset
    raise AttributeError(f"module 'rl' has no attribute {name!r}")
