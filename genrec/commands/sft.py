"""`genrec sft --stage {1,2}`: supervised fine-tuning through TRL (alignment, then reasoning traces)."""

from __future__ import annotations

from genrec.data.config import DataConfig
from genrec.prompts import PromptConfig
from genrec.sft import GenrecSFTConfig, SFTStageConfig, run_stage

HELP = "Stage-1 (SID alignment) or stage-2 (reasoning traces) SFT with TRL; final model in <output_dir>/final."
CONFIG_CLASSES = (SFTStageConfig, PromptConfig, DataConfig, GenrecSFTConfig)


def run(stage: SFTStageConfig, prompt_cfg: PromptConfig, data_cfg: DataConfig, args: GenrecSFTConfig) -> None:
    final = run_stage(stage, prompt_cfg, data_cfg, args)
    print(f"wrote {final} (stage {stage.stage}); TensorBoard logs under {args.output_dir}")
