"""Reading the axes a TIFF file's metadata gives (`napari_blurfit.io`), on files tifffile writes."""

import numpy as np
import pytest
import tifffile

from napari_blurfit.io import frame_names, read_axes, read_image, spatial_axes_of


@pytest.mark.parametrize("shape, kwargs, axes, spatial", [
    ((3, 32, 40), {"imagej": True, "metadata": {"axes": "CYX"}}, "CYX", (-2, -1)),
    ((4, 2, 32, 40), {"imagej": True, "metadata": {"axes": "ZCYX"}}, "ZCYX", (-4, -2, -1)),
    ((5, 32, 40), {"imagej": True, "metadata": {"axes": "TYX"}}, "TYX", (-2, -1)),
    ((3, 32, 40), {"ome": True, "metadata": {"axes": "CYX"}}, "CYX", (-2, -1)),
    ((32, 40, 3), {"photometric": "rgb"}, "YXS", (-3, -2)),
    ((6, 32, 40), {}, "QYX", None),  # a plain stack: nothing says what its first axis is
    ((32, 40), {}, "YX", None),
])
def test_axes_from_tiff_metadata(tmp_path, shape, kwargs, axes, spatial):
    path = tmp_path / "image.tif"
    data = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    tifffile.imwrite(path, data, **kwargs)
    assert read_axes(path) == axes
    assert len(axes) == read_image(path).ndim
    assert spatial_axes_of(axes) == spatial


def test_no_axes_without_tiff_metadata(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 8, 8)))
    (tmp_path / "broken.tif").write_text("not a TIFF")
    assert read_axes(tmp_path / "a.npy") is None
    assert read_axes(tmp_path / "broken.tif") is None
    assert read_axes(tmp_path / "missing.tif") is None
    assert spatial_axes_of(None) is None and spatial_axes_of("ZYX") is None
    assert spatial_axes_of("CZX") is None  # no Y: not an image this reads


def test_frame_names():
    assert frame_names("TZCYX") == ["time points", "channels"]
    assert frame_names("YXS") == ["channels (samples)"]
    assert frame_names("ZYX") == []
