"""The reference kernels: eager (matmul + softmax), sdpa, and FlexAttention (CUDA only here)."""

from __future__ import annotations

from pytest_attnlab.attention.base import KernelVariant


def eager() -> KernelVariant:
    return KernelVariant("eager", implementation="eager")


def sdpa() -> KernelVariant:
    return KernelVariant("sdpa", implementation="sdpa")


def flex() -> KernelVariant:
    """transformers' FlexAttention path (torch.compile'd); on CPU its compile takes minutes, so CUDA only."""
    return KernelVariant("flex", implementation="flex_attention", needs_cuda=True)
