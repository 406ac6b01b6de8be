"""`genrec recommend`: top-K jobs for one user, with the model's reasoning per step and what each SID level means.

    genrec recommend --model runs/rl/final --data data/jobs-kaggle --history "45038, 34036"
    genrec recommend --model runs/rl/final --data data/jobs-kaggle --history "data analyst in Boston; BI developer"
    genrec recommend --model runs/rl/final --data data/jobs-kaggle --user 6747        # history from the data
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from genrec.data.config import DataConfig

HELP = "Recommend top-K jobs for a history (item ids or free text), showing the reasoning and SID meanings."


@dataclass
class RecommendConfig:
    """Who to recommend for and how."""

    model: str = field(default="", metadata={"help": "Model folder (sft/rl output)."})
    data: str = field(default="", metadata={"help": "Dataset folder or file prefix (for the catalog, and --user)."})
    sid_map: str = field(default="", metadata={"help": "sid_map.json or fit-tokenizer folder; default <model>/sid_map.json."})
    history: str = field(
        default="",
        metadata={"help": "Viewed jobs, oldest first: item ids (comma/space-separated) or free-text entries "
                          "separated by ';' (each matched to the closest catalog job; the match is printed)."},
    )
    user: str = field(default="", metadata={"help": "Take the history (and profile) of this user from --split."})
    user_split: str = field(default="test", metadata={"help": "Split to find --user in (the history before its target).",
                                                      "choices": ["train", "valid", "test"]})
    profile: str = field(default="", metadata={"help": "Optional candidate profile text."})
    topk: int = field(default=10, metadata={"help": "Number of jobs to list."})
    num_beams: int = field(default=20, metadata={"help": "Beam width over SID prefixes."})
    layout: str = field(default="auto", metadata={"help": "auto, interleaved, coarse, blocks_first or direct."})
    level_weights: str = field(default="auto", metadata={
        "help": "Weight per SID level in the beam score: auto, none or one number per level, as "
                "`genrec evaluate --level_weights`."})
    max_block_tokens: int = field(
        default=0, metadata={"help": "Free-text budget per thinking block; 0 = the model folder's (genrec_model.json), "
                             "else genrec.traces.budget.DEFAULT_MAX_BLOCK_TOKENS."})
    exclude_history: bool = field(default=False, metadata={"help": "Only recommend jobs not in the history."})
    repeat_prior: bool = field(default=True, metadata={
        "help": "Re-rank with the repeat prior counted on --data's valid split (eval/repeat.py; the '+repeat' rows "
                "of `genrec evaluate`); off when --data has no interaction files or no repeats."})
    sasrec: str = field(default="", metadata={
        "help": "Fuse the model's list with this SASRec at decoding (the '+sasrec' rows of `genrec evaluate`, a hybrid "
                "of two models): the folder `genrec evaluate` / `genrec run` wrote, <eval output_dir>/sasrec."})
    sasrec_weight: float = field(default=-1.0, metadata={
        "help": "w in log p_model + w log p_SASRec; -1 = the weight the evaluation fitted for --model "
                "(collab_prior.json in the --sasrec folder; with --exclude_history, the one fitted on new items)."})
    item_template: str = field(default="", metadata={"help": "How to print a job, e.g. '{title} at {company}, {city}'."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, ..."})
    json: bool = field(default=False, metadata={"help": "Print JSON instead of text."})

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise ValueError(f"--topk must be >= 1, got {self.topk}")
        from eval.beam import parse_level_weights

        parse_level_weights(self.level_weights)  # a bad flag fails before anything loads
        if not (self.sasrec_weight >= 0 or self.sasrec_weight == -1.0):  # NaN fails both
            raise ValueError(f"--sasrec_weight must be >= 0, or -1 for the fitted weight, got {self.sasrec_weight}")
        if self.sasrec_weight != -1.0 and not self.sasrec:
            raise ValueError("--sasrec_weight needs --sasrec (the SASRec folder `genrec evaluate` wrote)")


# DataConfig: how --user's history and the repeat prior are read (give the flags the model was trained with, e.g.
# --collapse_repeats false for a model trained on repeats kept).
CONFIG_CLASSES = (RecommendConfig, DataConfig)


def display_template(catalog, given: str = "") -> str | None:
    """'{title} at {company}, {city}' with the fields the catalog has (None: every field)."""
    if given:
        return given
    title = catalog.title_field
    if title is None:
        return None
    return "{" + title + "}" + (" at {company}" if "company" in catalog.fields else "") + (
        ", {city}" if "city" in catalog.fields else "")


@dataclass
class CollabSetting:
    """How `genrec recommend --sasrec` fuses: the weight and the list the evaluation fitted it on."""

    weight: float
    list_length: int
    candidates: int


def load_collab(cfg: RecommendConfig, catalog, with_prior: bool):
    """The SASRec of --sasrec and its fusion setting: --sasrec_weight, else the weight fitted for --model (for the
    list the evaluation's row used: with the repeat prior or not, new items only or not)."""
    import json
    from pathlib import Path

    from eval.baselines.sasrec import SASRec
    from eval.collab_prior import DEFAULT_CANDIDATES
    from eval.config import EvalConfig
    from eval.run import COLLAB_JSON

    sasrec = SASRec.load(cfg.sasrec)
    if set(sasrec.item_ids) != set(catalog.item_ids):
        ours, theirs = set(catalog.item_ids), set(sasrec.item_ids)
        unknown = sorted(ours - theirs) or sorted(theirs - ours)
        raise ValueError(f"--sasrec {cfg.sasrec} was trained on another catalog than --data {cfg.data} "
                         f"({len(theirs)} items against {len(ours)}; e.g. {unknown[0]!r} is in one only)")
    fitted_path = Path(cfg.sasrec) / COLLAB_JSON
    fitted = json.loads(fitted_path.read_text()) if fitted_path.is_file() else {}
    entry = fitted.get(str(Path(cfg.model).resolve()))
    if cfg.sasrec_weight >= 0:  # the evaluation's list for this model, else `genrec evaluate`'s defaults
        if entry:
            return sasrec, CollabSetting(cfg.sasrec_weight, int(entry["list_length"]), int(entry["candidates"]))
        return sasrec, CollabSetting(cfg.sasrec_weight, EvalConfig().topk_list()[-1], DEFAULT_CANDIDATES)
    if entry is None:
        raise ValueError(f"{fitted_path} has no weight fitted for --model {cfg.model} (it has: "
                         f"{', '.join(fitted) or 'none'}); give --sasrec_weight")
    key = "weight_new_items" if cfg.exclude_history else "weight_with_repeat_prior" if with_prior else "weight"
    if entry.get(key) is None:
        why = ("its evaluation ran no `new` protocol (--exclude_history)" if cfg.exclude_history else
               "its evaluation had no repeat prior (--repeat_prior false there, or no repeats in the data); give "
               "--repeat_prior false here" if with_prior else "its evaluation ran no `all` protocol")
        raise ValueError(f"{fitted_path} has no {key!r} for --model {cfg.model}: {why}, or --sasrec_weight")
    return sasrec, CollabSetting(float(entry[key]), int(entry["list_length"]), int(entry["candidates"]))


def run(cfg: RecommendConfig, data_cfg: DataConfig | None = None) -> None:
    from eval.beam import parse_level_weights
    from eval.generative import load_generative
    from eval.interactive import explain, format_recommendations, resolve_history, split_history
    from eval.harness import check_k
    from genrec.checks import load_checked_sid_map
    from genrec.data.schema import Example

    if not cfg.model:
        raise ValueError("--model is required")
    if not cfg.data:
        raise ValueError("--data is required (the catalog the model recommends from)")
    if bool(cfg.history.strip()) == bool(cfg.user):
        raise ValueError("give exactly one of --history (item ids or free text) and --user (a user id in the data)")
    profile = cfg.profile
    if cfg.user:
        from genrec.data.loader import load_data

        data = load_data(cfg.data, data_cfg, verbose=False)
        catalog = data.catalog
        found = [ex for ex in getattr(data, cfg.user_split) if ex.user_id == cfg.user]
        if not found:
            raise ValueError(f"user {cfg.user!r} has no example in the {cfg.user_split} split of {cfg.data}")
        entries = list(found[-1].history)
        profile = profile or found[-1].profile
    else:
        from genrec.data.loader import load_catalog

        catalog = load_catalog(cfg.data)
        entries = split_history(cfg.history, catalog)
    check_k(cfg.topk, len(catalog))
    sid_map = load_checked_sid_map(cfg.model, cfg.sid_map or None, catalog, cfg.data, command="recommend")
    history = resolve_history(entries, catalog, sid_map)  # before the model loads: bad history fails fast
    rec = load_generative(cfg.model, catalog, sid_map_path=cfg.sid_map or None, layout=cfg.layout,
                          num_beams=cfg.num_beams, max_block_tokens=cfg.max_block_tokens, device=cfg.device,
                          level_weights=parse_level_weights(cfg.level_weights))
    example = Example(cfg.user or "cli-user", tuple(h.item_id for h in history), "", profile)
    prior = None
    if cfg.repeat_prior and not cfg.exclude_history:
        from eval.repeat import fit_prior
        from genrec.data.loader import detect, load_data

        if cfg.user or detect(cfg.data).kind != "items":
            prior = fit_prior(data if cfg.user else load_data(cfg.data, data_cfg, verbose=False))
    mixing = prior if prior is not None and prior.weight else None
    sasrec, collab = load_collab(cfg, catalog, with_prior=mixing is not None) if cfg.sasrec else (None, None)
    if sasrec is not None:  # as the '+sasrec' rows: fuse the evaluation's list length, then the prior, then the top k
        from eval.collab_prior import hybrid_beams, sasrec_log_probs

        length = max(cfg.topk, collab.list_length)
        beams = rec.recommend_beams([example], length, cfg.exclude_history)
        sas = sasrec_log_probs(sasrec, [example], beams, collab.candidates, cfg.exclude_history)
        beams = hybrid_beams(collab.weight, beams, sas, [example], length, cfg.topk, rec.history_beam, mixing,
                             cfg.exclude_history)[0]
    else:
        beams = rec.recommend_beams([example], cfg.topk, cfg.exclude_history)[0]
        if mixing is not None:
            from eval.repeat import apply_repeat_prior

            beams = apply_repeat_prior(mixing, [beams], [example], cfg.topk, rec.history_beam)[0]
    template = display_template(catalog, cfg.item_template)
    if cfg.json:
        print(json.dumps({
            "layout": rec.layout,
            "repeat_prior": prior.to_dict() if prior is not None else None,
            "sasrec": {"folder": cfg.sasrec, **vars(collab)} if sasrec is not None else None,
            "history": [h.__dict__ for h in history],
            "recommendations": [
                {"rank": r, "item_id": b.item_id, "text": catalog.render(b.item_id, template), "score": None if b.filled else b.score,
                 "sid": rec.sid_map.sid_string(b.item_id), "filled": b.filled, "steps": [] if b.filled else explain(b, rec.sid_map)}
                for r, b in enumerate(beams, start=1)
            ],
        }, indent=1, ensure_ascii=False))
    else:
        how = f", repeat prior w={prior.weight:.3f} (eval/repeat.py)" if mixing is not None else ""
        how += f", fused with SASRec w={collab.weight:g} (eval/collab_prior.py)" if sasrec is not None else ""
        print(f"[{rec.layout} layout, {cfg.num_beams} beams{how}]")
        print(format_recommendations(beams, catalog, rec.sid_map, template, history, rec.prompt_cfg.noun(catalog)))
