"""Encoders: a tiny local Hugging Face encoder (mean pooling, cache by content hash), MiniLM and real data (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sid_tokenizer.embed import HFEncoder, cache_key, embed_catalog, make_encoder, minilm_path
from sid_tokenizer.tokenizer import SIDTokenizer
from tests.sid_helpers import TEMPLATE, tiny_catalog, tiny_config


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    """A 1-layer BERT built from a config (random weights) with the bundled MiniLM tokenizer: no hub access."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    return folder


def test_hf_encoder_mean_pools_and_normalises(tiny_encoder_dir):
    enc = make_encoder(str(tiny_encoder_dir), batch_size=4)
    assert isinstance(enc, HFEncoder)
    texts = ["nurse", "truck driver in denver with a cdl license and five years of experience", "server", "cook"]
    emb = enc.embed(texts)
    assert emb.shape == (4, 32) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Padding must not change a text's embedding (mean over real tokens only).
    alone = enc.embed(["nurse"])
    assert np.allclose(alone[0], emb[0], atol=1e-5)
    assert not np.allclose(emb[0], emb[2])


def test_embedding_cache_is_keyed_by_content(tmp_path, tiny_encoder_dir):
    enc = make_encoder(str(tiny_encoder_dir))
    texts = ["line cook", "bartender", "dispatcher"]
    first, info1 = embed_catalog(enc, texts, cache_dir=tmp_path)
    second, info2 = embed_catalog(enc, texts, cache_dir=tmp_path)
    assert not info1["cached"] and info2["cached"]
    assert np.array_equal(first, second)
    files = list(tmp_path.glob("emb-*.npy"))
    assert len(files) == 1
    assert np.array_equal(np.load(files[0], allow_pickle=False), first)
    _, info3 = embed_catalog(enc, texts[:2] + ["courier"], cache_dir=tmp_path)
    assert not info3["cached"] and len(list(tmp_path.glob("emb-*.npy"))) == 2
    assert cache_key("a", ["x", "y"]) != cache_key("a", ["x y"]) != cache_key("b", ["x", "y"])


def test_tokenizer_with_local_hf_encoder_saves_and_reloads(tmp_path, tiny_encoder_dir):
    catalog = tiny_catalog(200)
    tok = SIDTokenizer(tiny_config(encoder=str(tiny_encoder_dir), cache_dir=str(tmp_path / "cache")))
    sid_map = tok.fit_catalog(catalog)
    assert len(set(sid_map.item_to_codes.values())) == 200
    tok.save(tmp_path / "tok")
    saved = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert saved["encoder"]["kind"] == "hf" and saved["encoder"]["name"] == str(tiny_encoder_dir)
    loaded = SIDTokenizer.load(tmp_path / "tok")
    new = ["Courier at Acme in Austin. Industry: Logistics. Skills: routing"]
    assert np.array_equal(loaded.encode(new), tok.encode(new))
    again = SIDTokenizer(tiny_config(encoder=str(tiny_encoder_dir), cache_dir=str(tmp_path / "cache")))
    assert again.fit_catalog(catalog).item_to_codes == sid_map.item_to_codes
    assert again.report["embeddings_cached"]


@pytest.mark.slow
def test_bundled_minilm_puts_similar_jobs_closer():
    enc = make_encoder("minilm")
    emb = enc.embed(["Registered Nurse in Boston", "ICU Nurse at a hospital in Boston", "Truck Driver, CDL-A"])
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


@pytest.mark.slow
def test_real_jobs_catalog(shared_data, tmp_path):
    from genrec.data.loader import load_catalog

    catalog = load_catalog(shared_data / "jobs-kaggle")
    tok = SIDTokenizer(tiny_config(codebook_size=256, tfidf_dim=256, kmeans_iters=25))
    sid_map = tok.fit_catalog(catalog)
    rep = tok.report
    assert len(sid_map) == len(catalog) and rep["collision_rate"] == 0.0
    assert min(rep["utilization"][:3]) >= 0.9
    # About 3.7% of the job texts are exact duplicates, so collisions cannot be lower than that.
    assert 0.03 <= rep["collision_rate_before_dedup"] <= 0.2
    assert len(sid_map.labels) > 256
    _ = TEMPLATE
