"""thinc's PyTorch shim with an optimizer step that updates the parameters in place,
parameter averages that reach the network, and predictions in inference mode."""
import contextlib
from typing import Any, Dict, Iterator

import torch
from thinc.api import ArgsKwargs, PyTorchShim, torch2xp, xp2torch


class InPlacePyTorchShim(PyTorchShim):
    """thinc's ``PyTorchShim``, whose ``finish_update`` does not grow memory.

    thinc's own ``finish_update`` (thinc 8.3) sets ``param.data = xp2torch(optimizer(
    key, torch2xp(param.data), ...))``: the new tensor wraps, through DLPack, the
    numpy view of the old one, which keeps the old tensor alive, so every update
    adds a tensor, an array and a DLPack capsule per parameter to a chain that is
    never freed. The chain grows only some KB a step, but its pieces lie spread
    over the heap between each step's large short-lived buffers, so glibc can
    neither reuse nor return that memory: training RSS grew by about 1 MB a step.
    thinc's optimizers update the arrays they are given in place, so the
    parameters need no new tensor; a result that is a new array is copied in.
    An update in place is marked on the parameter's version counter, as a torch
    in-place op would be.
    """

    def predict(self, inputs: ArgsKwargs) -> Any:
        """thinc's ``predict`` under ``torch.inference_mode`` rather than ``no_grad``
        (its tensors skip version counting and view tracking, a few percent of a single
        ``nlp(text)`` call's few hundred small operations), and without switching the
        module to evaluation mode and back: the network reads no mode (training noise is
        an argument, see ``BiLSTMCRF.train``), so predicting threads write nothing to
        the shared module.
        """
        with torch.inference_mode(), torch.autocast(device_type="cuda", enabled=self._mixed_precision):
            return self._model(*inputs.args, **inputs.kwargs)

    def finish_update(self, optimizer: Any) -> None:
        # Per-parameter learning-rate factors, where the network declares them.
        lr_scales = getattr(self._model, "lr_scales", dict)()
        for name, torch_data in self._model.named_parameters():
            if torch_data.grad is None:
                continue
            if not self._grad_scaler.found_inf:  # skip the step if a gradient overflowed
                param, _ = optimizer(
                    (self.id, name),
                    torch2xp(torch_data.data),
                    torch2xp(torch_data.grad),
                    lr_scale=lr_scales.get(name, 1.0),
                )
                updated = xp2torch(param, device=torch_data.device)
                if updated.data_ptr() != torch_data.data_ptr():
                    with torch.no_grad():
                        torch_data.copy_(updated)
                else:
                    # Updated in place through a numpy/cupy view, which torch does not
                    # see: bump the version, which caches of weight-derived tables
                    # (``recurrence._FirstLayer``) compare to notice a change.
                    torch.autograd.graph.increment_version(torch_data)
            torch_data.grad.zero_()
        self._grad_scaler.update()

    @contextlib.contextmanager
    def use_params(self, params: Dict[Any, Any]) -> Iterator[None]:
        """Run with the parameters in ``params`` (the optimizer's averages, with
        ``use_averages = true``), then restore the current ones.

        thinc's shim (8.3) looks for keys ``"pytorch_{id}_{name}"``, while its
        ``finish_update`` (and ours) registers ``(id, name)`` with the optimizer, so
        the averages never reached a PyTorch model: evaluation and ``model-best``
        used the last weights. Both key forms are read here.
        """
        prefix = f"pytorch_{self.id}_"
        averaged = {}
        for name, param in self._model.named_parameters():
            value = params.get((self.id, name), params.get(prefix + name))
            if value is not None:
                averaged[name] = (param, xp2torch(value, device=param.device))
        if not averaged:
            yield
            return
        backup = {name: param.detach().clone() for name, (param, _) in averaged.items()}
        with torch.no_grad():
            for param, value in averaged.values():
                param.copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, (param, _) in averaged.items():
                    param.copy_(backup[name])
