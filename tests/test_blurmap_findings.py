"""Blur maps carry findings: what applies to the whole map, and why a tile is left out."""

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_blurfit import BlurFitWarning, blur_map
from napari_blurfit._gaussian import GaussianKernel
from napari_blurfit.sample_data import load_sample_pair


@pytest.fixture(scope="module")
def sample():
    return load_sample_pair()


def test_a_map_of_a_pair_that_needs_gain_offset_says_so(sample):
    reference, target = sample  # target = 0.7 * G_2.5(reference) + 12 + noise
    with pytest.warns(BlurFitWarning, match=r"in 16 of 16 tiles: a gain/offset would more than halve"):
        m = blur_map(reference, target, tile=128, overlap=0.5)
    assert [f.code for f in m.findings] == ["brightness"]
    assert m.findings[0].suggestion == {"gain_offset": True}
    assert m.findings[0].values["tiles"] == 16 and m.notes == (m.findings[0].text,)
    fixed = blur_map(reference, target, tile=128, overlap=0.5, gain_offset=True)
    assert fixed.findings == () and np.nanmax(np.abs(fixed.sigma - 2.5)) < 0.06
    assert json.loads(json.dumps(fixed.to_dict()))["findings"] == []


def test_tiles_whose_sigma_the_rounding_decides_are_nan_with_a_reason(sample):
    """A uint8 blur ramp 0.5 -> 4 px: where the blur changes the tile by under a grey level."""
    reference = sample[0].astype(np.float64)
    sigma = np.round(0.5 + 3.5 * np.arange(reference.shape[1]) / (reference.shape[1] - 1), 1)
    ramp = np.empty_like(reference)
    for s in np.unique(sigma):
        ramp[:, sigma == s] = ndimage.gaussian_filter(reference, s)[:, sigma == s]
    with pytest.warns(BlurFitWarning) as warned:
        m = blur_map(sample[0], np.round(ramp).astype(np.uint8), tile=64)
    assert [str(w.message) for w in warned] == list(m.notes)
    lacking = m.reason == "lacks detail"
    assert lacking[:, 0].all() and not lacking[:, -1].any()  # the sharp side, not the blurred one
    assert np.isnan(m.sigma[lacking]).all() and np.isfinite(m.sigma[m.reason == ""]).all()
    assert {f.code for f in m.findings} == {"lacks_detail", "unmeasured_tiles"}
    unmeasured = next(f for f in m.findings if f.code == "unmeasured_tiles")
    assert unmeasured.values["reasons"] == {"lacks detail": int(lacking.sum())}
    # the tiles that are measured follow the ramp: within 12% of each tile's central sigma
    good = m.reason == ""
    centre = 0.5 + 3.5 * m.centers[..., 1] / (reference.shape[1] - 1)
    assert np.all(np.abs(m.sigma[..., 1][good] / centre[good] - 1) < 0.12)


def test_a_misaligned_pair_gets_one_map_finding_with_the_median_shift(sample):
    reference = sample[0].astype(np.float64)
    moved = GaussianKernel.from_sigma((2.0, 2.0), (1.2, -0.8)).apply(reference)
    moved += np.random.default_rng(0).normal(0, 0.5, moved.shape)
    with pytest.warns(BlurFitWarning, match="misaligned"):
        m = blur_map(reference, moved, tile=160, overlap=0.0)
    (finding,) = m.findings
    assert finding.code == "misaligned" and finding.suggestion == {"shift": True}
    np.testing.assert_allclose(finding.values["shift"], (1.2, -0.8), atol=0.15)
    assert blur_map(reference, moved, tile=160, overlap=0.0, shift=True).findings == ()
