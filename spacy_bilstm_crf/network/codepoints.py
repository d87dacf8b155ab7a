"""Code point normalization shared by the network's character table, its lexicon and LAC."""
import torch
from torch import Tensor


def normalize_codepoints(codepoints: Tensor) -> Tensor:
    """Fold full-width ASCII to half-width, the ideographic space to a space and A-Z to a-z.

    Chinese text mixes full- and half-width forms of the same letters and digits;
    folding them gives each one embedding and makes rare forms less rare.
    """
    cp = codepoints
    cp = torch.where((cp >= 0xFF01) & (cp <= 0xFF5E), cp - 0xFEE0, cp)
    cp = torch.where(cp == 0x3000, torch.full_like(cp, 0x20), cp)
    return torch.where((cp >= 0x41) & (cp <= 0x5A), cp + 32, cp)
