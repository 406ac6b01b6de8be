"""`genrec traces`: reasoning traces (prompt + K-step completion) for stage-2 SFT."""

from __future__ import annotations

import json

from genrec.data.config import DataConfig
from genrec.prompts import PromptConfig
from genrec.traces.build import TraceConfig, make_traces
from sid_tokenizer.sidmap import SIDMap

HELP = "Write reasoning traces (grounded template teacher or an LLM teacher) as a datasets folder."
CONFIG_CLASSES = (TraceConfig, PromptConfig, DataConfig)


def run(cfg: TraceConfig, prompt_cfg: PromptConfig, data_cfg: DataConfig) -> None:
    for name in ("data", "sid_map", "model"):
        if not getattr(cfg, name):
            raise ValueError(f"--{name} is required")
    from genrec.data.loader import load_data
    from genrec.modeling import check_model_tokens, load_tokenizer

    sid_map = SIDMap.load(cfg.sid_map)
    tokenizer = load_tokenizer(cfg.model)
    check_model_tokens(tokenizer, sid_map, where=cfg.model)
    rec = load_data(cfg.data, data_cfg, verbose=False)
    from genrec.stage_output import writing

    with writing(cfg.output_dir):  # readers refuse the folder until every split and config file is written
        out = make_traces(rec, sid_map, tokenizer, cfg, prompt_cfg)
    from genrec.traces.budget import TRACES_CONFIG_FILE

    info = json.loads((out / TRACES_CONFIG_FILE).read_text())
    print(f"wrote traces to {out}: {info['counts']} (teacher {cfg.teacher}, layout {cfg.layout})")
