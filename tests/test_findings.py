"""Findings as data: each a code, the options to refit with, the numbers behind it and the sentence."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
from finding_cases import CASES, TRUE_SHIFT, core_findings, core_fits
from scipy import ndimage

from napari_blurfit import BlurFitWarning, Finding, fit_blur, fit_blur_stack

CODES = {"brightness", "target_sharper", "not_identifiable", "at_bound", "nonfinite_excluded",
         "not_gaussian", "elliptical", "misaligned", "rotated", "no_fit", "note"}


def noise(image, fraction=0.002, seed=0):
    return np.random.default_rng(seed).normal(0, fraction * np.ptp(image), image.shape)


@pytest.fixture(scope="module")
def blurred(camera):
    return ndimage.gaussian_filter(camera, 2.0)


def test_a_shifted_pair_is_misaligned_by_the_true_shift(camera, blurred):
    """ndimage.shift of a blurred photograph, fitted without shift: the finding holds the shift.

    Observed (256 px crop, sigma 2): within 0.001 px of the true shift with 0.2% noise, 0.004 px
    with 1%, for shifts of 0.6 to 2.8 px; asserted to 0.01 px.
    """
    target = ndimage.shift(blurred, TRUE_SHIFT) + noise(camera)
    fit = fit_blur(camera, target, warn=False)
    (finding,) = fit.findings
    assert finding.code == "misaligned" and finding.suggestion == {"shift": True}
    np.testing.assert_allclose(finding.values["shift"], TRUE_SHIFT, atol=0.01)
    assert finding.values["distance"] == pytest.approx(np.hypot(*TRUE_SHIFT), abs=0.01)
    refit = fit_blur(camera, target, **finding.suggestion)  # acting on it: no finding, no warning
    np.testing.assert_allclose(refit.shift, TRUE_SHIFT, atol=0.05)
    assert refit.sigma[0] == pytest.approx(2.0, rel=0.01) and refit.findings == ()


def test_a_pair_with_a_gain_asks_for_gain_offset(camera, blurred):
    target = 0.8 * blurred + 30 + noise(camera)
    fit = fit_blur(camera, target, warn=False)
    finding = next(f for f in fit.findings if f.code == "brightness")
    assert finding.suggestion == {"gain_offset": True}
    assert 0 <= finding.values["loss_ratio"] < 0.5
    refit = fit_blur(camera, target, **finding.suggestion)
    assert refit.gain == pytest.approx(0.8, rel=0.01) and refit.findings == ()


def test_a_clean_pair_has_no_findings(camera, blurred):
    fit = fit_blur(camera, blurred + noise(camera))
    assert fit.findings == () and fit.notes == ()


def test_suggestions_are_fit_blur_options_that_act(camera, blurred):
    """Refitting with a finding's suggestion answers it: wider bounds, the other direction."""
    bound = fit_blur(camera, blurred, sigma_bounds=(0, 1.5), warn=False)
    (finding,) = bound.findings
    assert finding.code == "at_bound" and finding.suggestion == {"sigma_bounds": (0.0, 3.0)}
    assert finding.values == {"sigma": pytest.approx((1.5, 1.5), rel=1e-3), "sigma_bounds": (0.0, 1.5)}
    assert fit_blur(camera, blurred, **finding.suggestion).sigma[0] == pytest.approx(2.0, rel=1e-3)
    swapped = fit_blur(blurred, camera, warn=False)
    (finding,) = swapped.findings
    assert finding.code == "target_sharper" and finding.suggestion == {"reverse": True}
    assert finding.values["reverse_sigma"] == pytest.approx(2.0, rel=1e-3)
    assert fit_blur(blurred, camera, **finding.suggestion).sigma[0] == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize("case", list(CASES))
def test_every_code_the_core_gives(case):
    """Notes are the findings' texts; a suggestion names the options as fit_blur takes them."""
    fit, finding = core_fits()[case], core_findings()[case]
    assert fit.notes == tuple(f.text for f in fit.findings)
    assert all(isinstance(f, Finding) for f in fit.findings)
    for option in finding.suggestion:
        assert option in fit_blur.__kwdefaults__ and option in finding.text
    json.dumps(finding.to_dict(), allow_nan=False)  # plain, finite JSON


def test_the_cases_cover_every_code():
    assert set(CASES.values()) == CODES


def test_findings_values(camera):
    """The numbers behind a few findings."""
    found = core_findings()
    assert found["NaN pixels"].values == {"n_nonfinite": 192}
    sigma = found["elliptical"].values["sigma"]
    assert sigma[0] < sigma[1] and found["elliptical"].values["loss_reduction"] > 0.05
    rotated = found["rotated"].values
    assert rotated["principal_sigmas"][0] == pytest.approx(3.0, rel=0.1)
    assert abs(rotated["angle"]) == pytest.approx(45, abs=5)
    assert found["identity"].values["sigma"] < 0.3
    assert 0.3 <= found["box blur"].values["share"] <= 1
    assert "constant" in found["blank frame"].values["reason"]
    assert found["reference sharper"].suggestion == {"reverse": False}


def test_warnings_are_the_notes(camera, blurred):
    target = ndimage.shift(blurred, TRUE_SHIFT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_blur(camera, 0.8 * target + 30)
    assert [str(w.message) for w in caught if w.category is BlurFitWarning] == list(fit.notes)
    assert len(fit.notes) >= 2


def test_json_round_trip(camera, blurred):
    fit = fit_blur(camera, ndimage.shift(blurred, TRUE_SHIFT), warn=False)
    d = json.loads(fit.to_json())
    assert d["findings"] == [f.to_dict() for f in fit.findings]
    assert d["notes"] == [f["text"] for f in d["findings"]]
    back = [Finding(**f) for f in d["findings"]]
    assert [(f.code, f.suggestion, f.text) for f in back] == \
        [(f.code, f.suggestion, f.text) for f in fit.findings]
    np.testing.assert_allclose(back[0].values["shift"], fit.findings[0].values["shift"])


def test_every_result_has_findings(camera, blurred):
    """Stacks (a failed frame too) and hand-built results carry findings beside their notes."""
    stack = np.stack([camera, np.full_like(camera, 3.0)])
    ok, failed = fit_blur_stack(stack, ndimage.gaussian_filter(stack, (0, 2, 2)), warn=False)
    assert ok.findings == ()
    (finding,) = failed.findings
    assert finding.code == "no_fit" and failed.notes == (finding.text,)
    assert finding.text == f"no fit: {finding.values['reason']}"
    by_hand = dataclasses.replace(ok, notes=("looked at it",), findings=())
    assert by_hand.findings == (Finding("note", {}, {}, "looked at it"),)
    # findings decide: a replace that adds one (passing the old notes along) gives notes that follow
    added = dataclasses.replace(by_hand, findings=by_hand.findings + (Finding("x", {}, {}, "more"),))
    assert added.notes == ("looked at it", "more")


def test_finding_is_a_frozen_record():
    f = Finding("misaligned", {"shift": True}, {"shift": (0.5, 0.0)}, "fit with shift=True")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.code = "other"
    assert hash(f) == hash(Finding("misaligned", {"shift": True}, {"shift": (0.5, 0.0)}, f.text))
    assert f.to_dict() == {"code": "misaligned", "suggestion": {"shift": True},
                           "values": {"shift": [0.5, 0.0]}, "text": "fit with shift=True"}
    with pytest.raises(ValueError, match="code"):
        Finding("", {}, {}, "")
