"""Tiny catalogs for the tokenizer tests: clustered job texts with a few exact duplicates (forced collisions)."""

from __future__ import annotations

import random
from pathlib import Path

from genrec.data.schema import Catalog
from sid_tokenizer.config import TokenizerConfig

FAMILIES = {
    "Healthcare": ["Registered Nurse", "ICU Nurse", "Medical Assistant", "Pharmacy Technician", "Caregiver"],
    "Logistics": ["Truck Driver", "Forklift Operator", "Warehouse Associate", "Dispatcher", "Courier"],
    "Hospitality": ["Line Cook", "Server", "Bartender", "Dishwasher", "Hotel Receptionist"],
    "Software": ["Backend Engineer", "Data Scientist", "Frontend Developer", "QA Tester", "DevOps Engineer"],
    "Retail": ["Cashier", "Store Manager", "Sales Associate", "Merchandiser", "Stock Clerk"],
}
SKILLS = {
    "Healthcare": ["patient care", "triage", "medication", "cpr", "charting"],
    "Logistics": ["cdl license", "forklift", "inventory", "routing", "loading"],
    "Hospitality": ["food safety", "mixology", "guest service", "prep", "pos"],
    "Software": ["python", "sql", "kubernetes", "react", "testing"],
    "Retail": ["merchandising", "customer service", "cash handling", "visual display", "stocking"],
}
CITIES = ["Boston", "Denver", "Austin", "Seattle", "Miami", "Chicago"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell"]
TEMPLATE = "{title} at {company} in {city}. Industry: {industry}. Skills: {skills}"


def tiny_catalog(n: int = 300, seed: int = 0, duplicates: int = 6) -> Catalog:
    """n jobs over 5 industries; the last `duplicates` items copy earlier items' fields exactly."""
    rng = random.Random(seed)
    rows = []
    for i in range(n - duplicates):
        ind = rng.choice(list(FAMILIES))
        rows.append({
            "title": rng.choice(FAMILIES[ind]),
            "company": rng.choice(COMPANIES),
            "city": rng.choice(CITIES),
            "industry": ind,
            "skills": ", ".join(rng.sample(SKILLS[ind], 2)),
        })
    for i in range(duplicates):
        rows.append(dict(rows[i]))
    ids = [f"job{i:04d}" for i in range(n)]
    fields = {k: [r[k] for r in rows] for k in rows[0]}
    return Catalog(ids, fields)


def tiny_config(**over) -> TokenizerConfig:
    """A fast config: 3 x 16 codes, small TF-IDF, text only (no interactions here), no embedding cache, short RQ-VAE
    training, one thread."""
    base = dict(template=TEMPLATE, encoder="tfidf", levels=3, codebook_size=16, tfidf_dim=32, cache_dir="", steps=40,
                collab_dim=0, batch_size=512, hidden_dims=[64], latent_dim=16, kmeans_iters=10, dead_code_every=10, threads=1)
    base.update(over)
    return TokenizerConfig(**base)


def write_item_file(catalog: Catalog, folder: Path, name: str = "tiny") -> Path:
    """The catalog as a RecBole atomic .item file (tab-separated, typed header)."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = catalog.field_names
    lines = ["\t".join(["item_id:token"] + [f"{c}:token_seq" for c in cols])]
    for i, item in enumerate(catalog.item_ids):
        lines.append("\t".join([item] + [catalog.fields[c][i] for c in cols]))
    path = folder / f"{name}.item"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
