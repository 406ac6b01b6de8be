"""The synthetic job market: deterministic, well-formed RecBole files, and a measured (not assumed) signal."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from genrec.data.recbole import read_atomic
from genrec.data.synth import NAME, SynthConfig, generate_market, market_stats, write_market

SMALL = dict(num_jobs=600, num_users=400, progress=False)
FILES = (f"{NAME}.inter", f"{NAME}.item", f"{NAME}.user", "synth_config.json")


def _write(tmp: Path, **kw) -> Path:
    cfg = SynthConfig(out=str(tmp), **{**SMALL, **kw})
    write_market(generate_market(cfg), tmp)
    return tmp


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("synth"), seed=7)


def _sequences(folder: Path) -> dict[str, list[tuple[float, str]]]:
    inter = read_atomic(folder / f"{NAME}.inter")
    seqs: dict[str, list[tuple[float, str]]] = {}
    for u, i, t in zip(inter.col("user_id"), inter.col("item_id"), inter.floats("timestamp")):
        seqs.setdefault(u, []).append((t, i))
    return seqs


def _items(folder: Path) -> dict[str, dict[str, str]]:
    t = read_atomic(folder / f"{NAME}.item")
    return {iid: {n: t.col(n)[k] for n in t.names} for k, iid in enumerate(t.col("item_id"))}


def _pairs(folder: Path) -> list[tuple[str, str]]:
    """Consecutive (previous, next) applications of every applicant, in time order."""
    out = []
    for seq in _sequences(folder).values():
        items = [i for _, i in sorted(seq)]
        out.extend(zip(items[:-1], items[1:]))
    return out


def test_same_seed_gives_byte_identical_files(tmp_path, market_dir):
    again = _write(tmp_path / "again", seed=7)
    for name in FILES:
        assert (again / name).read_bytes() == (market_dir / name).read_bytes(), name


def test_different_seeds_differ(tmp_path, market_dir):
    other = _write(tmp_path / "other", seed=8)
    for name in FILES[:3]:
        assert (other / name).read_bytes() != (market_dir / name).read_bytes(), name


def test_catalog_does_not_depend_on_number_of_users(tmp_path, market_dir):
    more = _write(tmp_path / "more", seed=7, num_users=150)
    assert (more / f"{NAME}.item").read_bytes() == (market_dir / f"{NAME}.item").read_bytes()


def test_files_have_expected_columns_and_no_empty_values(market_dir):
    expect = {
        "inter": ["user_id:token", "item_id:token", "timestamp:float"],
        "item": ["item_id:token"] + [f"{c}:token_seq" for c in
                                     ("title", "company", "industry", "seniority", "skills", "location", "description")],
        "user": ["user_id:token"] + [f"{c}:token_seq" for c in ("past_roles", "skills", "location", "seniority")],
    }
    for ext, header in expect.items():
        t = read_atomic(market_dir / f"{NAME}.{ext}")
        assert [f"{n}:{ty}" for n, ty in zip(t.names, t.types)] == header
        for name in t.names:
            empty = [t.lines[k] for k, v in enumerate(t.col(name)) if not v.strip()]
            assert not empty, f"{ext}.{name} empty on lines {empty[:5]}"
    items = read_atomic(market_dir / f"{NAME}.item")
    users = read_atomic(market_dir / f"{NAME}.user")
    assert len(set(items.col("item_id"))) == len(items) == SMALL["num_jobs"]
    assert len(set(users.col("user_id"))) == len(users) == SMALL["num_users"]
    inter = read_atomic(market_dir / f"{NAME}.inter")
    assert set(inter.col("item_id")) <= set(items.col("item_id"))
    assert set(inter.col("user_id")) == set(users.col("user_id"))
    assert not list(market_dir.glob(".*.tmp")), "temporary files left behind"


def test_timestamps_increase_and_lengths_in_range(market_dir):
    cfg = SynthConfig(**SMALL)
    seqs = _sequences(market_dir)
    lengths = []
    for u, seq in seqs.items():
        times = [t for t, _ in seq]  # file order
        assert all(b > a for a, b in zip(times, times[1:])), f"timestamps of {u} do not increase"
        lengths.append(len(seq))
    assert min(lengths) >= cfg.min_seq_len and max(lengths) <= cfg.max_seq_len
    assert 7.0 <= float(np.mean(lengths)) <= 11.0
    assert len(set(lengths)) >= 10, "sequence lengths should spread"


def test_loader_reads_the_market(market_dir):
    from genrec.data.config import DataConfig
    from genrec.data.loader import load_catalog, load_data

    data = load_data(market_dir, DataConfig(), verbose=False)
    assert len(data.catalog) == SMALL["num_jobs"]
    assert set(data.catalog.field_names) == {"title", "company", "industry", "seniority", "skills", "location", "description"}
    # everyone has >= 3 applications; only collapsing back-to-back re-views can push a few below 3
    assert data.summary["users_read"] == SMALL["num_users"]
    assert len(data.test) == len(data.valid) == data.summary["users"] >= 0.9 * SMALL["num_users"]
    ex = data.test[0]
    assert ex.history and ex.target in data.catalog
    assert "past_roles:" in ex.profile and "skills:" in ex.profile
    assert len(load_catalog(market_dir)) == SMALL["num_jobs"]


def test_next_application_follows_industry_and_seniority(market_dir):
    """Measured on the files: the next job shares the previous job's industry far above the base rate."""
    items = _items(market_dir)
    pairs = _pairs(market_dir)
    same_ind = np.mean([items[a]["industry"] == items[b]["industry"] for a, b in pairs])
    counts = Counter(items[b]["industry"] for _, b in pairs)
    total = sum(counts.values())
    base = sum((c / total) ** 2 for c in counts.values())
    assert same_ind > 0.6 and same_ind > 5 * base, (same_ind, base)

    level = {name: k for k, name in enumerate(("intern", "junior", "mid", "senior", "lead", "director"))}
    sen = [(level[items[a]["seniority"]], level[items[b]["seniority"]]) for a, b in pairs]
    down = np.mean([b < a for a, b in sen])
    up = np.mean([b > a for a, b in sen])
    # random pairs would go down ~35% of the time
    all_levels = np.array([level[it["seniority"]] for it in items.values()])
    rand_down = np.mean(all_levels[:, None] > all_levels[None, :])
    assert down < 0.15 and down < up and down < rand_down / 3, (down, up, rand_down)

    # coarse is much easier than exact: the exact next job is rarely the previous one
    same_job = np.mean([a == b for a, b in pairs])
    assert same_job < 0.1


def test_signal_vanishes_when_every_application_is_random(tmp_path):
    """The statistic above can fail: with explore_rate=1 the next industry is at the base rate."""
    m = generate_market(SynthConfig(seed=3, explore_rate=1.0, repeat_rate=0.0, **SMALL))
    s = market_stats(m)
    assert abs(s["next_same_industry"] - s["base_same_industry"]) < 0.05
    assert s["next_seniority_down"] > 0.25


def test_latent_structure_profile_location_repeats():
    # the demo-sized catalog: at 600 jobs a family rarely has postings in the home city
    m = generate_market(SynthConfig(seed=11, num_jobs=3000, num_users=400, progress=False))
    first = np.r_[True, m.inter_user[1:] != m.inter_user[:-1]]
    fam_first = m.job_family[m.inter_job[first]]
    # the first application follows the profile's current job family
    assert np.mean(fam_first == m.user_family) > 0.8
    # the home city more often than if home and job city were independent
    job_city, home_city = m.job_city[m.inter_job], m.user_city[m.inter_user]
    home = np.mean(job_city == home_city)
    n = max(job_city.max(), home_city.max()) + 1
    base = np.sum(np.bincount(job_city, minlength=n) * np.bincount(home_city, minlength=n)) / len(job_city) ** 2
    assert home > 2 * base, (home, base)
    # re-views of a job seen 2+ steps back exist but are a minority
    rev = []
    for u in range(len(m.user_ids)):
        seq = m.inter_job[m.inter_user == u].tolist()
        rev.extend(seq[t] in seq[: t - 1] for t in range(2, len(seq)))
    assert 0.02 < np.mean(rev) < 0.2


def test_skills_cluster_by_family():
    """Coarse-to-fine structure for a SID tokenizer: same-family jobs share more skills than other jobs."""
    m = generate_market(SynthConfig(seed=5, **SMALL))
    sk = [set(s.split(", ")) for s in m.job_fields["skills"]]
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(sk), (2, 4000))
    jac = np.array([len(sk[i] & sk[j]) / len(sk[i] | sk[j]) for i, j in zip(a, b)])
    same_fam = m.job_family[a] == m.job_family[b]
    same_ind = (m.job_industry[a] == m.job_industry[b]) & ~same_fam
    other = m.job_industry[a] != m.job_industry[b]
    assert jac[same_fam].mean() > 2 * jac[same_ind].mean() > 0
    assert jac[same_ind].mean() > 2 * jac[other].mean()


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(num_jobs=10), "num_jobs"),
        (dict(mean_seq_len=50.0), "mean_seq_len"),
        (dict(explore_rate=1.5), "explore_rate"),
        (dict(repeat_window=1), "repeat_window"),
        (dict(start_date="yesterday"), "start_date"),
        (dict(min_seq_len=5, max_seq_len=4, mean_seq_len=4.5), "max_seq_len"),
    ],
)
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        SynthConfig(**kw)


def test_cli_writes_the_files(tmp_path, capsys):
    from genrec.cli import main

    out = tmp_path / "cli"
    rc = main(["synth", "--out", str(out), "--num-jobs", "200", "--num-users", "60", "--seed", "2", "--progress", "false"])
    assert rc == 0
    for name in FILES:
        assert (out / name).is_file()
    assert "applications" in capsys.readouterr().out
