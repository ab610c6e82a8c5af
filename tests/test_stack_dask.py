"""Stacks (joint and per frame), blur maps, and dask arrays: local and on a distributed cluster."""

import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
from brute import loss_value
from scipy import ndimage, optimize

from napari_blurfit import BlurFitWarning, blur_map, fit_blur, fit_blur_stack


@pytest.fixture(scope="module")
def frames(camera):
    """6 different real 96x96 frames, blurred with sigma 2.0 plus noise."""
    ref = np.stack([camera[i * 25 : i * 25 + 96, i * 30 : i * 30 + 96] for i in range(6)])
    rng = np.random.default_rng(0)
    tgt = np.stack([ndimage.gaussian_filter(f, 2.0) for f in ref]) + rng.normal(0, 3, ref.shape)
    return ref, tgt


def joint_brute(ref, tgt, loss, delta=None):
    """Brute-force joint optimum: dense grid then bounded Brent, summing the loss over frames."""
    def f(s):
        model = np.stack([ndimage.gaussian_filter(a, s) for a in ref])
        return loss_value(model - tgt, loss, delta)
    grid = np.geomspace(0.3, 10, 60)
    values = [f(s) for s in grid]
    i = int(np.argmin(values))
    res = optimize.minimize_scalar(f, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, 59)]),
                                   method="bounded", options={"xatol": 1e-7})
    return min(res.fun, min(values)), res.x


@pytest.mark.parametrize("loss", ["l2", "l1", "huber"])
def test_joint_fit_is_the_brute_force_joint_optimum(frames, loss):
    ref, tgt = frames
    fit = fit_blur(ref, tgt, spatial_axes=(-2, -1), loss=loss)
    best, best_sigma = joint_brute(ref, tgt, loss, fit.huber_delta)
    assert fit.loss <= best * (1 + 1e-4)
    assert fit.sigma[0] == pytest.approx(best_sigma, rel=1e-3)
    assert fit.n_pixels == ref.size


def test_joint_spatial_axes_anywhere(frames):
    ref, tgt = frames
    moved = fit_blur(np.moveaxis(ref, 0, 2), np.moveaxis(tgt, 0, 2), spatial_axes=(0, 1))
    assert moved.sigma == pytest.approx(fit_blur(ref, tgt, spatial_axes=(1, 2)).sigma, rel=1e-9)


def test_per_frame_fits_and_a_blank_frame(frames):
    ref, _ = frames
    sigmas = [0.8, 1.5, 2.5, 4.0, 6.0, 1.0]
    tgt = np.stack([ndimage.gaussian_filter(f, s) for f, s in zip(ref, sigmas)])
    ref = ref.copy()
    ref[5] = 7.0  # a blank frame must not abort the stack
    with pytest.warns(BlurFitWarning, match="1 of 6 frame"):
        fits = fit_blur_stack(ref, tgt)
    np.testing.assert_allclose([f.sigma[0] for f in fits[:5]], sigmas[:5], rtol=1e-3)
    assert np.isnan(fits[5].sigma[0]) and "reference is constant" in fits[5].notes[0]


def test_per_frame_3d_frames_with_time_axis(volume):
    vols = np.stack([volume, volume[:, ::-1]])  # (t, z, y, x)
    tgt = np.stack([ndimage.gaussian_filter(volume, (1.0, 2.0, 2.0)),
                    ndimage.gaussian_filter(volume[:, ::-1], (1.5, 3.0, 3.0))])
    fits = fit_blur_stack(vols, tgt, spatial_axes=(1, 2, 3), per_axis=True)
    np.testing.assert_allclose(fits[0].sigma, (1.0, 2.0, 2.0), rtol=1e-3)
    np.testing.assert_allclose(fits[1].sigma, (1.5, 3.0, 3.0), rtol=1e-3)


@pytest.mark.slow
def test_blur_map_follows_varying_blur_and_flags_flat_tiles(camera):
    a = camera.copy()
    a[:, :64] = 100.0  # a flat band: not measurable
    tgt = np.empty_like(a)
    for j, s in enumerate([1.0, 2.0, 3.0, 4.0]):
        tgt[:, j * 64 : (j + 1) * 64] = ndimage.gaussian_filter(a, s)[:, j * 64 : (j + 1) * 64]
    with pytest.warns(BlurFitWarning, match=r"10 of 100 tiles could not be measured .*: 10 flat"):
        m = blur_map(a, tgt, tile=48, overlap=0.5)
    assert m.sigma.shape == (10, 10, 2)
    assert m.reason[0, 0] == "flat" and np.isnan(m.sigma[0, 0]).all()
    cols = m.centers[0, :, 1]
    inside = [(cols - 24 >= 64 * j) & (cols + 24 <= 64 * (j + 1)) for j in range(4)]
    for j, s in enumerate([1.0, 2.0, 3.0, 4.0]):
        if j:
            np.testing.assert_allclose(m.sigma[:, inside[j], :], s, rtol=0.02)
    full = m.full_resolution()
    assert full.shape == (256, 256, 2)
    assert np.isnan(full[128, 5]).all()
    assert full[128, 245, 0] == pytest.approx(4.0, rel=0.02)  # inside the last band
    assert full[128, 96, 0] == pytest.approx(2.0, rel=0.05)
    assert m.to_dict()["sigma"][0][0] == [None, None]


@pytest.mark.slow
def test_blur_map_gain_offset_per_tile(cell):
    tgt = 0.5 * ndimage.gaussian_filter(cell, 2.0) + 10
    m = blur_map(cell, tgt, tile=64, gain_offset=True, per_axis=True)
    np.testing.assert_allclose(m.sigma, 2.0, rtol=1e-3)
    np.testing.assert_allclose(m.gain, 0.5, rtol=1e-3)
    np.testing.assert_allclose(m.offset, 10, rtol=1e-2)


# --- dask -------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["l2", pytest.param("l1", marks=pytest.mark.slow), "huber"])
def test_dask_gives_the_numpy_answer(frames, loss):
    ref, tgt = frames
    want = fit_blur(ref, tgt, spatial_axes=(-2, -1), loss=loss, gain_offset=True)
    got = fit_blur(da.from_array(ref, chunks=(2, 96, 96)), da.from_array(tgt, chunks=(1, 48, 96)),
                   spatial_axes=(-2, -1), loss=loss, gain_offset=True)
    # same optimum to the optimiser's tolerance (for L1 the gain/offset step differs: an exact
    # median in memory, IRLS over dask blocks)
    assert got.sigma == pytest.approx(want.sigma, rel=1e-4)
    assert got.loss == pytest.approx(want.loss, rel=1e-6)
    assert got.gain == pytest.approx(want.gain, rel=1e-4)
    if loss == "l2":  # the model applied to a dask stack is lazy and the same, frame by frame
        lazy_ref = da.from_array(ref, chunks=(2, 48, 96))
        residual = want.residual(lazy_ref, da.from_array(tgt, chunks=(1, 96, 96)))
        assert isinstance(residual, da.Array)
        np.testing.assert_allclose(residual.compute(), want.residual(ref, tgt), atol=1e-9)


def test_dask_with_nans_and_mask(frames):
    ref, tgt = frames
    tgt = tgt.copy()
    tgt[2, 10:20, 10:20] = np.nan
    mask = np.ones(ref.shape[1:], bool)
    mask[:, :8] = False
    want = fit_blur(ref, tgt, spatial_axes=(-2, -1), mask=mask, warn=False)
    got = fit_blur(da.from_array(ref, chunks=(1, 96, 96)), da.from_array(tgt, chunks=(1, 96, 96)),
                   spatial_axes=(-2, -1), mask=mask, warn=False)
    assert got.sigma == pytest.approx(want.sigma, rel=1e-5)
    assert got.n_nonfinite == want.n_nonfinite == 100
    assert got.n_pixels == want.n_pixels == 6 * 96 * 88 - 100 + 0
    # NaNs alone (no mask) also leave the spectral path: the filled pixels must not count
    want = fit_blur(ref, tgt, spatial_axes=(-2, -1), warn=False)
    got = fit_blur(da.from_array(ref, chunks=(1, 96, 96)), da.from_array(tgt, chunks=(1, 96, 96)),
                   spatial_axes=(-2, -1), warn=False)
    assert got.sigma == pytest.approx(want.sigma, rel=1e-5)
    assert got.n_pixels == want.n_pixels == tgt.size - 100


@pytest.mark.slow
def test_dask_stack_and_map_match_numpy(frames, camera):
    ref, tgt = frames
    a = [f.sigma for f in fit_blur_stack(ref, tgt)]
    b = [f.sigma for f in fit_blur_stack(da.from_array(ref, chunks=(1, 96, 96)),
                                         da.from_array(tgt, chunks=(1, 96, 96)))]
    assert a == b
    t = ndimage.gaussian_filter(camera, 1.7)
    m1 = blur_map(camera, t, tile=64)
    m2 = blur_map(da.from_array(camera, chunks=64), da.from_array(t, chunks=64), tile=64)
    np.testing.assert_array_equal(m1.sigma, m2.sigma)


@pytest.mark.slow
def test_dask_blur_map_in_blocks_of_tiles_equals_numpy(camera):
    t = ndimage.gaussian_filter(camera, 1.5)
    a, b = camera[:64], t[:64]  # tile 16, step 8: a 7 x 31 grid, fitted in blocks of 1 x 3 tiles
    want = blur_map(a, b, tile=16)
    got = blur_map(da.from_array(a, chunks=32), da.from_array(b, chunks=32), tile=16)
    assert want.sigma.shape == (7, 31, 2)
    np.testing.assert_array_equal(got.sigma, want.sigma)
    np.testing.assert_array_equal(got.reason, want.reason)


@pytest.mark.slow
def test_joint_fit_memory_does_not_grow_with_pairs(camera):
    """A lazy stack, generated block by block, is never loaded whole: peak memory is flat."""
    def lazy(n):
        def make(block_id=None):
            i = block_id[0]
            f = np.roll(camera, 7 * i, axis=1)[None]
            return f
        ref = da.map_blocks(make, chunks=((1,) * n, (256,), (256,)), dtype=float)
        tgt = da.map_blocks(lambda b: ndimage.gaussian_filter(b, (0, 1.5, 1.5)), ref)
        return ref, tgt

    peaks = {}
    for n in (16, 128):
        ref, tgt = lazy(n)
        tracemalloc.start()
        with dask.config.set(scheduler="threads", num_workers=2):
            fit = fit_blur(ref, tgt, spatial_axes=(-2, -1))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert fit.sigma[0] == pytest.approx(1.5, rel=1e-4)
    whole = 128 * 256 * 256 * 8 * 2  # both stacks of 128 frames
    # the working set: the blocks dask's two threads hold at once, and the reference-noise
    # estimate's per-block power sample (25-28 MB in 5 runs here, 27.1 MB in one CI run: over
    # the 0.2 this bound was)
    assert peaks[128] < 0.3 * whole
    assert peaks[128] < 2 * peaks[16]  # 8x the pairs, not 8x the memory (scheduling varies)


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.mark.slow
def test_distributed_cluster_same_answers(cluster_client, frames, camera):
    ref, tgt = frames
    dref, dtgt = da.from_array(ref, chunks=(1, 96, 96)), da.from_array(tgt, chunks=(1, 96, 96))
    for loss in ("l2", "l1"):
        want = fit_blur(ref, tgt, spatial_axes=(-2, -1), loss=loss)
        got = fit_blur(dref, dtgt, spatial_axes=(-2, -1), loss=loss)
        assert got.sigma == pytest.approx(want.sigma, rel=1e-6)
    assert [f.sigma for f in fit_blur_stack(dref, dtgt)] == [f.sigma for f in fit_blur_stack(ref, tgt)]
    t = ndimage.gaussian_filter(camera, 2.5)
    m = blur_map(da.from_array(camera, chunks=128), da.from_array(t, chunks=128), tile=64)
    np.testing.assert_allclose(m.sigma, 2.5, rtol=1e-3)
    np.testing.assert_array_equal(m.sigma, blur_map(camera, t, tile=64).sigma)  # blocks of tiles
    assert len(cluster_client.scheduler_info()["workers"]) == 2
