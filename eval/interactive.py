"""Helpers of `genrec recommend`: turn a typed history into catalog items, and explain recommendations.

History entries are catalog item ids or free text. Free text is matched to the catalog item whose text
is most similar (TF-IDF cosine over word 1-2-grams and character 3-5-grams, so typos still match), and
the match is always shown, never silently assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from eval.beam import Beam
from genrec.data.schema import Catalog
from genrec.wording import noun_forms
from sid_tokenizer.sidmap import SIDMap, sid_token

MIN_MATCH_SCORE = 0.1


@dataclass(frozen=True)
class HistoryMatch:
    query: str
    item_id: str
    score: float  # 1.0 for an exact id
    exact: bool


def _id_like(part: str) -> bool:
    return bool(part) and not any(c.isspace() for c in part) and any(c.isdigit() for c in part)


def split_history(text: str, catalog: Catalog) -> list[str]:
    """Entries separated by ';' or newlines; a single line of comma/space-separated known ids is a list of ids.

    ValueError (one line) when there is no entry at all, or when a list of id-like tokens (no spaces, a digit)
    holds ids that are not in the catalog: they are named, never matched to some job as free text.
    """
    entries = [p.strip() for p in text.replace("\n", ";").split(";")] if (";" in text or "\n" in text) else [text.strip()]
    entries = [e for e in entries if e.strip(" ,")]
    if not entries:
        raise ValueError(f"history {text!r} has no entries: give item ids (comma- or space-separated) or free-text "
                         "entries separated by ';'")
    if len(entries) > 1:
        return entries
    text = entries[0]
    for sep in (",", None):
        parts = [p.strip() for p in text.split(sep) if p.strip()]
        if len(parts) > 1 and all(p in catalog for p in parts):
            return parts
        if len(parts) > 1 and all(_id_like(p) for p in parts):
            unknown = [p for p in parts if p not in catalog]
            raise ValueError(
                f"history: {len(unknown)} of {len(parts)} ids are not items of the catalog: "
                f"{', '.join(repr(u) for u in unknown[:5])}{' ...' if len(unknown) > 5 else ''} (its ids look like "
                f"{catalog.item_ids[0]!r}; free-text entries are separated by ';')"
            )
    return [text]


class CatalogMatcher:
    """Free text -> best catalog item by TF-IDF cosine (built once per catalog)."""

    def __init__(self, catalog: Catalog, template: str | None = None) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        self.catalog = catalog
        texts = catalog.texts(template)
        self.vectorizer = FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, lowercase=True)),
        ])
        self.matrix = self.vectorizer.fit_transform(texts)

    def match(self, query: str) -> tuple[str, float]:
        q = self.vectorizer.transform([query])
        sims = (self.matrix @ q.T).toarray().ravel() / 2.0  # two L2-normalised blocks -> cosine in [0, 1]
        best = int(sims.argmax())
        return self.catalog.item_ids[best], float(sims[best])


def resolve_history(entries: list[str], catalog: Catalog, sid_map: SIDMap,
                    matcher: CatalogMatcher | None = None) -> list[HistoryMatch]:
    """Each entry as a catalog item (exact id, else best text match); ValueError when nothing matches."""
    out = []
    for entry in entries:
        if entry in catalog:
            out.append(HistoryMatch(entry, entry, 1.0, True))
        else:
            matcher = matcher or CatalogMatcher(catalog)
            item, score = matcher.match(entry)
            if score < MIN_MATCH_SCORE:
                raise ValueError(
                    f"history entry {entry!r} is neither a catalog item id nor close to any job text "
                    f"(best match {item!r} scores {score:.2f} < {MIN_MATCH_SCORE}); use an item id or more words"
                )
            out.append(HistoryMatch(entry, item, score, False))
        if out[-1].item_id not in sid_map:
            raise ValueError(f"history item {out[-1].item_id!r} has no semantic ID in the SID map")
    return out


def explain(beam: Beam, sid_map: SIDMap) -> list[dict]:
    """Per SID level: the token, what the prefix up to it means (SIDMap labels) and the model's reasoning."""
    steps = []
    for level, code in enumerate(beam.codes):
        prefix = beam.codes[: level + 1]
        steps.append({
            "level": level,
            "token": sid_token(level, code),
            "label": sid_map.label(prefix),
            "reasoning": beam.blocks[level] if level < len(beam.blocks) else "",
            "logprob": beam.step_logprobs[level] if level < len(beam.step_logprobs) else None,
        })
    return steps


def format_recommendations(beams: list[Beam], catalog: Catalog, sid_map: SIDMap, template: str | None,
                           history: list[HistoryMatch], noun: str = "") -> str:
    """Human-readable listing: matched history, then each item with its SID, per-level meaning and reasoning
    (`noun`: what an item is called, the model's prompt setting; '' = the catalog's)."""
    lines = ["History (oldest first):"]
    for h in history:
        how = "" if h.exact else f"  <- matched from {h.query!r} (similarity {h.score:.2f})"
        text = "" if catalog.text_free else f": {catalog.render(h.item_id, template)}"  # ID-only: the id is all
        lines.append(f"  - {h.item_id}{text}{how}")
    lines.append("")
    lines.append(f"Top {len(beams)} {noun_forms(noun or catalog.noun)['nouns']}:")
    for rank, b in enumerate(beams, start=1):
        score = "popular fill (beam search returned fewer items)" if b.filled else f"log-prob {b.score:.3f}"
        sid = sid_map.sid_string(b.item_id) if b.item_id in sid_map else ""
        text = "" if catalog.text_free else f"  {catalog.render(b.item_id, template)}"
        lines.append(f"{rank:>3}. {b.item_id}{text}")
        lines.append(f"      SID {sid}  ({score})")
        for step in explain(b, sid_map) if not b.filled else []:
            label = f" = {step['label']}" if step["label"] else ""
            lines.append(f"      step {step['level'] + 1}: {step['token']}{label}")
            if step["reasoning"]:
                lines.append(f"        reasoning: {step['reasoning']}")
    return "\n".join(lines)
