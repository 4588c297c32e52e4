"""ImageNet class names and the service's label format ("<index> <name>")."""

from __future__ import annotations

import functools


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in index order (from torchvision's metadata: no
    download; the names are the same for every torchvision ImageNet classifier)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def label_of(index: int) -> str:
    """``"<index> <name>"``; just ``"<index>"`` for a class beyond ImageNet's 1000."""
    categories = imagenet_categories()
    if 0 <= index < len(categories):
        return f"{index} {categories[index]}"
    return str(index)
