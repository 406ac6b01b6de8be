"""Tiny shared fixtures: a 48-job catalog, a 2-level SID map with labels, examples, and a tiny model folder.

Import from any test as `from tests.helpers_tiny import ...` (one module name, so the tiny model is built once).
Everything is deterministic and built in well under a second, except `tiny_model_dir()` (a few
seconds, built once per process and cached; treat the folder as read-only, copy it before changing it).

SID layout: level a = job family (4 codes), level b = dedup level (12 codes); item "j{f}{i:02d}" has
SID <a_f><b_i>. Users stay inside one family, so level a is predictable from the history.
"""

from __future__ import annotations

import functools
import random
import shutil
import tempfile
from pathlib import Path

from genrec.data.schema import Catalog, Example, RecData
from sid_tokenizer.sidmap import SIDMap

FAMILIES = [
    ("Data and analytics", ["Data Analyst", "Data Engineer", "Data Scientist", "BI Developer", "Analytics Manager",
                            "ML Engineer", "Statistician", "Database Administrator", "ETL Developer",
                            "Research Analyst", "Data Architect", "Quant Analyst"],
     ["python", "sql", "statistics"]),
    ("Nursing and care", ["Registered Nurse", "Nurse Practitioner", "Care Assistant", "Home Health Aide",
                          "ICU Nurse", "Pediatric Nurse", "Nursing Supervisor", "Medical Assistant",
                          "Patient Care Technician", "Clinical Nurse", "Hospice Nurse", "School Nurse"],
     ["patient care", "triage", "medication"]),
    ("Sales and retail", ["Sales Associate", "Store Manager", "Account Executive", "Retail Cashier",
                          "Sales Manager", "Inside Sales Rep", "Merchandiser", "Key Account Manager",
                          "Shift Supervisor", "Customer Advisor", "Territory Manager", "Buyer"],
     ["negotiation", "customer service", "crm"]),
    ("Logistics and driving", ["Truck Driver", "Warehouse Associate", "Forklift Operator", "Delivery Driver",
                               "Logistics Coordinator", "Dispatcher", "Inventory Clerk", "Fleet Manager",
                               "Shipping Clerk", "Supply Chain Analyst", "Route Planner", "Courier"],
     ["cdl license", "forklift", "inventory"]),
]
CITIES = ["Boston", "Denver", "Austin", "Seattle"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark"]
CODEBOOK_SIZES = [4, 12]


def item_id(family: int, index: int) -> str:
    return f"j{family}{index:02d}"


def tiny_catalog() -> Catalog:
    """48 jobs with fields title, company, city, industry."""
    ids, title, company, city, industry = [], [], [], [], []
    for f, (fam, titles, _) in enumerate(FAMILIES):
        for i, t in enumerate(titles):
            ids.append(item_id(f, i))
            title.append(t)
            company.append(COMPANIES[(f + i) % len(COMPANIES)])
            city.append(CITIES[(i * 3 + f) % len(CITIES)])
            industry.append(fam)
    return Catalog(ids, {"title": title, "company": company, "city": city, "industry": industry})


def tiny_sid_map(labels: bool = True) -> SIDMap:
    """<a_family><b_index> for every job; labels for level-a prefixes and full SIDs (the titles)."""
    items = {item_id(f, i): (f, i) for f, (_, titles, _) in enumerate(FAMILIES) for i in range(len(titles))}
    lab: dict[str, str] = {}
    if labels:
        for f, (fam, titles, _) in enumerate(FAMILIES):
            lab[f"<a_{f}>"] = fam
            for i, t in enumerate(titles):
                lab[f"<a_{f}><b_{i}>"] = t
    return SIDMap(items, list(CODEBOOK_SIZES), lab)


def _profile(rng: random.Random, family: int) -> str:
    skills = FAMILIES[family][2]
    return f"Skills: {', '.join(rng.sample(skills, 2))}. Location: {rng.choice(CITIES)}."


def tiny_examples(n_users: int = 24, history_len: int = 4, seed: int = 0) -> tuple[list[Example], list[Example], list[Example]]:
    """Leave-one-out splits: each user views `history_len + 2` jobs of one family, in a cyclic order."""
    rng = random.Random(seed)
    train, valid, test = [], [], []
    for u in range(n_users):
        f = u % len(FAMILIES)
        start, step = rng.randrange(12), rng.choice([1, 5, 7])
        seq = tuple(item_id(f, (start + step * t) % 12) for t in range(history_len + 2))
        uid, prof = f"u{u:03d}", _profile(rng, f)
        for t in range(1, history_len):
            train.append(Example(uid, seq[:t], seq[t], prof))
        valid.append(Example(uid, seq[:history_len], seq[history_len], prof))
        test.append(Example(uid, seq[: history_len + 1], seq[history_len + 1], prof))
    return train, valid, test


def tiny_recdata(n_users: int = 24, seed: int = 0) -> RecData:
    train, valid, test = tiny_examples(n_users, seed=seed)
    profiles = {e.user_id: e.profile for e in test}
    return RecData("tiny-jobs", tiny_catalog(), profiles, train, valid, test, {"users": n_users})


def tiny_corpus(recdata: RecData | None = None) -> list[str]:
    """Text to train the tiny tokenizer on: item texts, profiles, and prompt/trace wording."""
    from genrec.modeling import default_corpus

    rd = recdata or tiny_recdata()
    return default_corpus(rd.catalog, rd.profiles.values())


@functools.lru_cache(maxsize=None)
def tiny_model_dir() -> Path:
    """A built tiny model folder (hidden 64, 2 layers) for the tiny SID map; built once per process."""
    from genrec.modeling import TinyModelConfig, build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="genrec-tiny-model-"))
    cfg = TinyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                          intermediate_size=128, bpe_vocab_size=1000)
    return build_tiny_model(root / "model", tiny_sid_map(), tiny_corpus(), cfg)


def copy_tiny_model(dest: str | Path) -> Path:
    """A private, writable copy of `tiny_model_dir()` at `dest`."""
    dest = Path(dest)
    shutil.copytree(tiny_model_dir(), dest)
    return dest


def write_tiny_tokenizer_dir(dest: str | Path) -> Path:
    """A folder holding sid_map.json, like the output of `genrec fit-tokenizer` (SID map part only)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tiny_sid_map().save(dest / "sid_map.json")
    return dest


def write_tiny_data_dir(dest: str | Path, n_users: int = 24, seed: int = 0) -> Path:
    """The tiny data set as RecBole pre-split files (`tiny-jobs.{train,valid,test}.inter`, `.item`, `.user`),
    readable by `genrec.data.loader.load_data`; the profiles become "skills: ...\\nlocation: ..."."""
    from genrec.data.recbole import write_atomic

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rd = tiny_recdata(n_users, seed)
    cat = rd.catalog
    write_atomic(dest / "tiny-jobs.item", ["item_id:token", "title:token_seq", "company:token_seq", "city:token_seq",
                                           "industry:token_seq"],
                 [[i, *(cat.record(i)[f] for f in ("title", "company", "city", "industry"))] for i in cat.item_ids])
    users = []
    for uid, prof in sorted(rd.profiles.items()):
        skills, location = prof.split(". Location: ")
        users.append([uid, skills.removeprefix("Skills: "), location.rstrip(".")])
    write_atomic(dest / "tiny-jobs.user", ["user_id:token", "skills:token_seq", "location:token_seq"], users)
    for split in ("train", "valid", "test"):
        write_atomic(dest / f"tiny-jobs.{split}.inter", ["user_id:token", "item_id_list:token_seq", "item_id:token"],
                     [[e.user_id, list(e.history), e.target] for e in getattr(rd, split)])
    return dest


# Shared by the beam-search tests (test_eval_beam.py, test_beam_mask.py).
@functools.lru_cache(maxsize=None)
def perturbed_tiny_model():
    """Tiny model with larger random weights, so greedy text and SID choices depend on the prompt, and a
    boosted </think> embedding, so blocks end at different lengths in different rows."""
    import torch

    from genrec.modeling import load_model_and_tokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model, tok = load_model_and_tokenizer(tiny_model_dir())
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        close = tok.convert_tokens_to_ids("</think>")
        model.get_input_embeddings().weight[close] *= 6.0
    model.eval()
    return model, tok


def tiny_prompts(n: int = 5) -> list[str]:
    _, tok = perturbed_tiny_model()
    from genrec.prompts import PromptConfig, build_prompt

    rd = tiny_recdata()
    return [build_prompt(ex, rd.catalog, tiny_sid_map(), tok, PromptConfig()) for ex in rd.test[:n]]


# Shared by the stage-2 SFT tests (test_sft.py, test_distill.py).
def tiny_trace_rows(out_dir, tokenizer):
    """(prompt config, prompt/completion rows) of grounded traces on the tiny data's train split, SID-only history
    lines, no profile; the trace folder is written to `out_dir`."""
    from genrec.prompts import PromptConfig
    from genrec.traces.build import TraceConfig, make_traces
    from genrec.traces.dataset import load_traces

    pc = PromptConfig(history_format="sid", include_profile=False)
    cfg = TraceConfig(output_dir=str(out_dir), splits="train")
    traces = make_traces(tiny_recdata(), tiny_sid_map(), tokenizer, cfg, pc)
    return pc, load_traces(traces, tiny_sid_map()).select_columns(["prompt", "completion"])


def train_tiny_stage2(out_dir, rows, prompt_cfg, stage, max_steps: int):
    """Stage 2 of the tiny model on `rows` at a constant learning rate 5e-3, batch 8, seed 0, no checkpoints: two
    runs that differ only in `stage` (an SFTStageConfig) are a paired comparison. Returns the final folder."""
    from genrec.sft import GenrecSFTConfig, train_sft

    args = GenrecSFTConfig(output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=8,
                           learning_rate=5e-3, logging_steps=5, save_strategy="no", report_to="none",
                           disable_tqdm=True, seed=0, lr_scheduler_type="constant")
    return train_sft(tiny_model_dir(), tiny_sid_map(), rows, args, stage=stage, prompt_cfg=prompt_cfg)
