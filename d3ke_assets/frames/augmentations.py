"""Test-time augmentations of the processed frames, each at named severities.

Every augmentation works on the network's input crops (uint8, (B, 3, S, S)).  Only `flip`
changes what the picture shows (a mirrored person, scored against mirrored labels); the others
keep the labels: resizing loses detail, cropping moves and enlarges the person in the box as an
imprecise detector would, brightness and contrast change the exposure.  A flip has no degree,
so it has a single severity.
"""

from __future__ import annotations

import torch

# name -> severities (the parameter each severity applies)
AUGMENTATIONS: dict[str, tuple[float, ...]] = {
    "clean": (0.0,),
    "flip": (1.0,),
    "resize": (0.75, 0.5, 0.25),  # downscale factor, then back up
    "crop": (0.05, 0.10, 0.20),  # box offset as a share of its side; zoom 1 + 1.5 x this
    "brightness": (1.3, 1.6, 2.0),  # factor
    "contrast": (1.3, 1.6, 2.0),  # factor
}


def augment_images(images: torch.Tensor, name: str, severity: float) -> torch.Tensor:
    """The crops as the augmentation `name` at `severity` leaves them (uint8 in, uint8 out)."""
    import torchvision.transforms.v2.functional as TF

    if name == "clean":
        return images
    if name == "flip":
        return TF.horizontal_flip(images)
    if name == "resize":
        size = images.shape[-1]
        small = max(4, round(size * severity))
        down = TF.resize(images, [small, small], antialias=True)
        return TF.resize(down, [size, size], antialias=True)
    if name == "crop":
        size = images.shape[-1]
        zoom = 1.0 + 1.5 * severity
        shift = severity * size
        return TF.affine(images, angle=0.0, translate=[shift, shift], scale=zoom, shear=[0.0, 0.0])
    if name == "brightness":
        return TF.adjust_brightness(images, severity)
    if name == "contrast":
        return TF.adjust_contrast(images, severity)
    raise ValueError(f"augmentation {name!r} does not exist: use one of {', '.join(AUGMENTATIONS)}")


def conditions() -> list[tuple[str, float]]:
    return [(name, s) for name, severities in AUGMENTATIONS.items() for s in severities]
