"""The inference loop shared by the service and the pipeline's evaluation: tokenize a request's
texts in one call, run them as length-sorted micro-batches padded to their own longest text,
on ONNX Runtime or PyTorch. Depends on numpy and tokenizers; onnxruntime or torch is imported
only by the variant that runs on it, so an ONNX image carries no torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

# Serving variants, fastest first on a CPU, and the file each loads from the model folder.
VARIANT_FILES = {"onnx-int8": "onnx/model.int8.onnx", "onnx-fp32": "onnx/model.onnx"}
VARIANTS = (*VARIANT_FILES, "pytorch")
SERVING_FILE = "serving.json"  # the variant chosen at approval, its parity and speed
CALIBRATION_FILE = "calibration.json"  # the temperature fitted on validation after training


def sorted_batches(
    lengths: list[int], batch_size: int, max_padding: float | None = None
) -> list[list[int]]:
    """Indices in micro-batches of similar length, longest first; callers restore the order.
    A micro-batch holds at most `batch_size` texts; with `max_padding` it also ends where the
    next text is more than that share shorter than its longest, so a request's random mix of
    short and long texts is not padded to its longest one."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    floor = 1 - max_padding if max_padding is not None else 0.0
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and (len(current) == batch_size or lengths[index] < lengths[current[0]] * floor):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def pad_ids(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded to the longest sequence of this batch (not to max_length), and the
    attention mask, as int64 arrays."""
    width = max(len(ids) for ids in sequences)
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def pad_batch(sequences: list[list[int]], pad_id: int):
    """`pad_ids` as torch tensors (training and the pipeline's embeddings)."""
    import torch

    input_ids, attention_mask = pad_ids(sequences, pad_id)
    return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)


class TextEncoder:
    """The model's own fast tokenizer (tokenizer.json), truncating to `max_length`; padding is
    left to `pad_ids`, per micro-batch (the saved file may pad every text to max_length)."""

    def __init__(self, model_dir: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        padding = self.tokenizer.padding or {}
        self.pad_id = int(padding.get("pad_id", 0))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]


class Classifier(Protocol):
    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


# Graph fusions left out: ONNX Runtime's CPU SkipLayerNormalization kernel (the residual Add
# fused into the layer norm after it) runs slower than Add + LayerNormalization on tweets'
# hidden states, and int8 answers more texts/s without it (docs/measurements.md; the fp32 graph
# does not fuse it).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


class OnnxClassifier:
    """An exported classifier on ONNX Runtime's CPU provider; `threads` 0 lets it use one thread
    per physical core."""

    def __init__(self, path: Path, threads: int = 0, spin: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(path),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(DISABLED_OPTIMIZERS),
        )

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.session.run(["logits"], feeds)[0]


class TorchClassifier:
    """The fine-tuned transformers model, on a GPU when torch sees one."""

    def __init__(self, model_dir: Path, threads: int = 0, device: str | None = None) -> None:
        try:
            import torch

            from textops_core.modeling import load_sequence_classifier
        except ImportError:
            raise ImportError(
                "the pytorch variant needs torch and transformers, which this environment lacks "
                "(an ONNX image has neither): serve an ONNX variant, or build the bento with "
                "bento/bentofile.torch.yaml"
            ) from None

        if threads:
            torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_sequence_classifier(model_dir)
        self.model.eval().to(self.device)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            output = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.from_numpy(attention_mask).to(self.device),
            )
        return output.logits.float().cpu().numpy()


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class Predictor:
    """Texts in, class probabilities out: one tokenizer call per request, length-sorted
    micro-batches, probabilities at the model's calibrated temperature."""

    def __init__(
        self,
        classifier: Classifier,
        encoder: TextEncoder,
        num_labels: int,
        micro_batch: int = 32,
        temperature: float = 1.0,
    ) -> None:
        self.classifier = classifier
        self.encoder = encoder
        self.num_labels = num_labels
        self.micro_batch = micro_batch
        self.temperature = temperature

    def logits(self, texts: list[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Logits, shape (len(texts), num_labels), in the order of `texts`; `on_batch(texts
        done so far)` after each micro-batch."""
        ids = self.encoder.encode(texts)
        out = np.zeros((len(texts), self.num_labels), dtype=np.float32)
        done = 0
        # padding capped at a fifth of a micro-batch: sorted by length, short texts run together
        for batch in sorted_batches([len(x) for x in ids], self.micro_batch, max_padding=0.2):
            input_ids, attention_mask = pad_ids([ids[i] for i in batch], self.encoder.pad_id)
            out[batch] = self.classifier.logits(input_ids, attention_mask)
            done += len(batch)
            if on_batch is not None:
                on_batch(done)
        return out

    def predict_proba(
        self, texts: list[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        return softmax(self.logits(texts, on_batch), self.temperature)


def label_names(model_dir: Path) -> list[str]:
    """Class names in id order, from the model's config.json (no transformers needed)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = config["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def serving_settings(model_dir: Path) -> dict:
    """serving.json of an approved model; a model without one serves with PyTorch."""
    path = Path(model_dir) / SERVING_FILE
    return json.loads(path.read_text()) if path.is_file() else {"variant": "pytorch"}


def calibrated_temperature(model_dir: Path) -> float:
    """The temperature the model's probabilities are read at (1.0 for an uncalibrated model)."""
    path = Path(model_dir) / CALIBRATION_FILE
    return float(json.loads(path.read_text())["temperature"]) if path.is_file() else 1.0


def load_predictor(
    model_dir: Path,
    max_length: int,
    variant: str = "pytorch",
    threads: int = 0,
    micro_batch: int = 32,
    temperature: float | None = None,
    spin: bool = True,
) -> Predictor:
    """A predictor of the model in `model_dir` on one of VARIANTS, its probabilities at the
    model's calibrated temperature unless `temperature` is given; `spin` keeps ONNX Runtime's
    threads spinning between calls."""
    model_dir = Path(model_dir)
    if temperature is None:
        temperature = calibrated_temperature(model_dir)
    if variant not in VARIANTS:
        raise ValueError(f"unknown serving variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if variant == "pytorch":
        classifier: Classifier = TorchClassifier(model_dir, threads)
    else:
        path = model_dir / VARIANT_FILES[variant]
        if not path.is_file():
            raise FileNotFoundError(f"{variant}: {path} does not exist in this model")
        classifier = OnnxClassifier(path, threads, spin)
    return Predictor(
        classifier,
        TextEncoder(model_dir, max_length),
        len(label_names(model_dir)),
        micro_batch,
        temperature,
    )
