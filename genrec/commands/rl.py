"""`genrec rl`: stage 3, RL from a stage-2 checkpoint with SAPO or a baseline (TRL GRPOTrainer subclass).

    genrec rl --config configs/rl_sapo.yaml [--algorithm grpo] [--output_dir runs/rl-grpo] ...

Writes the trained model folder (genrec/model_folder.py: weights, tokenizer, sid_map.json, prompt_config.json,
genrec_model.json with stage rl, its layout, algorithm and block budget) into <output_dir>/final, checkpoints into
<output_dir>/checkpoint-*, TensorBoard logs into <output_dir>/runs and sampled rollouts into
<output_dir>/rollouts.jsonl. Re-running the same command resumes from the latest checkpoint (--resume auto).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from genrec.data.config import DataConfig
from genrec.model_folder import FINAL_DIR
from genrec.stage_output import checkpoint_step, train, writing
from rl.config import SAPOConfig

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


def _resume_point(script: RLScriptConfig, output_dir: str) -> str | None:
    """The checkpoint to resume from: the newest complete one in output_dir (auto; checkpoints a kill cut short
    during their save are removed), a given one, or none (never: checkpoints of an earlier run are removed)."""
    from genrec.stage_output import checkpoint_complete, clear_checkpoints, latest_checkpoint

    def note(message: str) -> None:
        print(f"[rl] {message}", file=sys.stderr)

    if script.resume == "never":
        clear_checkpoints(output_dir, log=note)
        return None
    if script.resume != "auto":
        if not Path(script.resume).is_dir():
            raise FileNotFoundError(f"{script.resume}: checkpoint folder not found (--resume)")
        if not checkpoint_complete(script.resume):
            raise ValueError(f"{script.resume}: incomplete checkpoint (no readable trainer_state.json; its save was "
                             "interrupted); pass --resume auto to use the newest complete one")
        return script.resume
    last = latest_checkpoint(output_dir, log=note)
    return str(last) if last else None


def run(script: RLScriptConfig, data_cfg: DataConfig, args: SAPOConfig) -> None:
    from genrec.checks import check_output_dir, check_sid_map_catalog, require_model_folder
    from genrec.data.loader import load_data
    from genrec.model_folder import (
        AUTO,
        check_layout,
        load_info,
        load_prompt_config,
        resolve_sid_map,
        save_model_folder,
        staging_dir,
    )
    from genrec.modeling import load_model_and_tokenizer
    from genrec.response import DIRECT, INTERLEAVED
    from rl.data import build_rl_dataset
    from rl.trainer import SAPOTrainer

    if not script.model:
        raise ValueError("--model is required: the stage-2 checkpoint folder to start RL from")
    if not script.data:
        raise ValueError("--data is required: the dataset the SFT stages used")
    require_model_folder(script.model)
    check_output_dir(args.output_dir)
    sid_map = resolve_sid_map(script.model, script.sid_map or None)
    info = load_info(script.model)
    if args.layout == AUTO:  # the folder's layout; a stage-1 (direct) folder still needs an explicit --layout direct
        args.layout = info.layout if info.layout not in (None, DIRECT) else INTERLEAVED
    check_layout(script.model, info, args.layout)
    budget = args.resolve_block_budget(script.traces or None, sid_map.num_levels)
    model, tokenizer = load_model_and_tokenizer(script.model)
    tokenizer.padding_side = "left"
    prompt_cfg = load_prompt_config(script.model)
    data = load_data(script.data, data_cfg)
    check_sid_map_catalog(sid_map, data.catalog, script.sid_map or Path(script.model) / "sid_map.json", script.data,
                          command="rl")
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
    if trainer.accelerator.is_main_process:  # no step of rollouts.jsonl twice after a resume or a fresh restart
        from rl.rollout_log import ROLLOUT_FILE, drop_records_after

        drop_records_after(Path(args.output_dir) / ROLLOUT_FILE, checkpoint_step(resume) if resume else 0)
    out = Path(args.output_dir) / FINAL_DIR
    with writing(args.output_dir):  # `genrec run` redoes the stage if a kill leaves the note (stage_output.py)
        train(trainer, resume)  # a checkpoint saved at the end of training is loaded, not trained on
        staged = staging_dir(out)  # every process takes part in saving the weights (sharded/distributed models)
        if trainer.accelerator.is_main_process and staged.exists():
            shutil.rmtree(staged)  # left by a crash
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(staged))
        trainer.accelerator.wait_for_everyone()
        if trainer.accelerator.is_main_process:
            rl_info = info.derive(
                stage="rl", layout=args.layout, rl_algorithm=args.algorithm, base=str(script.model),
                max_block_tokens=None if args.layout == "direct" else args.max_block_tokens,
                extra={"rl_steps": trainer.state.global_step, "rl_prompts": len(dataset), "rl_split": script.rl_split,
                       # whose targets RL trained on: the evaluation fits nothing on them (eval/run.py)
                       "rl_prompt_users": sorted(set(dataset["user_id"]))},
            )
            save_model_folder(out, rl_info, tokenizer=tokenizer, sid_map=sid_map, prompt_cfg=prompt_cfg,
                              staged=staged)
            print(f"[rl] model written to {out}", file=sys.stderr)
        trainer.accelerator.wait_for_everyone()


CONFIG_CLASSES = (RLScriptConfig, DataConfig, SAPOConfig)
