"""Janus metrics on 120 turntable views (the paper's protocol), against the synthetic prior's known answer.

- **Aligned PSNR**: PSNR of the 120 views against the reference object's 120 views at the best azimuth offset
  (the prior never tells the absolute orientation), from the mean squared error over all views.
- **Face count**: each view is labelled frontal when its nearest prior image (L2, among the K prior images) has
  |azimuth| < 45 deg; the face count is the number of separate (circular) arcs of frontal views. Janus = more
  than one face. An object showing a face in every view has one arc, so the **frontal fraction** (share of frontal
  views) is reported too, next to the reference's own value.
- **Against the reference's own labels** (the same classifier applied to the reference's views, so that an object
  whose side views resemble frontal ones at this size is not counted as Janus): **excess faces** = max(0, face
  count - the reference's), **frontal-share gap** = frontal fraction - the reference's, and **side accuracy** = the
  share of views, at the aligned offset, whose side (the nearest prior image's azimuth quadrant: front, left, back,
  right) matches the reference view's.
- **True back share** (against the reference's two-faced twin, ``reference_objects.two_faced``: its front mirrored
  onto its back): of the views within 45 degrees of the back (at the aligned offset), the share closer (mean squared
  pixel error) to the reference's view than to the twin's. A back that is a second front is closer to the twin's, so
  this sees a second front on objects whose back the nearest-image classifier reads as frontal (the car, the bus),
  and whatever the classifier says. NaN when no twin was given.
- **The verdict** (``JanusMetrics.one_face``, the benchmark's target per run): no excess face, a frontal-share gap
  within ``SHARE_TOLERANCE`` of 0, and a true back share above one half.
- **IQ / IV** (paper eq. 10): with the classifier p(y | x) = softmax over the prior's azimuth bins (``num_bins`` of
  equal width, bin 0 centred on the front) of minus the distance to the nearest prior image of each bin divided by
  ``temperature`` (distances are mean squared pixel errors in [0, 1] units): IQ = mean entropy of p(y | x_v) (lower:
  more confident, better views), IV = entropy of the mean p(y | x_v) (higher: more varied views). Entropies in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cameras import wrap_azimuth
from . import quality

FRONTAL_HALF_WIDTH = 45.0
BACK_HALF_WIDTH = 45.0
"""Views within this many degrees of the back (azimuth 180, at the aligned offset) are compared with the twin's."""
SHARE_TOLERANCE = 0.1
"""The verdict's largest frontal-share gap: a run's frontal share within this of the reference's."""
DISTINCT_MSE = 1e-6
"""A back view counts in the true back share only where the reference's and its twin's differ by more than this
(mean squared error, [0, 1] units)."""
TURNTABLE_VIEWS = 120
"""Views of the protocol's turntable (the paper's 120)."""
TURNTABLE_ELEVATION = 15.0
"""Elevation (degrees) of the protocol's turntable."""


@dataclass
class JanusMetrics:
    aligned_psnr: float
    best_offset_deg: float
    face_count: int
    frontal_fraction: float
    iq: float
    iv: float
    excess_faces: int = 0
    frontal_share_gap: float = 0.0
    side_accuracy: float = 1.0
    true_back_share: float = math.nan
    """Share of the back views closer to the reference's than to its two-faced twin's (NaN: not measured)."""

    @property
    def second_front(self) -> bool:
        """A second front: more faces than the reference shows, or a back closer to the twin's (not measured: no)."""
        return self.excess_faces > 0 or self.true_back_share <= 0.5

    @property
    def one_face(self) -> bool:
        """The verdict: no second front (both ways of seeing one measured) and the reference's frontal share within
        ``SHARE_TOLERANCE``. False when the twin was not compared."""
        return (
            self.excess_faces == 0
            and self.true_back_share > 0.5
            and abs(self.frontal_share_gap) <= SHARE_TOLERANCE + 1e-9
        )

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def aligned_psnr(views: Tensor, reference: Tensor) -> tuple[float, int]:
    """views, reference [V, 3, H, W] in [0, 1] on the same evenly spaced azimuths -> (best PSNR, best shift)."""
    best, best_shift = -math.inf, 0
    for shift in range(views.shape[0]):
        mse = (torch.roll(views, shifts=shift, dims=0) - reference).square().mean().item()
        psnr = 10.0 * math.log10(1.0 / max(mse, 1e-12))
        if psnr > best:
            best, best_shift = psnr, shift
    return best, best_shift


def nearest_prior_distances(views: Tensor, prior_images: Tensor, chunk: int = 256) -> Tensor:
    """Mean squared distance [V, K] between every view and every prior image (both [.., 3, H, W] in [0, 1])."""
    flat_views = views.reshape(views.shape[0], -1).float()
    out = []
    for start in range(0, prior_images.shape[0], chunk):
        block = prior_images[start : start + chunk].reshape(-1, flat_views.shape[1]).float()
        out.append((flat_views[:, None, :] - block[None]).square().mean(-1))
    return torch.cat(out, dim=1)


def count_arcs(flags: Tensor) -> int:
    """Number of maximal circular runs of True in a 1-D bool tensor (all True = 1 arc)."""
    flags = flags.bool()
    if flags.all():
        return 1
    if not flags.any():
        return 0
    starts = flags & ~torch.roll(flags, 1)
    return int(starts.sum())


def is_frontal(azimuths: Tensor) -> Tensor:
    """Azimuths (degrees) -> bool: a camera that looks at the front (|azimuth| < 45 after wrapping)."""
    return wrap_azimuth(azimuths).abs() < FRONTAL_HALF_WIDTH


def frontal_flags(distances: Tensor, prior_azimuths: Tensor) -> Tensor:
    """[V] bool: the views whose nearest prior image (``distances`` [V, K]) looks at the front (|azimuth| < 45)."""
    return is_frontal(prior_azimuths[distances.argmin(dim=1)])


def azimuth_bins(azimuths: Tensor, num_bins: int) -> Tensor:
    """Azimuths (degrees) -> bin indices in 0..num_bins-1, bins of equal width, bin 0 centred on the front."""
    width = 360.0 / num_bins
    return torch.floor(torch.remainder(azimuths + width / 2, 360.0) / width).long().clamp_max(num_bins - 1)


def inception_quality_variety(
    distances: Tensor, prior_azimuths: Tensor, num_bins: int = 8, temperature: float = 0.01
) -> tuple[float, float]:
    """(IQ, IV) of eq. 10 with the nearest-image azimuth-bin classifier described in the module docstring."""
    bins = azimuth_bins(prior_azimuths, num_bins)
    per_bin = torch.full((distances.shape[0], num_bins), math.inf)
    for b in range(num_bins):
        members = bins == b
        if members.any():
            per_bin[:, b] = distances[:, members].min(dim=1).values
    return quality.inception_quality_variety(torch.softmax(-per_bin / temperature, dim=1))


def view_sides(distances: Tensor, prior_azimuths: Tensor) -> Tensor:
    """[V] side of each view: the azimuth quadrant (0 front, 1 left, 2 back, 3 right) of its nearest prior image."""
    return azimuth_bins(prior_azimuths[distances.argmin(dim=1)], 4)


def back_views(count: int) -> Tensor:
    """[count] bool: the views of an evenly spaced turntable (view 0 at azimuth 0, the front) within
    ``BACK_HALF_WIDTH`` of the back."""
    azimuths = torch.arange(count, dtype=torch.float32) * 360.0 / count
    return wrap_azimuth(azimuths - 180.0).abs() <= BACK_HALF_WIDTH


def true_back_share(views: Tensor, reference_views: Tensor, twin_views: Tensor, shift: int) -> float:
    """Of the back views where the reference's and its twin's views differ, the share closer to the reference's than
    to its twin's, after turning ``views`` by the aligned ``shift`` (``aligned_psnr``'s); all [V, 3, H, W] on the
    same evenly spaced azimuths. NaN when no back view differs."""
    aligned = torch.roll(views, shifts=shift, dims=0)
    back = back_views(views.shape[0])
    # Only where the twin's view differs from the reference's can a view be closer to one of them: an object whose
    # back is its mirrored front (or whose front does not face +X) leaves none, and the share is NaN (not measured).
    back &= (reference_views - twin_views).square().flatten(1).mean(1) > DISTINCT_MSE

    def distance(other: Tensor) -> Tensor:
        return (aligned[back] - other[back]).square().flatten(1).mean(1)

    if not back.any():
        return math.nan
    return float((distance(reference_views) < distance(twin_views)).float().mean())


def janus_metrics(
    views: Tensor,
    reference_views: Tensor,
    prior_images: Tensor,
    prior_azimuths: Tensor,
    twin_views: Tensor | None = None,
) -> JanusMetrics:
    """All metrics for one result: views / reference_views / twin_views (the reference's two-faced twin, optional)
    [120, 3, H, W], prior images [K, 3, H, W], in [0, 1]."""
    psnr, shift = aligned_psnr(views, reference_views)
    distances = nearest_prior_distances(views, prior_images)
    flags = frontal_flags(distances, prior_azimuths)
    iq, iv = inception_quality_variety(distances, prior_azimuths)
    reference_distances = nearest_prior_distances(reference_views, prior_images)
    reference_flags = frontal_flags(reference_distances, prior_azimuths)
    aligned_sides = torch.roll(view_sides(distances, prior_azimuths), shifts=shift, dims=0)  # as aligned_psnr aligns
    face_count, frontal_fraction = count_arcs(flags), float(flags.float().mean())
    return JanusMetrics(
        aligned_psnr=psnr,
        best_offset_deg=shift * 360.0 / views.shape[0],
        face_count=face_count,
        frontal_fraction=frontal_fraction,
        iq=iq,
        iv=iv,
        excess_faces=max(0, face_count - count_arcs(reference_flags)),
        frontal_share_gap=frontal_fraction - float(reference_flags.float().mean()),
        side_accuracy=float((aligned_sides == view_sides(reference_distances, prior_azimuths)).float().mean()),
        true_back_share=math.nan if twin_views is None else true_back_share(views, reference_views, twin_views, shift),
    )
