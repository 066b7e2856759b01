"""`Relevance`: per-module relevance scores with their provenance, saved as safetensors."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from hf_sparc._files import load_tensors, save_tensors

LEVELS = ("weight", "neuron", "head", "token")
_METADATA_KEY = "hf_sparc.relevance"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RelevanceInfo:
    """Where a `Relevance` came from.

    Attributes:
        method: Attribution method (``"lrp"``, ``"cp-lrp"``, ``"gradient"``, ...), or an
            expression such as ``"(lrp) - (lrp)"`` for derived relevance.
        level: ``"weight"``, ``"neuron"``, ``"head"`` or ``"token"``.
        n_samples: Reference samples averaged over (paper Eq. 1).
        n_tokens: Explained output tokens summed over all samples.
        model_name: ``config._name_or_path`` of the attributed model.
        settings: The attribution settings (objective, absolute, max_length, ...).
        token_counts: Token level only: number of input tokens per text.
        token_ids: Token level only: the input token ids per text.
        outputs: Gradient-based methods: the explained output (e.g. summed target logits) of
            each text, in input order — what the relevance of each text decomposes.
    """

    method: str
    level: str
    n_samples: int
    n_tokens: int
    model_name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    token_counts: list[int] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)
    outputs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Relevance metadata also comes from files; a wrong type here would surface much later
        # as a confusing error (or a wrong split of token relevance), so refuse it at the door.
        checks = (
            ("method", str),
            ("level", str),
            ("n_samples", int),
            ("n_tokens", int),
            ("model_name", str),
            ("settings", dict),
            ("token_counts", list),
            ("token_ids", list),
            ("outputs", list),
        )
        for name, expected in checks:
            value = getattr(self, name)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ValueError(f"RelevanceInfo.{name} must be a {expected.__name__}, got {value!r}.")
        if self.n_samples < 0 or self.n_tokens < 0:
            raise ValueError(
                f"RelevanceInfo counts must be non-negative, got {self.n_samples}, {self.n_tokens}."
            )
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in self.token_counts):
            raise ValueError("RelevanceInfo.token_counts must hold non-negative ints.")


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds no NaN or Inf. A finite sum implies it (NaN and Inf propagate) and
    costs one pass; only a non-finite sum (or an overflowing one) needs the element-wise check."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _check_scores(name: str, tensor: Any) -> None:
    """Refuse scores no ranking can use, naming the module: non-tensors, non-float, NaN or Inf.

    Every Relevance — from the attribution engine, from arithmetic (``a - b`` can overflow in half
    precision) or from a file — passes here, so a NaN never reaches a mask.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"Relevance of {name} must be a tensor, got {type(tensor).__name__}.")
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"Relevance of {name} must be floating point, got dtype {tensor.dtype}.")
    if not all_finite(tensor):
        n_nan, n_inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
        raise ValueError(
            f"Relevance of {name} contains {n_nan} NaN and {n_inf} Inf value(s) (of {tensor.numel()}): "
            "a half-precision overflow or NaN/Inf weights or activations in the model. Attribute in "
            "float32, or check the model's weights."
        )


class Relevance(Mapping[str, torch.Tensor]):
    """Relevance scores keyed by module name (as in ``model.named_modules()``).

    Shapes: weight level = the module's weight shape; neuron level = ``[n_neurons]`` (output
    features of the module); head level = ``[n_heads]`` (keyed by the attention module);
    token level = one flat tensor of all texts' tokens under the input-embedding module name,
    split per text with :meth:`per_text`.

    Relevance supports ``a - b``, ``a + b``, ``a * k``, ``a / k``, ``-a`` and ``abs(a)`` with
    level/key/shape checks, and round-trips through :meth:`save` / :meth:`load` (one
    safetensors file, metadata in its header, no pickle).
    """

    def __init__(self, scores: Mapping[str, torch.Tensor], info: RelevanceInfo) -> None:
        if info.level not in LEVELS:
            raise ValueError(f"Unknown level {info.level!r}; expected one of {LEVELS}.")
        for name, tensor in scores.items():
            _check_scores(name, tensor)
        self._scores = {name: tensor.detach() for name, tensor in scores.items()}
        self.info = info
        if info.level == "token" and info.token_counts and sum(info.token_counts) != self.numel():
            raise ValueError(
                f"Token-level relevance holds {self.numel()} scores, but token_counts add up to "
                f"{sum(info.token_counts)}."
            )

    # -- Mapping -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._scores[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    # -- convenience -------------------------------------------------------------------------
    @property
    def level(self) -> str:
        return self.info.level

    @property
    def method(self) -> str:
        return self.info.method

    def numel(self) -> int:
        """Total number of scored components."""
        return sum(t.numel() for t in self._scores.values())

    def per_text(self) -> list[torch.Tensor]:
        """Token level: the per-token relevance of each text, in input order."""
        if self.level != "token":
            raise ValueError(f"per_text() needs token-level relevance, this is {self.level}-level.")
        (flat,) = self._scores.values()
        return list(torch.split(flat, self.info.token_counts))

    def __repr__(self) -> str:
        return (
            f"Relevance(method={self.method!r}, level={self.level!r}, modules={len(self)}, "
            f"components={self.numel()}, n_samples={self.info.n_samples})"
        )

    # -- arithmetic --------------------------------------------------------------------------
    def _check_compatible(self, other: Relevance) -> None:
        if not isinstance(other, Relevance):
            raise TypeError(f"Cannot combine Relevance with {type(other).__name__}.")
        if self.level != other.level:
            raise ValueError(f"Cannot combine {self.level}-level with {other.level}-level relevance.")
        if set(self) != set(other):
            missing = sorted(set(self) ^ set(other))[:5]
            raise ValueError(f"Relevance covers different modules; e.g. only one side has {missing}.")
        for name in self:
            if self[name].shape != other[name].shape:
                raise ValueError(
                    f"Shape mismatch for {name}: {tuple(self[name].shape)} vs {tuple(other[name].shape)}."
                )

    def _combine(self, other: Relevance, op: str) -> Relevance:
        self._check_compatible(other)
        fn = torch.sub if op == "-" else torch.add
        scores = {name: fn(self[name], other[name]) for name in self}
        info = replace(
            self.info,
            method=f"({self.method}) {op} ({other.method})",
            n_samples=self.info.n_samples + other.info.n_samples,
            n_tokens=self.info.n_tokens + other.info.n_tokens,
        )
        return Relevance(scores, info)

    def __sub__(self, other: Relevance) -> Relevance:
        return self._combine(other, "-")

    def __add__(self, other: Relevance) -> Relevance:
        return self._combine(other, "+")

    def _map(self, fn, label: str) -> Relevance:
        return Relevance({n: fn(t) for n, t in self.items()}, replace(self.info, method=label))

    def __mul__(self, factor: float) -> Relevance:
        return self._map(lambda t: t * factor, f"{factor} * ({self.method})")

    __rmul__ = __mul__

    def __truediv__(self, factor: float) -> Relevance:
        return self._map(lambda t: t / factor, f"({self.method}) / {factor}")

    def __neg__(self) -> Relevance:
        return self._map(torch.neg, f"-({self.method})")

    def __abs__(self) -> Relevance:
        return self._map(torch.abs, f"|{self.method}|")

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write one ``.safetensors`` file (atomically: temp file + rename); an existing file raises
        ``FileExistsError`` unless ``overwrite``."""
        meta = {"format": _FORMAT_VERSION, **asdict(self.info)}
        save_tensors(path, self, _METADATA_KEY, meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Relevance:
        """Read a file written by :meth:`save`. Never unpickles anything."""
        scores, meta = load_tensors(path, _METADATA_KEY, "relevance")
        if meta.pop("format", None) != _FORMAT_VERSION:
            raise ValueError(f"{os.fspath(path)} is not hf_sparc relevance format {_FORMAT_VERSION}.")
        try:
            return cls(scores, RelevanceInfo(**meta))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{os.fspath(path)} has malformed hf_sparc relevance metadata: {error}"
            ) from error
