"""`genrec fit-tokenizer`: fit the semantic-ID tokenizer on a dataset's items and write the SID map.

Output folder: tokenizer.safetensors + tokenizer_config.json (the fitted tokenizer), sid_map.json (item -> SID),
sid_labels.json (SID prefix -> label), tokenizer_report.json (quality numbers) and tb/ (TensorBoard logs).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from genrec.data.config import DataConfig
from genrec.stage_output import is_complete, writing
from sid_tokenizer.config import TokenizerConfig
from sid_tokenizer.sidmap import atomic_write_text

HELP = "Fit the semantic-ID tokenizer (text embedding + RQ-KMeans/RQ-VAE + dedup level) and write sid_map.json."


@dataclass
class FitTokenizerArgs:
    """Where the items come from and where the tokenizer goes."""

    data: str = field(
        default="",
        metadata={"help": "Dataset folder or file with the items (RecBole .item, pre-split sets, MiniOneRec item.json)."},
    )
    out: str = field(default="outputs/tokenizer", metadata={"help": "Output folder for the tokenizer and SID map."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace an existing sid_map.json in --out (later stages built on the old one go stale)."},
    )


CONFIG_CLASSES = (FitTokenizerArgs, TokenizerConfig, DataConfig)


def _same_fit(out: Path, args: FitTokenizerArgs, cfg: TokenizerConfig) -> dict | None:
    """The report of a complete folder fitted with these settings on this --data (None when anything differs)."""
    try:
        saved = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))["config"]
        report = json.loads((out / "tokenizer_report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    same = saved == json.loads(json.dumps(cfg.to_dict())) and report.get("data") == str(args.data)
    return report if same else None


ID_ONLY_COLLAB_DIM = 64  # co-view dimensions of an ID-only catalog's item vectors when collab_dim is left at 0


def id_only_settings(cfg: TokenizerConfig) -> TokenizerConfig:
    """The settings for a catalog without text: no text encoder ('none'; a .npy of the user's own item vectors is
    kept) and co-view vectors (`collab_dim`, ID_ONLY_COLLAB_DIM unless set), so the SIDs group items viewed together
    instead of hashing ids."""
    from dataclasses import replace

    if cfg.encoder.strip().lower().endswith(".npy"):
        return cfg
    new = replace(cfg, encoder="none", collab_dim=cfg.collab_dim or ID_ONLY_COLLAB_DIM)
    print(f"[fit-tokenizer] the items have no text (ID-only dataset): encoder {cfg.encoder!r} -> 'none', SIDs from "
          f"co-view vectors (collab_dim {new.collab_dim})", file=sys.stderr, flush=True)
    return new


def train_sequences(data: str, data_cfg: DataConfig | None) -> list[list[str]] | None:
    """Each user's train items in time order (the collaborative part of the SIDs); None for a catalog-only dataset.

    Only the train split is read, so no validation or test target shapes the SIDs the model is judged with."""
    from genrec.data.loader import detect, load_data
    from genrec.data.sequences import reconstruct_sequences

    if detect(data).kind == "items":
        return None  # SIDTokenizer.fit warns that the SIDs come from the text alone
    rec = load_data(data, data_cfg, verbose=False)
    return [list(items) for items, _ in reconstruct_sequences(rec.train)]


def run(args: FitTokenizerArgs, cfg: TokenizerConfig, data_cfg: DataConfig | None = None) -> dict:
    """Fit, save everything, print a short summary; returns the report dict."""
    from genrec.checks import check_output_dir
    from genrec.data.loader import load_catalog
    from sid_tokenizer.tokenizer import SIDTokenizer

    if not args.data:
        raise ValueError("--data is required (a dataset folder, e.g. the output of `genrec synth`)")
    cfg.validate()
    out = check_output_dir(args.out, "--out")
    catalog = load_catalog(args.data, data_cfg)
    if catalog.text_free:
        cfg = id_only_settings(cfg)
    # a folder an interrupted fit left half-written is replaced without --overwrite (it holds no finished SID map);
    # a complete one fitted with these settings on this data is kept (rerunning the same command is a no-op)
    done = None
    if (out / "sid_map.json").exists() and not args.overwrite and is_complete(out):
        done = _same_fit(out, args, cfg)
        if done is None:
            raise FileExistsError(f"{out / 'sid_map.json'} already exists: pass --overwrite true to replace it")
    if done is not None:
        from sid_tokenizer.sidmap import SIDMap, catalog_matches

        fitted = SIDMap.load(out)
        same = set(fitted.item_to_codes) == set(catalog.item_ids)
        if same and fitted.catalog:  # same ids, other texts (e.g. another market) is another catalog too
            same = catalog_matches(fitted.catalog, list(catalog.item_ids), catalog.fields) is not False
        if not same:
            raise FileExistsError(f"{out / 'sid_map.json'} already exists (fitted on another catalog): pass "
                                  "--overwrite true to replace it")
        print(f"{out}: already fitted with these settings on {args.data}; nothing to do (--overwrite true refits)")
        return done
    print(f"[fit-tokenizer] {len(catalog)} items from {args.data}; encoder {cfg.encoder}, method {cfg.method}, "
          f"{cfg.levels} x {cfg.codebook_size} + dedup", file=sys.stderr, flush=True)
    needs_views = cfg.collab_dim or cfg.dedup_order == "popularity"
    sequences = train_sequences(args.data, data_cfg) if needs_views else None
    tok = SIDTokenizer(cfg)
    with writing(out):  # readers refuse the folder until every file below is written (genrec/stage_output.py)
        sid_map = tok.fit_catalog(catalog, log_dir=out / "tb", source=Path(args.data).resolve().name,
                                  sequences=sequences)
        tok.save(out)
        sid_map.save(out / "sid_map.json")
        atomic_write_text(out / "sid_labels.json", json.dumps(sid_map.labels, indent=1, ensure_ascii=False))
        report = dict(tok.report, data=str(args.data), template=cfg.template)
        atomic_write_text(out / "tokenizer_report.json", json.dumps(report, indent=1))
    print(
        f"wrote {len(sid_map)} SIDs ({sid_map.num_levels} levels, codebooks {sid_map.codebook_sizes}) to {out}\n"
        f"  collisions before dedup {report['collision_rate_before_dedup']:.4f} "
        f"(largest group {report['max_items_per_sid_before_dedup']}), after 0; utilisation "
        f"{' / '.join(f'{u:.2f}' for u in report['utilization'][:-1])}; recon_mse {report['recon_mse']:.4g}; "
        f"embed {report['embed_seconds']:.1f}s, fit {report['fit_seconds']:.1f}s"
    )
    return report
