"""Augmentations of the processed frames: train-time (random, `train_augment`) and test-time (named,
at fixed severities, `augment_images`), side by side as torchvision's reference scripts keep their
train and eval presets, built from one set of image operations.  A new augmentation is one edit
here: an image operation below, then a draw in `train_augment` or an entry in `AUGMENTATIONS`.

Every augmentation works on the network's input crops (uint8, (B, 3, S, S) or (3, S, S)).

Train-time: shift, scale, in-plane rotation and colour (no flip); the rotation turns the
camera-frame labels with the picture.

Test-time: only `flip` changes what the picture shows (a mirrored person, scored against mirrored
labels); the others keep the labels: resizing loses detail, cropping moves and enlarges the person
in the box as an imprecise detector would, brightness and contrast change the exposure.  A flip
has no degree, so it has a single severity.
"""

from __future__ import annotations

import torch


def _tf():
    # imported when first used: torchvision's import is slow and most callers of frames never augment
    import torchvision.transforms.v2.functional as TF

    return TF


# ---------------------------------------------------------------- image operations (both uses)


def affine(images: torch.Tensor, angle_deg: float, shift_px: tuple[float, float], zoom: float) -> torch.Tensor:
    """Rotated by `angle_deg` (clockwise on screen), shifted by (x, y) pixels and zoomed about the centre."""
    return _tf().affine(images, angle=angle_deg, translate=[shift_px[0], shift_px[1]], scale=zoom, shear=[0.0, 0.0])


def brightness(images: torch.Tensor, factor: float) -> torch.Tensor:
    return _tf().adjust_brightness(images, factor)


def contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    return _tf().adjust_contrast(images, factor)


def resize_through(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Down to `factor` of the side (at least 4 px) and back up: the detail a smaller picture loses."""
    size = images.shape[-1]
    small = max(4, round(size * factor))
    down = _tf().resize(images, [small, small], antialias=True)
    return _tf().resize(down, [size, size], antialias=True)


def flip(images: torch.Tensor) -> torch.Tensor:
    return _tf().horizontal_flip(images)


# ---------------------------------------------------------------- train-time


def train_augment(images: torch.Tensor, camera_R: torch.Tensor, config,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random shift, scale, in-plane rotation and colour of a batch, and the camera rotations turned
    with it.  `config` has max_rotation_deg, max_scale, max_shift (of the crop size) and colour
    (a TrainConfig).  The in-plane rotation turns the camera about its viewing axis, so the
    camera-frame labels turn with it.  The draws come from `generator` in a fixed order, so a
    training is reproducible."""
    b = images.shape[0]
    size = images.shape[-1]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=generator)  # noqa: E731
    angles = u(-config.max_rotation_deg, config.max_rotation_deg)
    scales = u(1 - config.max_scale, 1 + config.max_scale)
    shifts = u(-config.max_shift, config.max_shift) * size, u(-config.max_shift, config.max_shift) * size
    bright, contr = u(1 - config.colour, 1 + config.colour), u(1 - config.colour, 1 + config.colour)
    out = []
    for k in range(b):
        img = affine(images[k], float(angles[k]), (float(shifts[0][k]), float(shifts[1][k])), float(scales[k]))
        out.append(contrast(brightness(img, float(bright[k])), float(contr[k])))
    # torchvision turns a positive angle clockwise on screen (x right, y down): (x, y) -> (x c - y s, x s + y c)
    # about the crop centre; the camera-frame labels turn the same way about the viewing axis z
    theta = torch.deg2rad(angles)
    c, s = torch.cos(theta), torch.sin(theta)
    rz = torch.zeros(b, 3, 3)
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
    return torch.stack(out), rz @ camera_R


# ---------------------------------------------------------------- test-time

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
    """The crops as the test-time augmentation `name` at `severity` leaves them (uint8 in, uint8 out)."""
    if name == "clean":
        return images
    if name == "flip":
        return flip(images)
    if name == "resize":
        return resize_through(images, severity)
    if name == "crop":
        shift = severity * images.shape[-1]
        return affine(images, 0.0, (shift, shift), 1.0 + 1.5 * severity)
    if name == "brightness":
        return brightness(images, severity)
    if name == "contrast":
        return contrast(images, severity)
    raise ValueError(f"augmentation {name!r} does not exist: use one of {', '.join(AUGMENTATIONS)}")


def conditions() -> list[tuple[str, float]]:
    """Every (name, severity) the evaluation runs."""
    return [(name, s) for name, severities in AUGMENTATIONS.items() for s in severities]
