"""A synthetic job market with a real, learnable (but not trivial) sequential signal: the offline default data.

`generate_market(cfg)` samples a catalog of job postings, applicant profiles and chronological
application sequences; `write_market(market, out)` writes them as RecBole atomic files
(`jobs-synth.{inter,item,user}`) plus `synth_config.json`. Everything is drawn from one numpy
`Generator` seeded by `cfg.seed`, so the same config gives byte-identical files. The generative model
(every sampling step and weight) is described in docs/synthetic_market.md.

Sampling is vectorised: the sequence loop runs over time steps, each step handling all active
applicants at once, so 100k jobs x 50k applicants take seconds, not minutes.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genrec.data import vocab_jobs as V

NAME = "jobs-synth"
FORMAT_VERSION = 1
KIND_NAMES = ("next", "explore", "repeat")  # how each application was generated (latent, not written)
NEXT, EXPLORE, REPEAT = 0, 1, 2


@dataclass
class SynthConfig:
    """Options of `genrec synth` (sizes, seed, and the weights of the application dynamics)."""

    out: str = field(default="outputs/synth", metadata={"help": "Output folder for jobs-synth.{inter,item,user}."})
    num_jobs: int = field(default=3000, metadata={"help": "Number of job postings (items)."})
    num_users: int = field(default=1500, metadata={"help": "Number of applicants (users)."})
    seed: int = field(default=0, metadata={"help": "Random seed; the same seed and options give byte-identical files."})
    min_seq_len: int = field(default=3, metadata={"help": "Fewest applications per applicant."})
    mean_seq_len: float = field(default=9.0, metadata={"help": "Target mean applications per applicant (before clipping at max)."})
    max_seq_len: int = field(default=30, metadata={"help": "Most applications per applicant."})
    stay_family_rate: float = field(
        default=0.8, metadata={"help": "Probability that a 'next' application stays in the applicant's current job family."}
    )
    cross_industry_share: float = field(
        default=0.35, metadata={"help": "Of the family switches, the share that leaves the industry (the rest go to a sibling family)."}
    )
    promote_rate: float = field(default=0.12, metadata={"help": "Per application, probability of aiming one seniority level higher."})
    demote_rate: float = field(default=0.03, metadata={"help": "Per application, probability of aiming one seniority level lower."})
    explore_rate: float = field(default=0.05, metadata={"help": "Probability that an application is a uniformly random job."})
    repeat_rate: float = field(default=0.08, metadata={"help": "Probability that an application re-views a recent job (2 to repeat_window steps back)."})
    repeat_window: int = field(default=4, metadata={"help": "How far back (in applications) a re-view may reach (>= 2)."})
    num_cities: int = field(
        default=0,
        metadata={"help": f"Number of cities (the largest ones, at most {len(V.CITIES)}); 0 = auto: num_jobs / 250, "
                  f"between 8 and {len(V.CITIES)}, so each city has postings in most job families."},
    )
    relocate_rate: float = field(default=0.03, metadata={"help": "Per application, probability that the applicant's preferred city changes."})
    local_search_rate: float = field(
        default=0.5,
        metadata={"help": "Probability that an application searches the preferred city only (when it has postings of the target family and level)."},
    )
    num_candidates: int = field(
        default=32, metadata={"help": "Postings drawn (by popularity) from the target family and seniority before scoring."}
    )
    popular_candidate_share: float = field(
        default=0.5, metadata={"help": "Share of the candidates drawn by popularity; the rest are drawn uniformly (the long tail)."}
    )
    skill_weight: float = field(default=3.0, metadata={"help": "Score weight of skill overlap (share of the job's skills the applicant has)."})
    location_weight: float = field(default=3.0, metadata={"help": "Score bonus of a job in the applicant's preferred city."})
    seen_penalty: float = field(default=10.0, metadata={"help": "Score penalty of a job already applied to (outside re-views)."})
    level_penalty: float = field(
        default=4.0,
        metadata={"help": "Score penalty per seniority level away from the target level (1.5x when below it); "
                  "applies to the family-wide fallback candidates."},
    )
    popularity_exponent: float = field(
        default=1.0, metadata={"help": "Zipf exponent of job popularity (weight = rank^-exponent); 0 = uniform."}
    )
    learn_skill_rate: float = field(default=0.3, metadata={"help": "After a 'next' application, probability of picking up one of its skills."})
    jobs_per_company: float = field(default=20.0, metadata={"help": "Average postings per company (sets the number of companies)."})
    start_date: str = field(default="2024-01-01", metadata={"help": "Earliest first application (UTC date, YYYY-MM-DD)."})
    span_days: int = field(default=365, metadata={"help": "First applications are spread uniformly over this many days."})
    mean_gap_hours: float = field(default=36.0, metadata={"help": "Mean time between two applications (exponential)."})
    progress: bool = field(default=True, metadata={"help": "Print progress to stderr."})

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"SynthConfig.{name} must be {want}, got {getattr(self, name)!r}")

        n_fam = sum(len(ind.families) for ind in V.INDUSTRIES)
        if not isinstance(self.num_jobs, int) or self.num_jobs < n_fam:
            raise bad("num_jobs", f"an integer >= {n_fam} (one posting per job family at least)")
        for name in ("num_users", "min_seq_len", "max_seq_len", "num_candidates", "span_days"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "an integer >= 0")
        if self.max_seq_len < self.min_seq_len:
            raise bad("max_seq_len", f">= min_seq_len ({self.min_seq_len})")
        if not self.min_seq_len <= self.mean_seq_len <= self.max_seq_len:
            raise bad("mean_seq_len", f"between min_seq_len ({self.min_seq_len}) and max_seq_len ({self.max_seq_len})")
        if not isinstance(self.num_cities, int) or not 0 <= self.num_cities <= len(V.CITIES):
            raise bad("num_cities", f"an integer in [0, {len(V.CITIES)}] (0 = auto)")
        if not isinstance(self.repeat_window, int) or self.repeat_window < 2:
            raise bad("repeat_window", "an integer >= 2")
        for name in ("stay_family_rate", "cross_industry_share", "promote_rate", "demote_rate", "explore_rate",
                     "repeat_rate", "relocate_rate", "local_search_rate", "popular_candidate_share", "learn_skill_rate"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise bad(name, "a probability in [0, 1]")
        if self.promote_rate + self.demote_rate > 1.0:
            raise ValueError(f"SynthConfig: promote_rate + demote_rate must be <= 1, got {self.promote_rate + self.demote_rate}")
        if self.explore_rate + self.repeat_rate > 1.0:
            raise ValueError(f"SynthConfig: explore_rate + repeat_rate must be <= 1, got {self.explore_rate + self.repeat_rate}")
        for name in ("skill_weight", "location_weight", "seen_penalty", "level_penalty", "popularity_exponent"):
            if float(getattr(self, name)) < 0:
                raise bad(name, ">= 0")
        for name in ("jobs_per_company", "mean_gap_hours"):
            if not float(getattr(self, name)) > 0:
                raise bad(name, "> 0")
        try:
            _dt.date.fromisoformat(str(self.start_date))
        except ValueError:
            raise bad("start_date", "a date like 2024-01-01") from None

    def cities(self) -> int:
        """The number of cities used (resolves num_cities=0)."""
        if self.num_cities:
            return self.num_cities
        return int(min(len(V.CITIES), max(8, self.num_jobs // 250)))

    def generation_dict(self) -> dict:
        """The options that change the generated data (not `out` or `progress`)."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "progress")}


# ----------------------------------------------------------------------------------------------
# The static hierarchy, flattened into arrays once.


@dataclass
class Hierarchy:
    """Flattened industries -> families -> roles, the skill vocabulary and city weights."""

    industry_names: list[str]
    family_names: list[str]
    family_industry: np.ndarray  # [F]
    role_names: list[str]
    role_family: np.ndarray  # [R]
    role_duty: list[str]
    role_share: np.ndarray  # [R] share of postings (and applicants)
    skill_names: list[str]
    role_core: np.ndarray  # [R, 4] skill ids
    family_pool: np.ndarray  # [F, P] skill ids, -1 padded
    family_pool_len: np.ndarray  # [F]
    industry_pool: np.ndarray  # [I, Q]
    industry_pool_len: np.ndarray  # [I]
    cross: np.ndarray  # [X] skill ids
    leadership: np.ndarray  # skill ids
    city_names: list[str]
    industry_city_p: np.ndarray  # [I, C] where an industry's jobs and applicants are
    family_skill_sets: list[set[int]] = field(repr=False, default_factory=list)

    @property
    def num_families(self) -> int:
        return len(self.family_names)


def build_hierarchy(num_cities: int = 0) -> Hierarchy:
    """Flatten the vocabulary, keeping the `num_cities` largest cities (0 = all) so that a small market
    is not spread over more cities than it has postings per job family."""
    skills: dict[str, int] = {}

    def sid(name: str) -> int:
        if "\t" in name or "\n" in name or not name.strip():
            raise ValueError(f"vocab_jobs: bad skill name {name!r}")
        return skills.setdefault(name, len(skills))

    ind_names, fam_names, fam_ind, role_names, role_fam, role_duty, role_share = [], [], [], [], [], [], []
    role_core: list[list[int]] = []
    fam_pools: list[list[int]] = []
    ind_pools: list[list[int]] = []
    total_share = sum(ind.share for ind in V.INDUSTRIES)
    for i, ind in enumerate(V.INDUSTRIES):
        ind_names.append(ind.name)
        ind_pools.append([sid(s) for s in ind.skills])
        for fam in ind.families:
            f = len(fam_names)
            fam_names.append(fam.name)
            fam_ind.append(i)
            fam_pools.append([sid(s) for s in fam.skills])
            for role in fam.roles:
                if len(role.skills) != 4:
                    raise ValueError(f"vocab_jobs: role {role.name!r} needs exactly 4 core skills")
                role_names.append(role.name)
                role_fam.append(f)
                role_duty.append(role.duty)
                role_share.append(ind.share / total_share / len(ind.families) / len(fam.roles))
                role_core.append([sid(s) for s in role.skills])
    cross = [sid(s) for s in V.CROSS_SKILLS]
    lead = [sid(s) for s in V.LEADERSHIP_SKILLS]

    def pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(map(len, rows))
        out = np.full((len(rows), width), -1, dtype=np.int64)
        for k, r in enumerate(rows):
            out[k, : len(r)] = r
        return out, np.array([len(r) for r in rows], dtype=np.int64)

    fam_pool, fam_len = pad(fam_pools)
    ind_pool, ind_len = pad(ind_pools)
    all_cities = [c for c, _ in V.CITIES]
    by_size = sorted(range(len(V.CITIES)), key=lambda k: (-V.CITIES[k][1], k))
    kept = sorted(by_size[: num_cities or len(V.CITIES)])
    city_names = [all_cities[k] for k in kept]
    city_w = np.array([V.CITIES[k][1] for k in kept], dtype=np.float64)
    ind_city = np.tile(city_w, (len(V.INDUSTRIES), 1))
    for i, ind in enumerate(V.INDUSTRIES):
        for city, boost in ind.city_boost:
            if city not in all_cities:
                raise ValueError(f"vocab_jobs: industry {ind.name!r} boosts unknown city {city!r}")
            if city in city_names:
                ind_city[i, city_names.index(city)] *= boost
    ind_city /= ind_city.sum(1, keepdims=True)
    role_fam_arr = np.array(role_fam, dtype=np.int64)
    core = np.array(role_core, dtype=np.int64)
    fam_sets = []
    for f in range(len(fam_names)):
        s = set(fam_pools[f]) | set(ind_pools[fam_ind[f]])
        for r in np.nonzero(role_fam_arr == f)[0]:
            s |= set(core[r].tolist())
        fam_sets.append(s)
    return Hierarchy(
        ind_names, fam_names, np.array(fam_ind, dtype=np.int64), role_names, role_fam_arr, role_duty,
        np.array(role_share), list(skills), core, fam_pool, fam_len, ind_pool, ind_len,
        np.array(cross, dtype=np.int64), np.array(lead, dtype=np.int64), city_names, ind_city, fam_sets,
    )


def family_transitions(h: Hierarchy, cross_industry_share: float) -> np.ndarray:
    """[F, F] probabilities of the family an applicant switches to (diagonal 0, rows sum to 1).

    A switch goes to a sibling family (same industry) with probability 1 - cross_industry_share and
    to another industry's family otherwise; within each group the target is proportional to the
    Jaccard similarity of the two families' skill sets plus a small floor, so switches follow skills
    (a data analyst in retail moves to data roles in tech more than to nursing).
    """
    F = h.num_families
    sim = np.zeros((F, F))
    for a in range(F):
        for b in range(F):
            sa, sb = h.family_skill_sets[a], h.family_skill_sets[b]
            sim[a, b] = len(sa & sb) / len(sa | sb)
    same = h.family_industry[:, None] == h.family_industry[None, :]
    np.fill_diagonal(same, False)
    other = h.family_industry[:, None] != h.family_industry[None, :]
    w_in = np.where(same, sim + 0.1, 0.0)
    w_out = np.where(other, sim + 0.01, 0.0)
    w_in /= w_in.sum(1, keepdims=True)
    w_out /= w_out.sum(1, keepdims=True)
    return (1 - cross_industry_share) * w_in + cross_industry_share * w_out


# ----------------------------------------------------------------------------------------------
# Vectorised sampling helpers.


def _grouped_sampler(groups: np.ndarray, weights: np.ndarray, num_groups: int):
    """Return `draw(group_ids, u) -> item indices`: weighted sampling within each group, by inverse CDF.

    Items are sorted by group; one global cumulative sum serves every group, so a batch of draws
    from different groups is one `searchsorted`. Empty groups must not be drawn from.
    """
    order = np.argsort(groups, kind="stable")
    cum = np.cumsum(weights[order].astype(np.float64))
    start = np.searchsorted(groups[order], np.arange(num_groups), side="left")
    end = np.searchsorted(groups[order], np.arange(num_groups), side="right")
    base = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    total = np.where(end > start, cum[np.maximum(end - 1, 0)] - base, 0.0)

    uniform = bool(np.all(weights == weights.flat[0]))

    def draw(group_ids: np.ndarray, u: np.ndarray) -> np.ndarray:
        g = group_ids.reshape(group_ids.shape + (1,) * (u.ndim - group_ids.ndim))
        if uniform:  # equal weights: no search needed
            pos = start[g] + (u * (end[g] - start[g])).astype(np.int64)
        else:
            pos = np.searchsorted(cum, base[g] + u * total[g], side="right")
        pos = np.clip(pos, start[g], end[g] - 1)
        return order[pos]

    draw.sizes = end - start  # type: ignore[attr-defined]
    return draw


def _inverse_cdf(cdf_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: cdf_rows [n, K] (last column 1), u [n] -> index in [0, K)."""
    return np.minimum((u[:, None] > cdf_rows).sum(1), cdf_rows.shape[1] - 1)


def _dedupe_rows(m: np.ndarray) -> np.ndarray:
    """Replace repeated values within each row by -1 (first occurrence kept), then compact left."""
    m = m.copy()
    for j in range(1, m.shape[1]):
        dup = (m[:, :j] == m[:, j : j + 1]).any(1)
        m[dup, j] = -1
    keep = m >= 0
    # stable compaction: valid entries first, original order kept
    order = np.argsort(~keep, axis=1, kind="stable")
    return np.take_along_axis(m, order, axis=1)


def _title(role: str, family: str, level: int) -> str:
    name = V.SENIORITY[level]
    if name == "intern":
        return f"{role} Intern"
    if name == "junior":
        return f"Junior {role}"
    if name == "mid":
        return role
    if name == "senior":
        return f"Senior {role}"
    if name == "lead":
        return f"Lead {role}"
    return f"Director of {family}"


def _article(word: str) -> str:
    return ("an " if word[:1].upper() in "AEIOU" else "a ") + word


def _log(cfg: SynthConfig, msg: str) -> None:
    if cfg.progress:
        print(f"[synth] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# The market.


@dataclass
class Market:
    """A generated market: text columns as written, plus the latent structure (for tests and analysis).

    Job arrays are indexed by job row (0..num_jobs-1, the order of `job_ids`), user arrays by user
    row; interactions are sorted by user, then time. `inter_kind` says how each application was
    generated (see KIND_NAMES); it is not written to the RecBole files.
    """

    config: SynthConfig
    hierarchy: Hierarchy = field(repr=False)
    job_ids: list[str]
    job_fields: dict[str, list[str]] = field(repr=False)
    job_industry: np.ndarray = field(repr=False)
    job_family: np.ndarray = field(repr=False)
    job_role: np.ndarray = field(repr=False)
    job_seniority: np.ndarray = field(repr=False)
    job_city: np.ndarray = field(repr=False)
    job_company: np.ndarray = field(repr=False)
    job_popularity: np.ndarray = field(repr=False)
    user_ids: list[str] = field(repr=False)
    user_fields: dict[str, list[str]] = field(repr=False)
    user_family: np.ndarray = field(repr=False)  # starting family
    user_seniority: np.ndarray = field(repr=False)  # starting level
    user_city: np.ndarray = field(repr=False)  # home city
    inter_user: np.ndarray = field(repr=False)
    inter_job: np.ndarray = field(repr=False)
    inter_time: np.ndarray = field(repr=False)  # int64 unix seconds
    inter_kind: np.ndarray = field(repr=False)

    def summary(self) -> dict[str, float | int]:
        """Counts and the measured signal per SID-relevant level (what a model could learn)."""
        return market_stats(self)


def _job_catalog(cfg: SynthConfig, h: Hierarchy, rng: np.random.Generator) -> dict:
    J = cfg.num_jobs
    F = h.num_families
    R = len(h.role_names)
    I = len(h.industry_names)
    # Roles: every family gets at least one posting, the rest by role share; then shuffle so the
    # job id says nothing about the job.
    first = np.array([rng.choice(np.nonzero(h.role_family == f)[0]) for f in range(F)], dtype=np.int64)
    rest = rng.choice(R, size=J - F, p=h.role_share / h.role_share.sum())
    role = rng.permutation(np.concatenate([first, rest]))
    family = h.role_family[role]
    industry = h.family_industry[family]
    seniority = rng.choice(len(V.SENIORITY), size=J, p=np.array(V.JOB_SENIORITY_SHARE) / sum(V.JOB_SENIORITY_SHARE))

    # Companies: per industry, a Zipf-sized set with a home city; names unique within an industry.
    ind_share = np.array([ind.share for ind in V.INDUSTRIES])
    n_comp = np.maximum(3, np.round(J * ind_share / ind_share.sum() / cfg.jobs_per_company)).astype(np.int64)
    comp_ind = np.repeat(np.arange(I), n_comp)
    comp_rank = np.concatenate([np.arange(n) for n in n_comp])
    comp_weight = 1.0 / (comp_rank + 1.0)
    comp_city = np.empty(len(comp_ind), dtype=np.int64)
    comp_names: list[str] = []
    n_stems = len(V.COMPANY_HEADS) * len(V.COMPANY_TAILS)
    for i, ind in enumerate(V.INDUSTRIES):
        sel = np.nonzero(comp_ind == i)[0]
        comp_city[sel] = _inverse_cdf(np.cumsum(h.industry_city_p[i])[None, :].repeat(len(sel), 0), rng.random(len(sel)))
        n_names = n_stems * len(ind.company_suffixes)
        codes = rng.choice(n_names, size=len(sel), replace=len(sel) > n_names)
        for c in codes:
            stem, suf = divmod(int(c), len(ind.company_suffixes))
            head, tail = divmod(stem, len(V.COMPANY_TAILS))
            comp_names.append(f"{V.COMPANY_HEADS[head]}{V.COMPANY_TAILS[tail]} {ind.company_suffixes[suf]}")
    company = _grouped_sampler(comp_ind, comp_weight, I)(industry, rng.random(J))

    # City: the company's home city, or another city where the industry hires.
    ind_city_cdf = np.cumsum(h.industry_city_p, axis=1)
    other_city = _inverse_cdf(ind_city_cdf[industry], rng.random(J))
    city = np.where(rng.random(J) < 0.6, comp_city[company], other_city)

    # Skills: 2-3 of the role's 4 core skills, 1-2 from the family pool, maybe one industry skill,
    # maybe one or two cross-industry skills, and a leadership skill for lead/director postings.
    core_order = np.argsort(rng.random((J, 4)), axis=1)
    core = np.take_along_axis(h.role_core[role], core_order, axis=1)
    core[:, 2] = np.where(rng.random(J) < 0.5, core[:, 2], -1)
    core = core[:, :3]
    fl = h.family_pool_len[family]
    fam1 = h.family_pool[family, (rng.random(J) * fl).astype(np.int64)]
    fam2 = np.where(rng.random(J) < 0.5, h.family_pool[family, (rng.random(J) * fl).astype(np.int64)], -1)
    il = h.industry_pool_len[industry]
    ind1 = np.where(rng.random(J) < 0.5, h.industry_pool[industry, (rng.random(J) * il).astype(np.int64)], -1)
    X = len(h.cross)
    cr1 = np.where(rng.random(J) < 0.5, h.cross[rng.integers(0, X, J)], -1)
    cr2 = np.where(rng.random(J) < 0.2, h.cross[rng.integers(0, X, J)], -1)
    ld = np.where((seniority >= 4) & (rng.random(J) < 0.7), h.leadership[rng.integers(0, len(h.leadership), J)], -1)
    skills = _dedupe_rows(np.column_stack([core, fam1, fam2, ind1, cr1, cr2, ld]))
    n_skills = (skills >= 0).sum(1)

    # Popularity: Zipf over a random ranking of all postings.
    rank = rng.permutation(J)
    popularity = (rank + 1.0) ** (-cfg.popularity_exponent)

    # Text.
    tmpl = rng.integers(0, len(V.DESCRIPTION_TEMPLATES), J)
    phrase_pick = rng.integers(0, 3, J)
    s_pick = np.argsort(rng.random((J, skills.shape[1])) + (skills < 0) * 2.0, axis=1)[:, :2]
    titles, skill_txt, descs = [], [], []
    for j in range(J):
        r, f, lvl = int(role[j]), int(family[j]), int(seniority[j])
        title = _title(h.role_names[r], h.family_names[f], lvl)
        sk = [h.skill_names[s] for s in skills[j, : n_skills[j]]]
        a, b = skills[j, s_pick[j, 0]], skills[j, s_pick[j, 1]]
        s1 = h.skill_names[a] if a >= 0 else sk[0]
        s2 = h.skill_names[b] if b >= 0 else sk[-1]
        descs.append(
            V.DESCRIPTION_TEMPLATES[tmpl[j]].format(
                company=comp_names[company[j]], a_title=_article(title), title=title, city=h.city_names[city[j]],
                duty=h.role_duty[r], s1=s1, s2=s2, family=h.family_names[f], industry=h.industry_names[industry[j]],
                role=h.role_names[r], level_phrase=V.SENIORITY_PHRASE[V.SENIORITY[lvl]][phrase_pick[j]],
            )
        )
        titles.append(title)
        skill_txt.append(", ".join(sk))
    width = max(5, len(str(J - 1)))
    return {
        "ids": [f"J{j:0{width}d}" for j in range(J)],
        "fields": {
            "title": titles,
            "company": [comp_names[c] for c in company],
            "industry": [h.industry_names[i] for i in industry],
            "seniority": [V.SENIORITY[s] for s in seniority],
            "skills": skill_txt,
            "location": [h.city_names[c] for c in city],
            "description": descs,
        },
        "industry": industry, "family": family, "role": role, "seniority": seniority, "city": city,
        "company": company, "popularity": popularity, "skills": skills, "n_skills": n_skills,
        "comp_ind": comp_ind, "comp_weight": comp_weight, "comp_names": comp_names,
    }


def _applicants(cfg: SynthConfig, h: Hierarchy, jobs: dict, trans: np.ndarray, rng: np.random.Generator) -> dict:
    U = cfg.num_users
    S = len(h.skill_names)
    role = rng.choice(len(h.role_names), size=U, p=h.role_share / h.role_share.sum())
    family = h.role_family[role]
    industry = h.family_industry[family]
    level = rng.choice(len(V.SENIORITY), size=U, p=np.array(V.USER_SENIORITY_SHARE) / sum(V.USER_SENIORITY_SHARE))
    home = _inverse_cdf(np.cumsum(h.industry_city_p, axis=1)[industry], rng.random(U))

    # Skills: a boolean matrix [U, S + 1] (column S = "no skill", so padded ids gather False).
    has = np.zeros((U, S + 1), dtype=bool)
    core = np.take_along_axis(h.role_core[role], np.argsort(rng.random((U, 4)), axis=1), axis=1)
    n_core = 2 + (rng.random(U) < 0.5)
    rows = np.arange(U)
    for k in range(3):
        sel = k < n_core
        has[rows[sel], core[sel, k]] = True
    fl = h.family_pool_len[family]
    for p in (1.0, 0.5):
        pick = h.family_pool[family, (rng.random(U) * fl).astype(np.int64)]
        sel = rng.random(U) < p
        has[rows[sel], pick[sel]] = True
    pick = h.industry_pool[industry, (rng.random(U) * h.industry_pool_len[industry]).astype(np.int64)]
    sel = rng.random(U) < 0.5
    has[rows[sel], pick[sel]] = True
    pick = h.cross[rng.integers(0, len(h.cross), U)]
    sel = rng.random(U) < 0.7
    has[rows[sel], pick[sel]] = True
    pick = h.leadership[rng.integers(0, len(h.leadership), U)]
    sel = (level >= 4) & (rng.random(U) < 0.8)
    has[rows[sel], pick[sel]] = True
    has[:, S] = False
    profile_skills = has[:, :S].copy()

    # Past roles (most recent first): slot 0 is the current role at the current level; earlier
    # slots are one level lower each, mostly in the same family, else a family the dynamics would
    # switch to. Interns list a study programme instead of a current job.
    K = 4
    n_past = 1 + rng.binomial(np.minimum(level, K - 1), 0.6)
    n_past = np.where(level == 0, 1 + (rng.random(U) < 0.5), n_past)
    past_fam = np.empty((U, K), dtype=np.int64)
    past_fam[:, 0] = family
    switch_cdf = np.cumsum(trans, axis=1)
    side_fams = np.array([f for f in range(h.num_families)
                          if h.industry_names[h.family_industry[f]] in ("Retail", "Hospitality & Food Service")])
    for k in range(1, K):
        moved = rng.random(U) < 0.3
        nxt = _inverse_cdf(switch_cdf[past_fam[:, k - 1]], rng.random(U))
        past_fam[:, k] = np.where(moved, nxt, past_fam[:, k - 1])
    side = side_fams[rng.integers(0, len(side_fams), U)]
    past_fam[:, 1] = np.where(level == 0, side, past_fam[:, 1])
    # a role within each past family (the current one keeps the applicant's role)
    fam_roles = np.stack([np.nonzero(h.role_family == f)[0] for f in range(h.num_families)])
    past_role = fam_roles[past_fam, rng.integers(0, fam_roles.shape[1], (U, K))]
    past_role[:, 0] = role
    past_level = np.maximum(level[:, None] - np.arange(K)[None, :], 0)
    past_level[:, 1] = np.where(level == 0, 1, past_level[:, 1])  # a part-time junior job before studies
    past_ind = h.family_industry[past_fam]
    past_comp = _grouped_sampler(jobs["comp_ind"], jobs["comp_weight"], len(h.industry_names))(past_ind, rng.random((U, K)))
    dur = rng.integers(1, 5, (U, K))
    current = rng.random(U) < 0.75
    end_year = np.int64(_dt.date.fromisoformat(cfg.start_date).year)
    gap = np.where(current, 0, 1)

    past_txt, skill_txt = [], []
    for u in range(U):
        parts = []
        end = int(end_year - gap[u])
        for k in range(int(n_past[u])):
            start = end - int(dur[u, k])
            when = f"{start}-{'now' if k == 0 and current[u] else end}"
            if k == 0 and level[u] == 0:
                school = V.SCHOOL_PREFIXES[int(dur[u, 1]) % len(V.SCHOOL_PREFIXES)]
                parts.append(f"{h.family_names[family[u]]} student at {school} {h.city_names[home[u]]} ({when})")
            else:
                r, f = int(past_role[u, k]), int(past_fam[u, k])
                title = _title(h.role_names[r], h.family_names[f], int(past_level[u, k]))
                parts.append(f"{title} at {jobs['comp_names'][past_comp[u, k]]} ({when})")
            end = start
        past_txt.append("; ".join(parts))
        skill_txt.append(", ".join(h.skill_names[s] for s in np.flatnonzero(profile_skills[u])))
    width = max(5, len(str(U - 1)))
    return {
        "ids": [f"U{u:0{width}d}" for u in range(U)],
        "fields": {
            "past_roles": past_txt,
            "skills": skill_txt,
            "location": [h.city_names[c] for c in home],
            "seniority": [V.SENIORITY[s] for s in level],
        },
        "family": family, "seniority": level, "home": home, "has": has,
    }


def _sequences(cfg: SynthConfig, h: Hierarchy, jobs: dict, users: dict, trans: np.ndarray,
               rng: np.random.Generator) -> dict:
    """Chronological applications: one vectorised step per position, all active applicants at once."""
    U, J = cfg.num_users, cfg.num_jobs
    NS = len(V.SENIORITY)
    F = h.num_families
    m = cfg.mean_seq_len - cfg.min_seq_len
    extra = rng.negative_binomial(2, 2.0 / (2.0 + m), U) if m > 0 else np.zeros(U, dtype=np.int64)
    length = np.minimum(cfg.min_seq_len + extra, cfg.max_seq_len)
    T = int(length.max())

    # Buckets (family, seniority) with the popularity-weighted sampler; an empty bucket redirects to
    # the nearest non-empty seniority of the same family (higher first on ties).
    C = len(h.city_names)
    bucket = jobs["family"] * NS + jobs["seniority"]
    ones = np.ones(J)
    draw = _grouped_sampler(bucket, jobs["popularity"], F * NS)
    draw_u = _grouped_sampler(bucket, ones, F * NS)
    draw_local = _grouped_sampler(bucket * C + jobs["city"], jobs["popularity"], F * NS * C)
    draw_local_u = _grouped_sampler(bucket * C + jobs["city"], ones, F * NS * C)
    draw_family = _grouped_sampler(jobs["family"], ones, F)
    sizes = draw.sizes.reshape(F, NS)
    redirect = np.empty((F, NS), dtype=np.int64)
    for f in range(F):
        ok = np.nonzero(sizes[f] > 0)[0]
        for s in range(NS):
            d = np.abs(ok - s) * 2 - (ok > s)
            redirect[f, s] = f * NS + ok[np.argmin(d)]
    redirect = redirect.ravel()

    S = len(h.skill_names)
    job_sk = np.where(jobs["skills"] >= 0, jobs["skills"], S)
    job_nsk = jobs["n_skills"].astype(np.float64)
    job_fam, job_sen, job_city = jobs["family"], jobs["seniority"], jobs["city"]
    has = users["has"]
    fam = users["family"].copy()
    sen = users["seniority"].copy()
    city = users["home"].copy()
    trans_cdf = np.cumsum(trans, axis=1)
    ind_city_cdf = np.cumsum(h.industry_city_p, axis=1)
    hist = np.full((U, T), -1, dtype=np.int64)
    kind = np.full((U, T), -1, dtype=np.int8)
    M = cfg.num_candidates
    M_pop = int(round(M * cfg.popular_candidate_share))
    M_fam = max(1, M // 4)

    for t in range(T):
        act = np.nonzero(length > t)[0]
        n = len(act)
        u = rng.random((n, 8))
        k = np.full(n, NEXT, dtype=np.int8)
        if t >= 2:
            k[u[:, 0] < cfg.repeat_rate] = REPEAT
        k[(u[:, 0] >= cfg.repeat_rate) & (u[:, 0] < cfg.repeat_rate + cfg.explore_rate)] = EXPLORE
        choice = np.empty(n, dtype=np.int64)

        nx = np.nonzero(k == NEXT)[0]
        un = act[nx]
        if t > 0:  # the first application follows the profile; later ones may move
            switch = u[nx, 1] >= cfg.stay_family_rate
            fam[un[switch]] = _inverse_cdf(trans_cdf[fam[un[switch]]], u[nx[switch], 2])
            step = (u[nx, 3] < cfg.promote_rate).astype(np.int64) - (
                (u[nx, 3] >= cfg.promote_rate) & (u[nx, 3] < cfg.promote_rate + cfg.demote_rate)
            )
            sen[un] = np.clip(sen[un] + step, 0, NS - 1)
            moving = u[nx, 4] < cfg.relocate_rate
            city[un[moving]] = _inverse_cdf(ind_city_cdf[h.family_industry[fam[un[moving]]]], u[nx[moving], 5])
        b = redirect[fam[un] * NS + sen[un]]
        # candidates [n, M]: the first M_pop by popularity, the rest uniformly, within the bucket
        cand = np.concatenate([draw(b, rng.random((len(un), M_pop))), draw_u(b, rng.random((len(un), M - M_pop)))], 1)
        bl = (fam[un] * NS + sen[un]) * C + city[un]
        local = np.nonzero((u[nx, 7] < cfg.local_search_rate) & (draw_local.sizes[bl] > 0))[0]
        # a local search swaps half of each part for postings in the preferred city (the other half
        # keeps alternatives when the few local postings were already seen)
        a, c = M_pop // 2, (M - M_pop) // 2
        cand[local, :a] = draw_local(bl[local], rng.random((len(local), a)))
        cand[local, M_pop : M_pop + c] = draw_local_u(bl[local], rng.random((len(local), c)))
        # fallback candidates from the whole family (any level), penalised by their level distance:
        # they win only when every posting at the target level was already seen (small markets)
        cand = np.concatenate([cand, draw_family(fam[un], rng.random((len(un), M_fam)))], 1)
        gap = job_sen[cand] - sen[un, None]
        overlap = has[un[:, None, None], job_sk[cand]].sum(2) / job_nsk[cand]
        score = cfg.skill_weight * overlap + cfg.location_weight * (job_city[cand] == city[un, None])
        score -= cfg.level_penalty * (np.abs(gap) + 0.5 * (gap < 0))
        if t > 0:
            seen = (cand[:, :, None] == hist[un, None, :t]).any(2)
            score -= cfg.seen_penalty * seen
        score += rng.gumbel(size=score.shape)
        pick = cand[np.arange(len(un)), score.argmax(1)]
        choice[nx] = pick
        fam[un] = job_fam[pick]
        sen[un] = job_sen[pick]
        learn = u[nx, 6] < cfg.learn_skill_rate
        new_skill = job_sk[pick, (rng.random(len(un)) * job_nsk[pick]).astype(np.int64)]
        has[un[learn], new_skill[learn]] = True
        has[:, S] = False

        ex = np.nonzero(k == EXPLORE)[0]
        choice[ex] = rng.integers(0, J, len(ex))

        rp = np.nonzero(k == REPEAT)[0]
        back = 2 + (rng.random(len(rp)) * (min(cfg.repeat_window, t) - 1)).astype(np.int64)
        choice[rp] = hist[act[rp], t - back]

        hist[act, t] = choice
        kind[act, t] = k
        if cfg.progress and (t % 5 == 4 or t == T - 1):
            _log(cfg, f"applications: step {t + 1}/{T}, {n} applicants active")

    # Time: first application uniform over the span; gaps exponential (re-views come sooner).
    t0 = int(_dt.datetime.fromisoformat(cfg.start_date).replace(tzinfo=_dt.timezone.utc).timestamp())
    start = t0 + rng.integers(0, cfg.span_days * 86400, U)
    mean_gap = np.where(kind == REPEAT, 2 * 3600.0, cfg.mean_gap_hours * 3600.0)
    gaps = 60 + np.floor(rng.exponential(1.0, (U, T)) * mean_gap).astype(np.int64)
    gaps[:, 0] = 0
    times = start[:, None] + np.cumsum(gaps, axis=1)
    valid = np.arange(T)[None, :] < length[:, None]
    return {
        "user": np.repeat(np.arange(U), length),
        "job": hist[valid],
        "time": times[valid],
        "kind": kind[valid],
    }


def generate_market(cfg: SynthConfig) -> Market:
    """Sample a whole market from `cfg` (deterministic in `cfg.seed` and the other options)."""
    h = build_hierarchy(cfg.cities())
    trans = family_transitions(h, cfg.cross_industry_share)
    # Independent streams: the catalog does not change when only the number of users changes.
    seq_jobs, seq_users, seq_apps = np.random.SeedSequence(cfg.seed).spawn(3)
    _log(cfg, f"sampling {cfg.num_jobs} jobs")
    jobs = _job_catalog(cfg, h, np.random.default_rng(seq_jobs))
    _log(cfg, f"sampling {cfg.num_users} applicants")
    users = _applicants(cfg, h, jobs, trans, np.random.default_rng(seq_users))
    _log(cfg, "sampling application sequences")
    apps = _sequences(cfg, h, jobs, users, trans, np.random.default_rng(seq_apps))
    return Market(
        config=cfg, hierarchy=h, job_ids=jobs["ids"], job_fields=jobs["fields"],
        job_industry=jobs["industry"], job_family=jobs["family"], job_role=jobs["role"],
        job_seniority=jobs["seniority"], job_city=jobs["city"], job_company=jobs["company"],
        job_popularity=jobs["popularity"], user_ids=users["ids"], user_fields=users["fields"],
        user_family=users["family"], user_seniority=users["seniority"], user_city=users["home"],
        inter_user=apps["user"], inter_job=apps["job"], inter_time=apps["time"], inter_kind=apps["kind"],
    )


# ----------------------------------------------------------------------------------------------
# Measured properties (used in synth_config.json, the docs and the tests).


def market_stats(market: Market) -> dict[str, float | int]:
    """Counts and next-step agreement rates versus their base rates, per level of the hierarchy."""
    u, j = market.inter_user, market.inter_job
    same_user = u[1:] == u[:-1]
    prev, nxt = j[:-1][same_user], j[1:][same_user]
    lengths = np.bincount(u, minlength=len(market.user_ids))
    out: dict[str, float | int] = {
        "jobs": len(market.job_ids),
        "users": len(market.user_ids),
        "interactions": int(len(j)),
        "seq_len_min": int(lengths.min()),
        "seq_len_mean": round(float(lengths.mean()), 3),
        "seq_len_max": int(lengths.max()),
        "jobs_never_applied": int(len(market.job_ids) - len(np.unique(j))),
    }
    for name, code in zip(KIND_NAMES, (NEXT, EXPLORE, REPEAT)):
        out[f"share_{name}"] = round(float((market.inter_kind == code).mean()), 4)
    for level, arr in (("industry", market.job_industry), ("family", market.job_family), ("role", market.job_role),
                       ("city", market.job_city), ("job", np.arange(len(market.job_ids)))):
        p = np.bincount(arr[j]) / len(j)
        out[f"next_same_{level}"] = round(float((arr[prev] == arr[nxt]).mean()), 4)
        out[f"base_same_{level}"] = round(float((p**2).sum()), 4)
    s = market.job_seniority
    out["next_seniority_up"] = round(float((s[nxt] > s[prev]).mean()), 4)
    out["next_seniority_same"] = round(float((s[nxt] == s[prev]).mean()), 4)
    out["next_seniority_down"] = round(float((s[nxt] < s[prev]).mean()), 4)
    return out


# ----------------------------------------------------------------------------------------------
# Writing.


def write_market(market: Market, out_dir: str | Path) -> dict[str, Path]:
    """Write `<out>/jobs-synth.{inter,item,user}` and `synth_config.json` (each atomically)."""
    from genrec.data.recbole import write_atomic
    from sid_tokenizer.sidmap import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{NAME}.{ext}" for ext in ("item", "user", "inter")}
    jf = market.job_fields
    item_cols = list(jf)
    write_atomic(
        paths["item"],
        ["item_id:token"] + [f"{c}:token_seq" for c in item_cols],
        zip(market.job_ids, *(jf[c] for c in item_cols)),
    )
    uf = market.user_fields
    user_cols = list(uf)
    write_atomic(
        paths["user"],
        ["user_id:token"] + [f"{c}:token_seq" for c in user_cols],
        zip(market.user_ids, *(uf[c] for c in user_cols)),
    )
    uid = np.array(market.user_ids, dtype=object)[market.inter_user]
    jid = np.array(market.job_ids, dtype=object)[market.inter_job]
    write_atomic(
        paths["inter"],
        ["user_id:token", "item_id:token", "timestamp:float"],
        zip(uid.tolist(), jid.tolist(), market.inter_time.tolist()),
    )
    meta = {
        "generator": "genrec synth",
        "format_version": FORMAT_VERSION,
        "name": NAME,
        "config": market.config.generation_dict(),
        "stats": market_stats(market),
        "seniority_levels": list(V.SENIORITY),
        "industries": {ind.name: [f.name for f in ind.families] for ind in V.INDUSTRIES},
    }
    paths["config"] = out / "synth_config.json"
    atomic_write_text(paths["config"], json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return paths
