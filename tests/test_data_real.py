"""Real data in ../shared/data (skipped when absent): counts from its README, load without special cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from genrec.data.config import DataConfig
from genrec.data.loader import load_catalog, load_data


def test_jobs_kaggle_counts(shared_data: Path) -> None:
    path = shared_data / "jobs-kaggle"
    raw = load_data(path, DataConfig(collapse_repeats=False), verbose=False)
    s = raw.summary
    assert (s["interactions_read"], s["users_read"], s["items"]) == (12_370, 3_448, 7_047)
    assert s["users"] == 1_471  # README: 1,471 users have >= 3 views
    assert (s["test_examples"], s["valid_examples"]) == (1_471, 1_471)
    # README: about 41% of leave-one-out test targets re-open the user's last job (before collapsing)
    assert 0.40 <= s["test_target_is_last_frac"] <= 0.42
    assert load_data(path, DataConfig(collapse_repeats=False, min_interactions=5), verbose=False).summary["users"] == 780
    assert len(raw.profiles) == 3_448
    assert sum(1 for e in raw.test if e.profile) > 0

    d = load_data(path, verbose=False)  # defaults: repeats collapsed, so no target equals the last history item
    assert d.summary["test_target_is_last_frac"] == 0.0
    assert 0 < d.summary["repeats_collapsed"] < 12_370
    assert d.summary["users"] < 1_471
    for e in d.train + d.valid + d.test:
        assert e.target in d.catalog and all(h in d.catalog for h in e.history)
        assert 1 <= len(e.history) <= 10


def test_jobs_kaggle_catalog(shared_data: Path) -> None:
    cat = load_catalog(shared_data / "jobs-kaggle")
    assert len(cat) == 7_047
    assert cat.field_names == ["title", "company", "city", "state", "industry"]
    assert all(cat.fields["title"])  # every job has a title


def test_amazon_presplit_counts(shared_data: Path) -> None:
    d = load_data(shared_data / "amazon-industrial-mini", verbose=False)
    assert (len(d.train), len(d.valid), len(d.test)) == (7_672, 959, 959)
    assert len(d.catalog) == 1_204
    assert d.summary["format"] == "recbole-presplit"
    assert d.catalog.field_names == ["title", "brand", "categories", "description"]
    mean_hist = sum(len(e.history) for e in d.train) / len(d.train)
    assert 1.0 <= mean_hist <= 1.6  # README: mean 1.3 items


def test_temporal_on_jobs(shared_data: Path) -> None:
    d = load_data(shared_data / "jobs-kaggle", DataConfig(split="temporal"), verbose=False)
    n = d.summary["interactions_used"] - d.summary["first_interactions_not_targets"]
    assert len(d.train) + len(d.valid) + len(d.test) == n
    assert len(d.train) > len(d.valid) > 0 and len(d.test) > 0


@pytest.mark.parametrize("name", ["jobs-kaggle", "amazon-industrial-mini"])
def test_no_target_without_catalog_entry(shared_data: Path, name: str) -> None:
    d = load_data(shared_data / name, verbose=False)
    assert all(e.target in d.catalog for e in d.test)
