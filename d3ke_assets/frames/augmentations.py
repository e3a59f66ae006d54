"""Augmentations of the processed frames: train-time (random, `train_augment`) and test-time (named,
at fixed severities, `augment_images`), side by side as torchvision's reference scripts keep their
train and eval presets, built from one set of image operations.  A new augmentation is one edit
here: an image operation below, then a draw in `train_augment` or an entry in `AUGMENTATIONS`.

Every augmentation works on the network's input crops (uint8, (B, 3, S, S) or (3, S, S)).

Train-time, by policy (`POLICIES`): `current` draws small shifts, scales, in-plane rotations and
colour changes; `robust` adds what the test-time augmentations show (mirroring, resolution loss, a
large box offset with zoom, strong brightness and contrast), each drawn with a probability per
sample.  The rotation turns the camera-frame labels with the picture; a mirrored sample is flagged
so that its labels are mirrored too (`learning.mirror.Mirror.camera_targets`).  Draws
(`draw_train_augmentation`) are kept apart from applying them (`apply_train_augmentation`), so the
sequence model's training can apply one draw to every frame of a video.

Test-time: only `flip` changes what the picture shows (a mirrored person, scored against mirrored
labels); the others keep the labels: resizing loses detail, cropping moves and enlarges the person
in the box as an imprecise detector would, brightness and contrast change the exposure.  A flip
has no degree, so it has a single severity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from d3ke_assets.errors import D3keError


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


@dataclass(frozen=True)
class AugmentPolicy:
    """What a training policy adds to the small shift, scale, rotation and colour changes every
    sample gets (their ranges are the training configuration's max_shift, max_scale,
    max_rotation_deg and colour).  Each addition is drawn per sample with its probability."""

    name: str
    flip_probability: float = 0.0  # mirrored picture, mirrored labels
    resize_probability: float = 0.0
    resize_range: tuple[float, float] = (1.0, 1.0)  # down to this share of the side and back up
    offset_probability: float = 0.0
    offset_range: float = 0.0  # box offset per axis, as a share of the side, in place of the small shift
    zoom_range: tuple[float, float] = (1.0, 1.0)  # with the offset, in place of the small scale
    colour_probability: float = 0.0
    colour_range: tuple[float, float] = (1.0, 1.0)  # brightness and contrast factors, each drawn


POLICIES: dict[str, AugmentPolicy] = {
    "current": AugmentPolicy("current"),
    # covers the test-time severities (resize down to 0.25, crop offsets up to 0.2 with zoom 1.3,
    # brightness and contrast up to 2.0) with some room.  Probabilities: at 0.5 / 0.3 / 0.3 / 0.3 the
    # demo's augmented errors stayed within 0.4 deg of clean but clean rose 17% over `current` in the
    # same training budget; about half the samples now stay near-clean
    "robust": AugmentPolicy("robust", flip_probability=0.25, resize_probability=0.15, resize_range=(0.2, 0.9),
                            offset_probability=0.15, offset_range=0.25, zoom_range=(1.0, 1.4),
                            colour_probability=0.15, colour_range=(0.6, 2.2)),
}


def augment_policy(name: str) -> AugmentPolicy:
    if name not in POLICIES:
        raise D3keError(f"augmentation policy {name!r} does not exist: use one of {', '.join(POLICIES)} "
                        f"(augment_policy)")
    return POLICIES[name]


@dataclass
class TrainDraws:
    """One draw per sample (tensors of length B): what `apply_train_augmentation` does to it."""

    angle_deg: torch.Tensor
    zoom: torch.Tensor
    shift_x: torch.Tensor  # share of the side
    shift_y: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    flip: torch.Tensor  # bool
    resize: torch.Tensor  # 1.0: not resized

    def take(self, rows: torch.Tensor) -> "TrainDraws":
        """The draws of `rows` (e.g. one draw per video repeated over its frames)."""
        return TrainDraws(**{k: v[rows] for k, v in self.__dict__.items()})


def draw_train_augmentation(b: int, config, generator: torch.Generator, can_mirror: bool = True) -> TrainDraws:
    """`b` draws of `config`'s policy (`config.augment_policy`, default `current`).  The `current`
    draws come first and in today's order, so a `current` training is the one it always was.
    `can_mirror` False (a model without left/right pairs): no sample is mirrored, the draws
    otherwise the same."""
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=generator)  # noqa: E731
    angles = u(-config.max_rotation_deg, config.max_rotation_deg)
    zoom = u(1 - config.max_scale, 1 + config.max_scale)
    shift_x, shift_y = u(-config.max_shift, config.max_shift), u(-config.max_shift, config.max_shift)
    bright, contr = u(1 - config.colour, 1 + config.colour), u(1 - config.colour, 1 + config.colour)
    draws = TrainDraws(angles, zoom, shift_x, shift_y, bright, contr, torch.zeros(b, dtype=torch.bool),
                       torch.ones(b))
    policy = augment_policy(getattr(config, "augment_policy", "current"))
    if policy.name == "current":
        return draws
    chance = lambda p: torch.rand(b, generator=generator) < p  # noqa: E731
    draws.flip = chance(policy.flip_probability) & can_mirror
    resized, factor = chance(policy.resize_probability), u(*policy.resize_range)
    draws.resize = torch.where(resized, factor, draws.resize)
    offset = chance(policy.offset_probability)
    r = policy.offset_range
    draws.shift_x = torch.where(offset, u(-r, r), draws.shift_x)
    draws.shift_y = torch.where(offset, u(-r, r), draws.shift_y)
    draws.zoom = torch.where(offset, u(*policy.zoom_range), draws.zoom)
    strong = chance(policy.colour_probability)
    draws.brightness = torch.where(strong, u(*policy.colour_range), draws.brightness)
    draws.contrast = torch.where(strong, u(*policy.colour_range), draws.contrast)
    return draws


def apply_train_augmentation(images: torch.Tensor, camera_R: torch.Tensor, draws: TrainDraws
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(augmented images, camera rotations turned with them, which samples are mirrored).

    Order: rotation, offset and zoom about the crop centre, then the mirror, resolution loss and
    colour.  The in-plane rotation turns the camera about its viewing axis, so the camera-frame
    labels turn with it; a mirrored sample's labels are those of the rotated camera, mirrored."""
    b, size = images.shape[0], images.shape[-1]
    out = []
    for k in range(b):
        img = affine(images[k], float(draws.angle_deg[k]),
                     (float(draws.shift_x[k]) * size, float(draws.shift_y[k]) * size), float(draws.zoom[k]))
        if draws.flip[k]:
            img = flip(img)
        if draws.resize[k] < 1.0:
            img = resize_through(img, float(draws.resize[k]))
        out.append(contrast(brightness(img, float(draws.brightness[k])), float(draws.contrast[k])))
    # torchvision turns a positive angle clockwise on screen (x right, y down): (x, y) -> (x c - y s, x s + y c)
    # about the crop centre; the camera-frame labels turn the same way about the viewing axis z
    theta = torch.deg2rad(draws.angle_deg)
    c, s = torch.cos(theta), torch.sin(theta)
    rz = torch.zeros(b, 3, 3)
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
    return torch.stack(out), rz @ camera_R.float(), draws.flip.clone()


def train_augment(images: torch.Tensor, camera_R: torch.Tensor, config,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch drawn and augmented by `config`'s policy: (images, camera rotations, mirrored).  The
    draws come from `generator` in a fixed order, so a training is reproducible."""
    return apply_train_augmentation(images, camera_R, draw_train_augmentation(images.shape[0], config, generator))


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
