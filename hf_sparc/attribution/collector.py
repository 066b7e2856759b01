"""Where each level's units live, and the hooks that accumulate a signal over the data.

Units per level (keys of the resulting :class:`~hf_sparc.Relevance`):

* ``weight``: elements of a projection's weight (``nn.Linear`` or ``Conv1D``).
* ``neuron``: output features of a projection (default: the MLP up-projections).
* ``head``: heads of an attention module, read at the input of its output projection.
* ``token``: input positions (token + learned position embeddings).

Each batch's contribution is computed in fp32 and summed over real (non-padding) tokens as the
batches stream by, so memory does not grow with the number of samples. Accumulators are float64:
a sum of fp32 batch contributions is then (nearly) exact, so the fp32 result does not depend on
the order of the batches, on resuming, or on how many processes shared them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from hf_sparc.architectures import (
    ArchitectureSpec,
    attention_output_name,
    decoder_layers,
    is_projection,
    layer_part_names,
)
from hf_sparc.attribution.offload import parameter
from hf_sparc.attribution.patches import InstancePatches
from hf_sparc.attribution.signals import AttributionMethod


def _default_targets(model: nn.Module, spec: ArchitectureSpec, level: str) -> list[str]:
    if level == "neuron":
        return layer_part_names(model, spec, "mlp_up")
    if level == "head":
        return layer_part_names(model, spec, "attention")
    return [
        f"{prefix}.{name}"
        for prefix, layer in decoder_layers(model, spec)
        for name, module in layer.named_modules()
        if name and is_projection(module)
    ]


def _adapter_layer_around(model: nn.Module, name: str) -> str | None:
    """The PEFT adapter layer that is or holds module ``name`` (e.g. its ``base_layer``), if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if isinstance(model.get_submodule(prefix), BaseTunerLayer):
            return prefix
    return None


def resolve_targets(
    model: nn.Module, spec: ArchitectureSpec, level: str, target_modules: str | Sequence[str] | None
) -> dict[str, nn.Module]:
    """Module names → modules for ``level``, PEFT-style: a ``str`` is a regex matched against the
    full name, a list matches names equal to or ending with ``"." + item``."""
    if level == "token":
        return {}
    if target_modules is None:
        names = _default_targets(model, spec, level)
    else:
        every = [name for name, _ in model.named_modules() if name]
        if isinstance(target_modules, str):
            names = [n for n in every if re.fullmatch(target_modules, n)]
        else:
            names = [n for n in every if any(n == t or n.endswith(f".{t}") for t in target_modules)]
        if not names:
            raise ValueError(
                f"target_modules={target_modules!r} matched no module. Defaults for {level!r}: "
                f"{_default_targets(model, spec, level)[:3]}…"
            )
    targets = {name: model.get_submodule(name) for name in names}
    attention_names = set(layer_part_names(model, spec, "attention"))
    for name, module in targets.items():
        if level == "head" and name not in attention_names:
            raise ValueError(f"{name} is not an attention module; head level targets {spec.attention!r}.")
        wrapper = _adapter_layer_around(model, name) if level in ("weight", "neuron") else None
        if wrapper is not None:
            layer = model.get_submodule(wrapper)
            kind = f"{type(layer).__module__}.{type(layer).__name__}"
            raise ValueError(
                f"{name} is part of a PEFT adapter layer ({wrapper}: {kind}), whose masks or deltas "
                "change what the projection computes; attribute the merged model "
                "(peft_model.merge_and_unload(), on a copy to keep the adapter) or the base model."
            )
        if level in ("weight", "neuron") and not is_projection(module):
            raise ValueError(
                f"{name} ({type(module).__name__}) is not a projection; {level} level targets "
                "nn.Linear / Conv1D modules."
            )
    return targets


def _out_features(module: nn.Module) -> int:
    return module.weight.shape[1] if type(module).__name__ == "Conv1D" else module.weight.shape[0]


def _in_features(module: nn.Module) -> int:
    return module.weight.shape[0] if type(module).__name__ == "Conv1D" else module.weight.shape[1]


def unit_shape(model: nn.Module, spec: ArchitectureSpec, level: str, name: str, module: nn.Module):
    """Shape of the score tensor of one target module."""
    if level == "weight":
        return tuple(module.weight.shape)
    if level == "neuron":
        return (_out_features(module),)
    return (model.config.num_attention_heads,)


class Collector:
    """Accumulates one signal for one level through hooks on the target modules.

    ``select`` (bool ``[batch, seq]``, true on real tokens; ``None`` when every token is real)
    must be set before each forward.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ArchitectureSpec,
        level: str,
        method: AttributionMethod,
        targets: dict[str, nn.Module],
        absolute: bool,
    ) -> None:
        self.model, self.spec, self.level, self.method = model, spec, level, method
        self.targets = targets
        self.absolute = absolute
        self.sums: dict[str, torch.Tensor] = {}
        self.select: torch.Tensor | None = None
        self.n_heads = model.config.num_attention_heads

    # -- helpers -------------------------------------------------------------------------------
    def _add(self, name: str, value: torch.Tensor) -> None:
        if name in self.sums:
            self.sums[name] += value
        else:
            self.sums[name] = value.double()

    @staticmethod
    def _tokens(tensor: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        """Real-token rows of a ``[batch, seq, features]`` tensor, in fp32: ``[tokens, features]``.

        Some models (OPT) flatten to ``[batch·seq, features]`` inside the MLP; both work.
        """
        rows = tensor.reshape(-1, tensor.shape[-1])
        # Unpadded batches skip the boolean index: it copies every activation and gradient.
        return (rows if select is None else rows[select.reshape(-1)]).float()

    def _units(self, per_token: torch.Tensor) -> torch.Tensor:
        """Reduce ``[tokens, features]`` to per-token unit scores (heads: sum over head_dim)."""
        if self.level == "head":
            return per_token.view(per_token.shape[0], self.n_heads, -1).sum(-1)
        return per_token

    def _sum_tokens(self, per_token_units: torch.Tensor) -> torch.Tensor:
        return (per_token_units.abs() if self.absolute else per_token_units).sum(0)

    # -- hooks ---------------------------------------------------------------------------------
    def attach(self, patches: InstancePatches) -> None:
        signal = self.method.signal
        for name, module in self.targets.items():
            if self.level == "head":
                site = self.model.get_submodule(attention_output_name(self.spec, name))
                handle = site.register_forward_pre_hook(self._input_hook(name), prepend=True)
            elif signal == "wanda":
                handle = module.register_forward_pre_hook(self._wanda_hook(name), prepend=True)
            elif self.level == "weight":
                handle = module.register_forward_hook(self._weight_hook(name, module), prepend=True)
            else:
                handle = module.register_forward_hook(self._output_hook(name), prepend=True)
            patches.add(handle.remove)

    def _observe(self, name: str, site: torch.Tensor) -> None:
        """Score the units living in ``site`` (a module output, or the heads' concatenation)."""
        select = self.select
        if self.method.signal == "activation":
            self._add(name, self._units(self._tokens(site, select).abs()).sum(0))
        elif site.requires_grad:
            # The hook must not reference ``site`` itself: tensor -> hook -> closure -> tensor is a
            # cycle that Python's GC cannot see through, so every batch's activations would leak.
            value = site.detach()

            def on_grad(grad: torch.Tensor) -> None:
                self._add(
                    name,
                    self._sum_tokens(self._units(self._tokens(value, select) * self._tokens(grad, select))),
                )

            site.register_hook(on_grad)

    def _output_hook(self, name: str):
        return lambda _module, _inputs, output: self._observe(name, output)

    def _input_hook(self, name: str):
        return lambda _module, inputs: self._observe(name, inputs[0])

    def _wanda_hook(self, name: str):
        def hook(_module, inputs):
            self._add(name, self._tokens(inputs[0], self.select).pow(2).sum(0))

        return hook

    def _weight_hook(self, name: str, module: nn.Module):
        transposed = type(module).__name__ == "Conv1D"

        def hook(_module, inputs, output):
            if not output.requires_grad:
                return
            x, select = inputs[0], self.select

            def on_grad(grad: torch.Tensor) -> None:
                weight = parameter(module).to(grad.device).float()
                xs, gs = self._tokens(x, select), self._tokens(grad, select)
                if self.absolute:
                    # Σ_t |w·g_t·x_t| = |w| · (|g|ᵀ|x|): per-token absolute weight relevance at the
                    # cost of one matmul, because each token's contribution is a rank-1 outer product.
                    xs, gs, weight = xs.abs(), gs.abs(), weight.abs()
                outer = xs.T @ gs if transposed else gs.T @ xs
                self._add(name, weight * outer)

            output.register_hook(on_grad)

        return hook

    # -- results -------------------------------------------------------------------------------
    def scores(self, n_samples: int, n_real_tokens: int) -> dict[str, torch.Tensor]:
        """Final per-module scores after the last batch."""
        signal, result = self.method.signal, {}
        for name, module in self.targets.items():
            shape = unit_shape(self.model, self.spec, self.level, name, module)
            total = self.sums.get(name)
            total = torch.zeros(shape, dtype=torch.float64) if total is None else total.cpu()
            if signal == "relevance":
                score = total / n_samples
            elif signal == "activation":
                score = total / max(n_real_tokens, 1)
            else:  # wanda: |W_ij| · ‖X_j‖₂ with the norm over every real token
                norms = (
                    total.sqrt().float()
                )  # one value per input feature; the weight-sized product stays fp32
                weight = parameter(module).detach().cpu().float().abs()
                conv1d = type(module).__name__ == "Conv1D"
                score = weight * (norms[:, None] if conv1d else norms)
                if self.level == "neuron":  # a unit's score: the sum over its row of weights
                    score = score.sum(0 if conv1d else 1)
            result[name] = score.float()
        return result

    def complete_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The accumulators with every target present (zeros where nothing was seen), as an
        all-reduce needs them: a process may have had no batch at all."""
        for name, module in self.targets.items():
            if name not in self.sums:
                shape = unit_shape(self.model, self.spec, self.level, name, module)
                self.sums[name] = torch.zeros(shape, dtype=torch.float64, device=device)
        return self.sums


def data_free_scores(
    model: nn.Module,
    spec: ArchitectureSpec,
    level: str,
    method: AttributionMethod,
    targets: dict[str, nn.Module],
    seed: int,
) -> dict[str, torch.Tensor]:
    """Scores of methods that need no data: ``magnitude`` and ``random``."""
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for name, module in targets.items():
        shape = unit_shape(model, spec, level, name, module)
        if method.signal == "random":
            result[name] = torch.rand(shape, generator=generator)
        elif level == "weight":
            result[name] = parameter(module).detach().float().abs().cpu()
        else:
            out_dim = 1 if type(module).__name__ == "Conv1D" else 0
            weight = parameter(module).detach().float().cpu()
            result[name] = weight.norm(dim=1 - out_dim)
    return result
