"""Human-readable labels for SID prefixes: the words that set a node's items apart from its parent's items.

For every prefix node at the semantic levels (not the dedup level) the score of a term t is
p_node(t) * log(p_node(t) / p_parent(t)), with p = fraction of the node's (parent's) items whose text contains
t; level-1 nodes are compared with the whole catalog. The best unigrams/bigrams are joined into 2-4 words.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

from sid_tokenizer.sidmap import sid_string

MAX_CANDIDATES = 8


TOKEN = re.compile(r"(?u)\b[^\W\d_][\w+#&-]*\b")  # words starting with a letter (no bare numbers)
SEGMENT = re.compile(r"[;:,.!?|()\[\]{}<>/\n\t]+")  # bigrams never cross field or clause boundaries
COMMON_SHARE = 0.5  # words in more than this share of the items (field names like "title:") are not labels


def _segments(text: str) -> list[list[str]]:
    return [TOKEN.findall(seg) for seg in SEGMENT.split(text.lower())]


def _term_matrix(texts: list[str], max_features: int):
    """Binary item x term matrix over words and within-segment bigrams, without stop words and words so
    common that they carry no information (the field names of the default template)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    segmented = [_segments(t) for t in texts]
    df: dict[str, int] = {}
    for segs in segmented:
        for w in {w for seg in segs for w in seg}:
            df[w] = df.get(w, 0) + 1
    limit = COMMON_SHARE * len(texts)
    skip = set(ENGLISH_STOP_WORDS) | {w for w, c in df.items() if c > limit and len(texts) >= 4}

    def analyze(i: int) -> list[str]:
        out: list[str] = []
        for seg in segmented[i]:
            toks = [w for w in seg if w not in skip]
            out += toks
            out += [f"{a} {b}" for a, b in zip(toks, toks[1:])]
        return out

    vec = CountVectorizer(analyzer=analyze, binary=True, max_features=max_features, dtype=np.float32)
    try:
        x = vec.fit_transform(range(len(texts)))
    except ValueError:  # no words at all
        return None, []
    return x.tocsr(), vec.get_feature_names_out().tolist()


def _pick(terms: list[str], words: int) -> str:
    """Join candidate terms (best first) into at most `words`+1 words, skipping terms that repeat a word."""
    chosen: list[str] = []
    used: set[str] = set()
    count = 0
    for term in terms:
        parts = term.split()
        if any(p in used for p in parts) or count + len(parts) > max(words, 2) + 1:
            continue
        chosen.append(term)
        used.update(parts)
        count += len(parts)
        if count >= words:
            break
    return ", ".join(chosen)


def prefix_labels(
    codes: np.ndarray, texts: list[str], levels: int, words: int = 3, max_features: int = 50000
) -> dict[str, str]:
    """{SID prefix string: label} for every prefix of length 1..levels present in `codes` (n, >= levels)."""
    n = codes.shape[0]
    x, vocab = _term_matrix(texts, max_features)
    if x is None or n == 0:
        return {}
    labels: dict[str, str] = {}
    bigram_bonus = np.array([1.1 if " " in term else 1.0 for term in vocab])
    parent_counts = sp.csr_matrix(x.sum(axis=0))  # root: the whole catalog
    parent_sizes = np.array([n], dtype=np.float64)
    parent_of_item = np.zeros(n, dtype=np.int64)
    for level in range(1, levels + 1):
        nodes, node_of_item = np.unique(codes[:, :level], axis=0, return_inverse=True)
        node_of_item = node_of_item.reshape(-1)
        m = len(nodes)
        member = sp.csr_matrix((np.ones(n, dtype=np.float32), (node_of_item, np.arange(n))), shape=(m, n))
        counts = (member @ x).tocsr()
        counts.sort_indices()
        sizes = np.bincount(node_of_item, minlength=m).astype(np.float64)
        parent_idx = np.zeros(m, dtype=np.int64)
        parent_idx[node_of_item] = parent_of_item
        par = parent_counts[parent_idx].multiply(counts > 0).tocsr()
        par.sort_indices()
        if par.nnz != counts.nnz or not np.array_equal(par.indices, counts.indices):
            raise AssertionError("label scoring: node terms are not a subset of the parent's")  # cannot happen
        rows = np.repeat(np.arange(m), np.diff(counts.indptr))
        p_node = counts.data / sizes[rows]
        p_par = par.data / parent_sizes[parent_idx[rows]]
        score = p_node * np.log(p_node / p_par)
        # Nodes identical to their parent get no positive score: fall back to how common the term is.
        score = score + 1e-6 * p_node
        score = score * bigram_bonus[counts.indices]  # "san diego" over "diego" when they always co-occur
        order = np.lexsort((counts.indices, -score, rows))
        starts = counts.indptr[:-1]
        ends = counts.indptr[1:]
        sorted_cols = counts.indices[order]
        for node in range(m):
            s, e = starts[node], min(ends[node], starts[node] + MAX_CANDIDATES)
            if s == e:
                continue
            labels[sid_string(nodes[node])] = _pick([vocab[t] for t in sorted_cols[s:e]], words)
        parent_counts, parent_sizes, parent_of_item = counts, sizes, node_of_item
    return labels
