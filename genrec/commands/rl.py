"""`genrec rl`: stage 3, RL from a stage-2 checkpoint with SAPO or a baseline (TRL GRPOTrainer subclass).

    genrec rl --config configs/rl_sapo.yaml [--algorithm grpo] [--output_dir runs/rl-grpo] ...

Writes the trained model (safetensors + tokenizer + sid_map.json + prompt_config.json + genrec_model.json) into
<output_dir>/final (the layout of `genrec sft`), checkpoints into <output_dir>/checkpoint-*, TensorBoard logs into
<output_dir>/runs. Re-running the same command resumes from the latest checkpoint (--resume auto).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from genrec.data.config import DataConfig
from rl.config import SAPOConfig

FINAL_DIR = "final"
HELP = "RL from a stage-2 checkpoint: SAPO (step-aligned GRPO), outcome GRPO, prefix-reward GRPO or an ablation."


@dataclass
class RLScriptConfig:
    """What to train and on which data (the RL hyperparameters are SAPOConfig's)."""

    model: str = field(default="", metadata={"help": "Stage-2 checkpoint folder (model + tokenizer)."})
    data: str = field(default="", metadata={"help": "Dataset folder or file prefix, as for every genrec stage."})
    sid_map: str = field(
        default="",
        metadata={"help": "sid_map.json or the `genrec fit-tokenizer` folder; default: <model>/sid_map.json."},
    )
    traces: str = field(
        default="",
        metadata={"help": "Trace folder of `genrec traces` (the stage-2 SFT data): with max_block_tokens 0 (auto), the "
                  "block budget is the largest per-level 95th percentile of its block lengths (traces_config.json)."},
    )
    rl_split: str = field(default="train", metadata={"help": "Split whose examples become RL prompts.",
                                                     "choices": ["train", "valid", "test"]})
    max_examples: int = field(default=0, metadata={"help": "Use a seeded random subset of this many prompts (0 = all)."})
    resume: str = field(
        default="auto",
        metadata={"help": "'auto': resume from the latest checkpoint in output_dir if any; 'never'; or a checkpoint path."},
    )


def _resolve_sid_map(script: RLScriptConfig):
    from sid_tokenizer.sidmap import SIDMap

    path = Path(script.sid_map) if script.sid_map else Path(script.model) / "sid_map.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: SID map not found; pass --sid_map (sid_map.json or the fit-tokenizer folder)"
        )
    return SIDMap.load(path)


def _resume_point(script: RLScriptConfig, output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if script.resume == "never":
        return None
    if script.resume != "auto":
        if not Path(script.resume).is_dir():
            raise FileNotFoundError(f"{script.resume}: checkpoint folder not found (--resume)")
        return script.resume
    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


def run(script: RLScriptConfig, data_cfg: DataConfig, args: SAPOConfig) -> None:
    from genrec.data.loader import load_data
    from genrec.modeling import MODEL_INFO_FILE, load_model_and_tokenizer, model_info
    from genrec.prompts import PROMPT_CONFIG_FILE, PromptConfig
    from sid_tokenizer.sidmap import atomic_write_text
    from rl.data import build_rl_dataset
    from rl.trainer import SAPOTrainer

    if not script.model:
        raise ValueError("--model is required: the stage-2 checkpoint folder to start RL from")
    if not script.data:
        raise ValueError("--data is required: the dataset the SFT stages used")
    if not Path(script.model).is_dir():
        raise FileNotFoundError(f"{script.model}: model folder not found (--model)")
    sid_map = _resolve_sid_map(script)
    budget = args.resolve_block_budget(script.traces or None, sid_map.num_levels)
    info = model_info(script.model)
    trained_layout = info.get("layout")
    if info.get("sft_stage") == 1 and args.layout != "direct":
        raise ValueError(f"{script.model}: a stage-1 model writes SID tokens only; RL on it needs --layout direct "
                         f"(got {args.layout!r}), or start from a stage-2 checkpoint")
    if info.get("sft_stage") == 2 and args.layout == "direct":
        raise ValueError(f"{script.model}: a stage-2 model writes reasoning blocks; --layout direct is for "
                         "stage-1 models (pass the layout of its traces)")
    if trained_layout in ("interleaved", "blocks_first") and trained_layout != args.layout:
        raise ValueError(
            f"{script.model}: the model was trained on the {trained_layout!r} layout (genrec_model.json) but "
            f"--layout is {args.layout!r}; pass --layout {trained_layout}"
        )
    model, tokenizer = load_model_and_tokenizer(script.model)
    tokenizer.padding_side = "left"
    prompt_cfg = PromptConfig.load_or_default(script.model)
    data = load_data(script.data, data_cfg)
    examples = {"train": data.train, "valid": data.valid, "test": data.test}[script.rl_split]
    dataset = build_rl_dataset(
        examples, data.catalog, sid_map, tokenizer, prompt_cfg,
        max_examples=script.max_examples or None, seed=args.seed,
    )
    resume = _resume_point(script, args.output_dir)
    print(
        f"[rl] {args.algorithm}: {len(dataset)} prompts x G={args.num_generations}, layout {args.layout}, "
        f"beta {args.beta}, from {script.model}" + (f", resuming {resume}" if resume else "") + f"; {budget}",
        file=sys.stderr,
    )
    trainer = SAPOTrainer(model, args, sid_map, train_dataset=dataset, processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=resume)
    out = Path(args.output_dir) / FINAL_DIR
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out)
        sid_map.save(out / "sid_map.json")
        info = {**model_info(script.model), "rl_algorithm": args.algorithm, "rl_layout": args.layout,
                "rl_base": str(script.model), "rl_steps": trainer.state.global_step, "rl_prompts": len(dataset),
                "rl_max_block_tokens": args.max_block_tokens}
        atomic_write_text(out / MODEL_INFO_FILE, json.dumps(info, indent=1))
        src_prompt = Path(script.model) / PROMPT_CONFIG_FILE
        if src_prompt.is_file():
            shutil.copyfile(src_prompt, out / PROMPT_CONFIG_FILE)
        else:
            prompt_cfg.save(out)
        print(f"[rl] model written to {out}", file=sys.stderr)


CONFIG_CLASSES = (RLScriptConfig, DataConfig, SAPOConfig)
