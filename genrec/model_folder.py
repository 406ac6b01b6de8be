"""The trained-model folder: what `genrec build-model`, `genrec sft` and `genrec rl` write and every later stage reads.

One owner for the folder's files, so the writers and the readers agree:

    config.json, model.safetensors, tokenizer files   the model and its tokenizer (transformers)
    sid_map.json                                       item -> SID codes the model was trained with
    prompt_config.json                                 how its prompts were built (genrec.prompts.PromptConfig)
    genrec_model.json                                  `ModelInfo`: stage, layout, block budget, RL algorithm, base

- `ModelInfo` is the schema of genrec_model.json (`load_info` reads it, older key names included);
- `save_model_folder` writes a whole folder atomically (a temporary folder renamed into place, so a crash never
  leaves a half-written `final/`);
- `sft_info` and `ModelInfo.derive` make the info of a stage's output from its base folder's;
- `resolve_sid_map`, `load_prompt_config`, `check_layout`, `resolve_layout` and `resolve_block_budget` are the
  readers every stage uses.

Stage 1 SFT writes layout `direct`; stage 2 the layout of its traces (traces_config.json); RL the layout it trained
on, its algorithm and its rollouts' block budget. `check_layout` turns a layout that contradicts the folder into a
one-line error (`genrec rl`, `genrec evaluate`, `genrec recommend`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from genrec.grammar import DIRECT, INTERLEAVED, LAYOUTS
from genrec.traces.budget import DEFAULT_MAX_BLOCK_TOKENS
from sid_tokenizer.sidmap import atomic_write_text

MODEL_INFO_FILE = "genrec_model.json"
SID_MAP_FILE = "sid_map.json"
FINAL_DIR = "final"  # `<output_dir>/final`: the trained model of `genrec sft` and `genrec rl`
STAGES = ("base", "sft1", "sft2", "rl")  # build-model output, SFT stage 1, SFT stage 2, RL
AUTO = "auto"
# keys of older genrec_model.json files -> schema field
_LEGACY = {"rl_layout": "layout", "rl_max_block_tokens": "max_block_tokens", "rl_base": "base"}


@dataclass
class ModelInfo:
    """genrec_model.json. Schema fields first; `extra` keeps everything else (origin, losses, counts, ...)."""

    stage: str | None = None  # the last stage that wrote the folder, one of STAGES
    layout: str | None = None  # response layout it was trained on (None: not trained on responses yet)
    max_block_tokens: int | None = None  # thinking-block budget: its RL rollouts' or its traces' (auto) budget
    sft_stage: int | None = None  # last SFT stage it went through (kept through RL)
    rl_algorithm: str | None = None
    base: str | None = None  # the folder this one was trained from
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"genrec_model.json: unknown stage {self.stage!r}; expected one of {', '.join(STAGES)}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"genrec_model.json: unknown layout {self.layout!r}; expected one of {', '.join(LAYOUTS)}")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        d = dict(d)
        for old, new in _LEGACY.items():
            if old in d:
                value = d.pop(old)
                d.setdefault(new, value)
        names = {f.name for f in fields(cls)} - {"extra"}
        info = cls(**{k: d.pop(k) for k in list(d) if k in names}, extra=d)
        if info.stage is None:  # written before the schema had a stage
            info.stage = "rl" if info.rl_algorithm else f"sft{info.sft_stage}" if info.sft_stage in (1, 2) else None
        return info

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        return {**d, **{k: v for k, v in self.extra.items() if k not in d}}

    def derive(self, **changes) -> "ModelInfo":
        """The info of a folder trained from this one: schema fields replaced, `extra` merged."""
        extra = {**self.extra, **changes.pop("extra", {})}
        return ModelInfo(**{**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}, **changes},
                         extra=extra)


def load_info(folder: str | os.PathLike) -> ModelInfo:
    """The folder's ModelInfo (empty when it has no genrec_model.json, e.g. a plain pretrained model)."""
    path = Path(folder) / MODEL_INFO_FILE
    if not path.is_file():
        return ModelInfo()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    try:
        return ModelInfo.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def save_model_folder(
    out_dir: str | os.PathLike,
    info: ModelInfo,
    *,
    model=None,
    tokenizer=None,
    sid_map=None,
    prompt_cfg=None,
    staged: str | os.PathLike | None = None,
) -> Path:
    """Write a model folder atomically: into a temporary folder beside `out_dir`, then renamed over it.

    `staged`: a folder that already holds the weights (written by every process through `Trainer.save_model`, see
    `staging_dir`); it is completed and renamed. Otherwise `model.save_pretrained` writes them.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(staged) if staged is not None else Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        if staged is None:  # mkdtemp makes the folder private (0700); give it the ordinary permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
        if model is not None:
            model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if sid_map is not None:
            sid_map.save(tmp / SID_MAP_FILE)
        if prompt_cfg is not None:
            prompt_cfg.save(tmp)
        atomic_write_text(tmp / MODEL_INFO_FILE, json.dumps(info.to_dict(), indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def staging_dir(out_dir: str | os.PathLike) -> Path:
    """The same temporary folder name on every process, for weights saved collectively before `save_model_folder`."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.staging"


def resolve_sid_map(model_dir: str | os.PathLike, sid_map_path: str | os.PathLike | None = None):
    """The SID map given (sid_map.json or the fit-tokenizer folder), else the one saved in the model folder."""
    from sid_tokenizer.sidmap import SIDMap

    path = Path(sid_map_path) if sid_map_path else Path(model_dir) / SID_MAP_FILE
    if path.is_dir():
        path = path / SID_MAP_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: SID map not found; pass --sid_map (sid_map.json or the fit-tokenizer folder)")
    return SIDMap.load(path)


def load_prompt_config(model_dir: str | os.PathLike):
    """The prompt settings the model was trained with (defaults for a folder without them)."""
    from genrec.prompts import PromptConfig

    return PromptConfig.load_or_default(model_dir)


def check_layout(model_dir: str | os.PathLike, info: ModelInfo, layout: str) -> None:
    """One-line ValueError when `layout` contradicts what the folder was trained on (a folder that says nothing,
    e.g. build-model output, accepts every layout)."""
    trained = info.layout
    if trained is None:  # an older folder: its stage still tells direct from reasoning
        trained = DIRECT if info.stage == "sft1" else None
        if info.stage in ("sft2", "rl") and layout == DIRECT:
            raise ValueError(f"{model_dir}: a stage-2 model writes reasoning blocks; --layout direct is for stage-1 "
                             "models (pass the layout of its traces)")
    if trained is None or trained == layout:
        return
    if trained == DIRECT:
        raise ValueError(f"{model_dir}: a stage-1 model (layout 'direct' in {MODEL_INFO_FILE}) writes SID tokens only; "
                         f"it needs --layout direct (got {layout!r}), or start from a stage-2 model")
    if layout == DIRECT:
        raise ValueError(f"{model_dir}: a {info.stage or 'reasoning'} model trained on the {trained!r} layout writes "
                         f"reasoning blocks; --layout direct is for stage-1 models (pass --layout {trained})")
    raise ValueError(f"{model_dir}: the model was trained on the {trained!r} layout ({MODEL_INFO_FILE}) but --layout "
                     f"is {layout!r}; pass --layout {trained}")


def resolve_layout(model_dir: str | os.PathLike, info: ModelInfo, layout: str, reasoning_prompt: bool = True) -> str:
    """The layout to decode with: an explicit one (checked against the folder), else the folder's; for a folder
    that does not say, `direct` when its prompt asks for the SID only, else `interleaved`."""
    if layout != AUTO:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected auto or one of {', '.join(LAYOUTS)}")
        check_layout(model_dir, info, layout)
        return layout
    if info.layout is not None:
        return info.layout
    if info.stage == "sft1" or not reasoning_prompt:
        return DIRECT
    return INTERLEAVED


def resolve_block_budget(info: ModelInfo, max_block_tokens: int) -> int:
    """An explicit budget (> 0) as given; 0 = auto: the folder's (its RL rollouts' or its traces'), else the default."""
    if max_block_tokens < 0:
        raise ValueError(f"max_block_tokens must be >= 1, or 0 for auto, got {max_block_tokens}")
    if max_block_tokens:
        return max_block_tokens
    return int(info.max_block_tokens) if info.max_block_tokens else DEFAULT_MAX_BLOCK_TOKENS


def sft_info(base: str | os.PathLike, sft_stage: int, traces: str | os.PathLike | None = None,
             extra: dict | None = None) -> ModelInfo:
    """The info of an SFT output trained from `base`: stage 1 writes `direct`; stage 2 the layout of its traces
    and their auto block budget (largest per-level p95, when traces_config.json records the statistics)."""
    from genrec.traces.budget import traces_block_budget, traces_layout

    layout, budget = DIRECT, None
    if sft_stage == 2:
        layout = traces_layout(traces) if traces else None
        layout = layout if layout in LAYOUTS else None
        try:
            budget = traces_block_budget(traces)[0] if traces else None
        except (FileNotFoundError, ValueError):
            budget = None
    return load_info(base).derive(stage=f"sft{sft_stage}", sft_stage=sft_stage, layout=layout, max_block_tokens=budget,
                                  rl_algorithm=None, base=str(base), extra=extra or {})
