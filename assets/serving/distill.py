"""Quantization-aware distillation: a short training of an int8 student against its fp32 parent.

The student starts as a copy of the fine-tuned model. Every Linear the int8 variant runs on int8
(each encoder layer's query, key, value, attention output, feed-forward input and output, and
the classifier) is trained as ONNX Runtime will run it after `smoothed_int8`:
- its input is divided by SmoothQuant's per-channel scale and fake-quantized per tensor (uint8,
  asymmetric, at a range calibrated on training texts);
- its weight, times the same scale, is fake-quantized per output channel (int8, symmetric).
Rounding passes gradients straight through. The loss is the KL divergence from the parent's
answers on training texts (no labels are read), so the student learns to give the parent's
answers through int8 arithmetic. Its fp32 weights are then exported and quantized by the
recipe the pipeline already uses (`smoothed_int8`), and the parity check compares the int8
model with the parent, not with the student. Imported only by the step that quantizes (it
imports torch).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from assets.serving.export import Distillation
from textops_core.inference import TextEncoder, pad_ids
from textops_core.modeling import POOLING_KEY, load_sequence_classifier

# SmoothQuant's channel scales are bounded as in quantize.smoothed
SMOOTHING_BOUNDS = (1e-2, 1e3)
# the share of an activation's values left outside its range, as ONNX Runtime's percentile
# calibration (99.999) leaves them
CLIPPED = 1e-5


@dataclass(frozen=True)
class Distilled:
    student_dir: Path
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    texts: int


def distill_student(
    model_dir: Path,
    student_dir: Path,
    texts: list[str],
    calibration_texts: list[str],
    max_length: int,
    how: Distillation,
    alpha: float,
    log: Callable[[str], None],
) -> Distilled:
    """Train an int8 student of the model in `model_dir` on `texts` (`how.epochs` passes over
    them) and save its fp32 weights, with the parent's tokenizer and config, to `student_dir`;
    `alpha` is SmoothQuant's strength, as the int8 recipe will use it."""
    if not texts:
        raise ValueError("quantization-aware distillation needs training texts; none were given")
    torch.manual_seed(how.seed)
    rng = np.random.default_rng(how.seed)
    encoder = TextEncoder(model_dir, max_length)
    ids = encoder.encode(texts)
    parent = load_sequence_classifier(model_dir).eval()
    student = load_sequence_classifier(model_dir).eval()  # dropout off: one function to match
    targets = _parent_logits(parent, ids, encoder.pad_id)
    del parent
    calibration = encoder.encode(calibration_texts or texts[:512])
    fakes = instrument(student, calibration, encoder.pad_id, alpha)
    # the embeddings stay fp32 in the int8 variant (a lookup, no MatMul): left as they are, they
    # also spare the optimizer half of the model's weights
    student.base_model.embeddings.requires_grad_(False)
    steps = how.steps(len(ids))
    optimizer, schedule = _optimizer(student, how.learning_rate, steps)
    losses: list[float] = []
    started = time.monotonic()
    for step, chosen in enumerate(batches([len(x) for x in ids], how.batch_size, steps, rng)):
        input_ids, mask = _padded([ids[i] for i in chosen], encoder.pad_id)
        logits = student(input_ids=input_ids, attention_mask=mask).logits
        loss = _kl(logits, targets[torch.from_numpy(chosen)], how.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            log(f"int8 student: step {step + 1}/{steps}, loss {np.mean(losses[-50:]):.5f}")
    seconds = time.monotonic() - started
    restore(student, fakes)
    _save(student, model_dir, student_dir)
    return Distilled(
        student_dir,
        steps,
        round(seconds, 1),
        float(np.mean(losses[:10])),
        float(np.mean(losses[-10:])),
        len(texts),
    )


def _optimizer(student, learning_rate: float, steps: int):
    """AdamW on the weights that train, warming up over a tenth of `steps`, then decaying
    linearly to zero."""
    optimizer = torch.optim.AdamW(
        [p for p in student.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0
    )
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))),
    )
    return optimizer, schedule


def batches(
    lengths: list[int], batch_size: int, steps: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`steps` batches of text indices: each pass shows every text once, in batches of texts
    of similar length (sorted within random groups of eight batches, so padding stays short),
    the batches in random order."""
    out: list[np.ndarray] = []
    group = batch_size * 8
    while len(out) < steps:
        order = rng.permutation(len(lengths))
        passed = []
        for start in range(0, len(order), group):
            chunk = order[start : start + group]
            chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
            passed += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        out += [passed[i] for i in rng.permutation(len(passed))]
    return out[:steps]


def _padded(batch: list[list[int]], pad_id: int):
    input_ids, mask = pad_ids(batch, pad_id)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


def _parent_logits(parent, ids: list[list[int]], pad_id: int, batch: int = 64):
    """The parent's logits on every text, in order, computed once."""
    order = np.argsort([len(x) for x in ids])
    out = torch.empty(len(ids), parent.config.num_labels)
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            rows = order[start : start + batch]
            input_ids, mask = _padded([ids[i] for i in rows], pad_id)
            out[torch.from_numpy(rows)] = parent(input_ids=input_ids, attention_mask=mask).logits
    return out


def _kl(logits, targets, temperature: float):
    return (
        F.kl_div(
            F.log_softmax(logits / temperature, dim=-1),
            F.log_softmax(targets / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )


def quantized_linears(model) -> dict[str, list[str]]:
    """The Linear modules the int8 variant runs on int8, grouped by the tensor they read (a
    layer's query, key and value read one: they share one smoothing scale, as in the ONNX
    graph). A mean-pooled model's [CLS] pooler is left out: its export has no pooler."""
    mean_pooled = getattr(model.config, POOLING_KEY, "cls") == "mean"
    groups: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or (mean_pooled and name.endswith("pooler.dense")):
            continue
        reads = name.rsplit(".", 1)[0] if name.split(".")[-1] in {"query", "key", "value"} else name
        groups.setdefault(reads, []).append(name)
    return groups


def instrument(model, calibration: list[list[int]], pad_id: int, alpha: float) -> dict:
    """Replace each quantized Linear of `model` with a FakeInt8Linear whose smoothing scale and
    activation range come from `calibration`; returns what `restore` puts back."""
    groups = quantized_linears(model)
    modules = dict(model.named_modules())
    peaks = _input_statistics(model, modules, groups, calibration, pad_id, None)
    smooth = {}
    for reads, names in groups.items():
        weight_peak = torch.stack(
            [modules[n].weight.detach().abs().amax(dim=0) for n in names]
        ).amax(dim=0)
        scale = peaks[reads].clamp(min=1e-5) ** alpha / weight_peak.clamp(min=1e-5) ** (1 - alpha)
        smooth[reads] = scale.clamp(*SMOOTHING_BOUNDS)
    ranges = _input_statistics(model, modules, groups, calibration, pad_id, smooth)
    replaced = {}
    for reads, names in groups.items():
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            fake = FakeInt8Linear(modules[name], smooth[reads], *ranges[reads])
            setattr(parent, child, fake)
            replaced[name] = fake
    return replaced


def restore(model, replaced: dict) -> None:
    """Put the trained Linear modules back in place of their FakeInt8Linear wrappers."""
    modules = dict(model.named_modules())
    for name, fake in replaced.items():
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, fake.linear)


def _input_statistics(model, modules, groups, calibration, pad_id, smooth):
    """Per group: with `smooth` None, max |x| per input channel; else the range of x / scale
    (CLIPPED of its values left out at each end) over the calibration texts."""
    first = {reads: modules[names[0]] for reads, names in groups.items()}
    seen: dict[str, list] = {reads: [] for reads in groups}
    hooks = []
    for reads, module in first.items():

        def hook(_module, inputs, _output, reads=reads):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            if smooth is None:
                seen[reads].append(x.abs().amax(dim=0))
            else:
                values = (x / smooth[reads]).flatten()
                if values.numel() > 1_000_000:
                    values = values[torch.randint(values.numel(), (1_000_000,))]
                seen[reads].append(values)

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for start in range(0, len(calibration), 32):
                input_ids, mask = _padded(calibration[start : start + 32], pad_id)
                model(input_ids=input_ids, attention_mask=mask)
    finally:
        for handle in hooks:
            handle.remove()
    if smooth is None:
        return {reads: torch.stack(peaks).amax(dim=0) for reads, peaks in seen.items()}
    out = {}
    for reads, parts in seen.items():
        values = torch.cat(parts)
        if values.numel() > 4_000_000:
            values = values[torch.randint(values.numel(), (4_000_000,))]
        low, high = torch.quantile(values.float(), torch.tensor([CLIPPED, 1 - CLIPPED]))
        out[reads] = (min(float(low), 0.0), max(float(high), 0.0))
    return out


class FakeInt8Linear(nn.Module):
    """A Linear as the smoothed int8 variant runs it (see the module's docstring)."""

    def __init__(self, linear: nn.Linear, smooth: torch.Tensor, low: float, high: float) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("smooth", smooth.detach().clone())
        scale = max(high - low, 1e-8) / 255
        self.act_scale = scale
        self.act_zero = int(min(255, max(0, round(-low / scale))))
        self.register_buffer("zeros", torch.zeros(linear.out_features, dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = torch.fake_quantize_per_tensor_affine(
            x / self.smooth, self.act_scale, self.act_zero, 0, 255
        )
        w = self.linear.weight * self.smooth
        scales = (w.detach().abs().amax(dim=1) / 127).clamp(min=1e-12)
        wq = torch.fake_quantize_per_channel_affine(w, scales, self.zeros, 0, -127, 127)
        return F.linear(xq, wq, self.linear.bias)


def _save(student, model_dir: Path, student_dir: Path) -> None:
    """The student's weights in safetensors, with every other file of the parent (tokenizer,
    config, calibration) beside them."""
    student_dir.mkdir(parents=True, exist_ok=True)
    for path in Path(model_dir).iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy2(path, student_dir / path.name)
    student.save_pretrained(student_dir, safe_serialization=True)
