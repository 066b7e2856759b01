"""Gemma 3 text decoders: Llama's layout (gated GELU MLP; the q/k norms and the (1 + w) RMSNorm
are handled by the generic norm rule)."""

from dataclasses import replace

from hf_sparc.architectures.llama import LLAMA

GEMMA3 = replace(LLAMA, name="Gemma3", model_types=("gemma3_text",))
