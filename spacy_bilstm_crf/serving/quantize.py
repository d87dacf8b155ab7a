"""INT8 dynamic quantization of the network for CPU inference.

The LSTM and the output Linear get int8 weights (activations are quantized on
the fly, per batch); the embeddings, LayerNorm and CRF stay float32. The CRF
holds a few thousand parameters and its Viterbi is a max-plus recursion, not a
matmul, so int8 would save nothing there; the embeddings are lookups whose
cost does not depend on their precision.

Dynamic quantization computes the activations' int8 scale per input tensor,
that is per batch: a text's INT8 scores (and, rarely, its entities) can depend
on the other texts in its batch, unlike the float32 model's.

A quantized state dict holds the LSTM's prepacked weights as TorchBind objects
(``torch.ScriptObject``), which ``torch.load(weights_only=True)`` refuses by
default: :func:`deserialize_quantized` allows exactly that type, so loading a
quantized pipeline still never unpickles arbitrary Python objects.
"""
import warnings
from io import BytesIO
from typing import Any, Iterator

import torch
from torch import nn

# The layer types replaced by their dynamically quantized versions.
QUANTIZED_TYPES = {nn.LSTM, nn.Linear}


class _quiet_quantization:
    """Silence torch's deprecation warnings for eager-mode quantization (``torch.ao``):
    the API still works and is what the project uses; the warnings would be printed
    on every ``spacy.load`` of a quantized pipeline."""

    def __enter__(self) -> None:
        self.ctx = warnings.catch_warnings()
        self.ctx.__enter__()
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*quantiz", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*quantiz", category=DeprecationWarning)
        # torch.load of quantized tensors still goes through TypedStorage.
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")

    def __exit__(self, *exc: Any) -> None:
        self.ctx.__exit__(*exc)


def quantize_module(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with int8 LSTM and Linear layers, in eval mode.

    module (nn.Module): A float32 ``BiLSTMCRF`` on the CPU.
    RETURNS (nn.Module): The quantized copy; ``module`` is left unchanged.
    """
    if any(p.device.type != "cpu" for p in module.parameters()):
        raise ValueError(
            "INT8 dynamic quantization runs on the CPU only: move the model to the CPU "
            "(don't use --gpu-id / spacy.require_gpu) or use the float32 pipeline on GPU."
        )
    with _quiet_quantization():
        quantized = torch.ao.quantization.quantize_dynamic(
            module, QUANTIZED_TYPES, dtype=torch.qint8, inplace=False
        )
    # The new int8 layers are created in train mode; BiLSTMCRF.eval() puts every
    # submodule in eval mode (the mode of a module the predict path uses).
    return quantized.eval()


def quantized_submodules(module: nn.Module) -> Iterator[str]:
    """Names of the dynamically quantized submodules of ``module``."""
    dynamic = (torch.ao.nn.quantized.dynamic.LSTM, torch.ao.nn.quantized.dynamic.Linear)
    for name, sub in module.named_modules():
        if isinstance(sub, dynamic):
            yield name


def is_quantized(module: nn.Module) -> bool:
    """RETURNS (bool): Whether ``module`` has dynamically quantized layers."""
    return any(True for _ in quantized_submodules(module))


def deserialize_quantized(model: nn.Module, state_bytes: bytes, device: torch.device) -> nn.Module:
    """Load a quantized state dict saved by thinc's ``PyTorchShim`` (``torch.save``).

    The signature of thinc's ``deserialize_model`` hook (``PyTorchWrapper_v3``).
    """
    if device.type != "cpu":
        raise ValueError(
            f"Cannot load an INT8 (quantize_int8 = true) model on {device}: dynamic "
            "quantization runs on the CPU only. Load it without a GPU, or use the "
            "float32 pipeline on GPU."
        )
    with _quiet_quantization(), torch.serialization.safe_globals([torch.ScriptObject]):
        state = torch.load(BytesIO(state_bytes), map_location=device, weights_only=True)
        model.load_state_dict(state)
    return model
