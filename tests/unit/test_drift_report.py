import numpy as np
import polars as pl

from assets.model.training.base_model import DEFAULT_BASE_MODEL, resolve_base_model
from assets.monitoring.drift import DriftConfig, drift_findings

RNG = np.random.default_rng(3)
WORDS = ["the", "day", "was", "good", "bad", "people", "home", "city", "team", "win"]


def tweets(n, words=WORDS, low=4, high=12):
    return [" ".join(RNG.choice(words, RNG.integers(low, high))) for _ in range(n)]


TRAIN = pl.DataFrame({"text": tweets(600), "label": RNG.integers(0, 2, 600)})


def served(texts, labels):
    return pl.DataFrame({"text": texts, "text_length": [len(t) for t in texts], "label": labels})


def test_traffic_like_training_shows_no_drift():
    texts = tweets(300)
    labels = ["a" if x == 0 else "b" for x in RNG.integers(0, 2, 300)]
    findings = drift_findings(TRAIN, served(texts, labels), ["a", "b"], DriftConfig())
    assert not any(f["drift"] for f in findings.values()), findings


def test_shifted_traffic_shows_length_and_label_drift():
    texts = tweets(300, low=30, high=50)
    findings = drift_findings(TRAIN, served(texts, ["b"] * 300), ["a", "b"], DriftConfig())
    assert findings["length_psi"]["drift"] and findings["length_ks"]["drift"]
    assert findings["label_mix_chi2"]["drift"]
    assert findings["label_mix_chi2"]["served_shares"]["b"] == 1.0


def test_vocabulary_and_embedding_drift_with_the_real_tokenizer():
    from transformers import AutoModel, AutoTokenizer

    path = resolve_base_model(DEFAULT_BASE_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    foreign = tweets(120, words=["東京", "ß€", "ωμέγα", "ℵ∞", "𝔘𝔫𝔦"])
    config = DriftConfig(embedding_sample=64)
    labels = ["a" if x == 0 else "b" for x in RNG.integers(0, 2, 120)]
    same = drift_findings(TRAIN, served(tweets(120), labels), ["a", "b"], config, tokenizer, model)
    assert not same["unknown_token_share"]["drift"] and not same["embedding_mmd"]["drift"]
    moved = drift_findings(TRAIN, served(foreign, labels), ["a", "b"], config, tokenizer, model)
    assert moved["unknown_token_share"]["drift"]
    assert moved["embedding_mmd"]["drift"] and moved["embedding_mmd"]["p_value"] < 0.01
    assert same["embedding_mmd"]["p_value"] > 0.05
    assert moved["embedding_mmd"]["value"] > same["embedding_mmd"]["value"]
    assert moved["embedding_mmd"]["cosine_distance"] > same["embedding_mmd"]["cosine_distance"]
