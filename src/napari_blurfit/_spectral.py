"""Exact L2 objective in the DCT domain from summable sufficient statistics (docs/design.md sections 2-4).

After one DCT of the reference and one of the target, ``sum (gain * G_s * A + offset - B)^2`` for any
sigma is a contraction of ``P_AA = sum_frames A_hat^2`` and ``P_AB = sum_frames A_hat * B_hat`` with
1-D transfer vectors, plus scalars. The statistics of several frames or pairs add up, so a joint
fit over a stack or a dataset is map (transform each pair), reduce (sum), solve once.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce

import numpy as np

from ._kernels import axis_transfers, transfer
from ._transforms import frame_dct, threads

STEP_BYTES = 2**21  # frames transformed together: small enough to be still in cache when summed
SCRATCH_PIXELS = 2**15  # float64 products formed at a time (256 kB: stays in cache)
CAST_BLOCK = 2**18  # float32 statistics cast to float64 at a time for a contraction (2 MB)
SAMPLE = 2**16  # coefficients the reference-noise estimate reads at most (`sample_grid`)
STACK_SHARE = 4  # ... and a block of frames keeps at most this share of them


@dataclass
class SpectralStats:
    """Sufficient statistics of the L2 objective for frames of one spatial shape.

    Attributes
    ----------
    paa, pab : ndarray or None
        ``sum_f A_hat_f**2`` and ``sum_f A_hat_f * B_hat_f`` (spatial shape; float64, or float32
        where they only start a whole-Gaussian fit; None once dropped, `without_spectra`).
    cbb : float
        ``sum_f sum B_hat_f**2`` (equals the sum of squared target pixels).
    dc_a, dc_b : ndarray
        DC coefficient of each frame's reference and target (one per frame).
    pbb : ndarray or None
        ``sum_f B_hat_f**2`` on the reference-noise estimate's sample of coefficients only
        (float64; every ``sample_step``-th along each axis, `sample_grid`); None once dropped.
    sample_step : int
        The stride of ``pbb``'s coefficients.
    noise : float
        The reference's noise variance per pixel that the L2 objective is corrected for
        (errors in variables): each frame's ``P_AA`` counts as ``P_AA - noise`` in every
        contraction (`deflate`). 0: the noise-free model.
    """

    paa: np.ndarray | None  # None: dropped (`without_spectra`)
    pab: np.ndarray | None
    cbb: float
    dc_a: np.ndarray
    dc_b: np.ndarray
    pbb: np.ndarray | None = None
    sample_step: int = 1
    noise: float = 0.0
    # ``P_AA``, ``P_AB``, ``P_BB`` per frame on a subgrid of coefficients, flat, DC left out: the
    # noise estimate's sample (`napari_blurfit._noise.sample`), kept by `with_noise` copies
    sample: tuple[np.ndarray, np.ndarray, np.ndarray] | None = dataclasses.field(
        default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.paa.shape

    @property
    def n_frames(self) -> int:
        return len(self.dc_a)

    @property
    def n_pixels(self) -> int:
        """Pixels per frame."""
        return int(np.prod(self.paa.shape))

    @property
    def sample_slices(self) -> tuple[slice, ...]:
        """The coefficients ``pbb`` holds (`sample_grid`)."""
        return (slice(None, None, self.sample_step),) * len(self.shape)

    @property
    def finite(self) -> bool:
        """False when a frame had a NaN/inf pixel: that makes its DC coefficient NaN/inf."""
        return bool(np.isfinite(self.dc_a).all() and np.isfinite(self.dc_b).all())

    @classmethod
    def zeros(cls, shape: tuple[int, ...], dtype=np.float64, *, share: int = 1) -> SpectralStats:
        """Statistics of no frames, to `accumulate` frames into (``paa``/``pab`` in ``dtype``).

        ``pbb`` keeps at most ``1 / share`` of the coefficients (`sample_grid`).
        """
        picked = sample_grid(shape, share)
        sampled = tuple(len(range(n)[sl]) for n, sl in zip(shape, picked))
        return cls(np.zeros(shape, dtype), np.zeros(shape, dtype), 0.0, np.zeros(0), np.zeros(0),
                   np.zeros(sampled), picked[0].step)

    def accumulate(self, ref_hat: np.ndarray, tgt_hat: np.ndarray, *,
                   workers: int | None = None) -> SpectralStats:
        """Add frames already transformed with `frame_dct` (frames on leading axes), in place.

        Products are formed in float64 (products of float32 values are exact there), which the
        cancellation in ``RSS = Qaa - 2 Qab + C`` needs. They go through one small scratch array,
        a slice of a frame at a time: no float64 copy of a block and no fresh array per frame
        (the page faults of fresh arrays cost more than the arithmetic). ``workers`` threads
        (`threads`) take a share of the pixels each: for one large frame this pass is otherwise
        single-threaded, a third of a 3D fit's set-up.
        """
        a = ref_hat.reshape(-1, self.n_pixels)
        b = tgt_hat.reshape(-1, self.n_pixels)
        self.sample = None
        n = threads(workers) if self.n_pixels >= 4 * SCRATCH_PIXELS else 1
        edges = np.linspace(0, self.n_pixels, n + 1).astype(int)
        parts = [slice(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
        if n == 1:
            self.cbb += self._accumulate_part(a, b, parts[0])
        else:
            with ThreadPoolExecutor(n) as pool:  # numpy releases the GIL on these chunks
                self.cbb += sum(pool.map(lambda part: self._accumulate_part(a, b, part), parts))
        self.dc_a = np.concatenate([self.dc_a, a[:, 0]])
        self.dc_b = np.concatenate([self.dc_b, b[:, 0]])
        frames = tgt_hat.reshape(-1, *self.shape)[(slice(None), *self.sample_slices)]
        self.pbb += np.einsum("f...,f...->...", frames, frames, dtype=np.float64)
        return self

    def _accumulate_part(self, a: np.ndarray, b: np.ndarray, pixels: slice) -> float:
        """Add the products over ``pixels`` of every frame to ``paa``/``pab``; returns their ``cbb``."""
        paa, pab = self.paa.reshape(-1), self.pab.reshape(-1)  # views
        scratch = np.empty(min(SCRATCH_PIXELS, pixels.stop - pixels.start))
        cbb = 0.0
        with np.errstate(invalid="ignore"):  # NaN/inf pixels: non-finite statistics (see `finite`)
            for fa, fb in zip(a, b):
                for start in range(pixels.start, pixels.stop, len(scratch)):
                    part = slice(start, min(start + len(scratch), pixels.stop))
                    out = scratch[: part.stop - part.start]
                    paa[part] += np.multiply(fa[part], fa[part], out=out, dtype=np.float64)
                    pab[part] += np.multiply(fa[part], fb[part], out=out, dtype=np.float64)
                    cbb += float(np.multiply(fb[part], fb[part], out=out, dtype=np.float64).sum())
        return cbb

    def compact(self) -> SpectralStats:
        """The same statistics with ``paa`` and ``pab`` in float32: half their memory.

        For reading after the search only (a whole-Gaussian fit's checks): each coefficient keeps
        ~6e-8 of itself, far below what the checks' thresholds resolve; a search needs float64
        (its residual ``Qaa - 2 Qab + C`` cancels).
        """
        if self.paa.dtype == np.float32 and self.pab.dtype == np.float32:
            return self
        return SpectralStats(self.paa.astype(np.float32), self.pab.astype(np.float32), self.cbb,
                             self.dc_a, self.dc_b, noise=self.noise)

    def without_spectra(self) -> SpectralStats:
        """The scalar statistics only (``cbb`` and the DC coefficients); ``paa``/``pab`` are None.

        For a fit whose later steps read only those (the checks of a per-axis or rotated
        whole-Gaussian fit): the spectra's memory goes back before the fit makes its own arrays
        (in 3D, 0.9x the inputs off the peak).
        """
        return SpectralStats(None, None, self.cbb, self.dc_a, self.dc_b, noise=self.noise)

    def with_noise(self, noise: float) -> SpectralStats:
        """The same statistics (arrays shared, not copied) corrected for reference noise ``noise``."""
        return dataclasses.replace(self, noise=float(noise))

    def __add__(self, other: SpectralStats) -> SpectralStats:
        total = SpectralStats(self.paa.copy(), self.pab.copy(), self.cbb, self.dc_a, self.dc_b,
                              None if self.pbb is None else self.pbb.copy(), self.sample_step)
        return total.__iadd__(other)

    def __iadd__(self, other: SpectralStats) -> SpectralStats:
        # in place where the caller owns the left side: fresh arrays cost page faults
        self._check_shape(other)
        self.sample = None
        self.paa += other.paa
        self.pab += other.pab
        if self.pbb is not None and other.pbb is not None and self.sample_step == other.sample_step:
            self.pbb += other.pbb
        else:
            self.pbb = None
        self.cbb += other.cbb
        self.dc_a = np.concatenate([self.dc_a, other.dc_a])
        self.dc_b = np.concatenate([self.dc_b, other.dc_b])
        return self

    def _check_shape(self, other: SpectralStats) -> None:
        if other.shape != self.shape:
            raise ValueError(f"cannot add statistics of shapes {self.shape} and {other.shape}")


def strided(shape: tuple[int, ...], limit: int) -> tuple[slice, ...]:
    """Every m-th coefficient along each axis, m the least that keeps at most ``limit`` of them."""
    step = max(1, int(np.ceil((np.prod(shape) / max(limit, 1)) ** (1 / len(shape)))))
    return tuple(slice(None, None, step) for _ in shape)


def sample_grid(shape: tuple[int, ...], share: int = 1) -> tuple[slice, ...]:
    """The reference-noise estimate's sample of coefficients (`SpectralStats.pbb`).

    `strided` to at most `SAMPLE` coefficients and ``1 / share`` of all (a block of a stack's
    frames keeps a quarter: a lazy stack's statistics stay small, and its frames add up).
    """
    return strided(shape, min(SAMPLE, int(np.prod(shape)) // share))


def block_stats(ref: np.ndarray, tgt: np.ndarray, ndim: int, *, workers=None) -> SpectralStats:
    """Statistics of a block of frame pairs (spatial axes last).

    Frames are transformed a few at a time (about `STEP_BYTES`) into reused buffers, so the
    products are summed while the transforms are still in cache.
    """
    spatial = ref.shape[ref.ndim - ndim :]
    ref, tgt = ref.reshape((-1, *spatial)), tgt.reshape((-1, *spatial))
    step = max(1, STEP_BYTES // max(ref[0].nbytes, 1))
    ref_hat, tgt_hat = np.empty_like(ref[:step]), np.empty_like(tgt[:step])
    stats = SpectralStats.zeros(spatial, share=STACK_SHARE)
    for i in range(0, len(ref), step):
        a, b = ref[i : i + step], tgt[i : i + step]
        stats.accumulate(frame_dct(a, ndim, workers=workers, out=ref_hat[: len(a)]),
                         frame_dct(b, ndim, workers=workers, out=tgt_hat[: len(b)]), workers=workers)
    return stats


def contract(p: np.ndarray, vectors: list[np.ndarray], *, joint: bool) -> np.ndarray:
    """``sum_k p[k] prod_i vectors[i][k_i, j_i]``.

    ``vectors[i]`` has shape (p.shape[i], m_i). With ``joint`` every axis uses the same column
    (result shape (m,)); otherwise the result is the outer grid, shape (m_0, ..., m_{d-1}).
    """
    d = p.ndim
    t = _rows_times(p, vectors[-1])  # the heavy step: one matrix product over the whole array
    if joint:
        for axis in range(d - 2, -1, -1):
            t = np.einsum("...kj,kj->...j", t, vectors[axis])
        return t
    # t axes: (N_0, ..., N_{d-2}, m_{d-1}); contract the remaining spatial axes from the last
    for axis in range(d - 2, -1, -1):
        t = np.tensordot(t, vectors[axis], axes=([axis], [0]))
    # axes now (m_{d-1}, m_{d-2}, ..., m_0)
    return np.transpose(t, tuple(range(d - 1, -1, -1)))


def deflate(q: np.ndarray, stats: SpectralStats, vectors: list[np.ndarray], *, joint: bool):
    """A contraction of ``P_AA`` (`contract`) less the reference noise's expected share of it.

    White noise of variance ``stats.noise`` adds that much to every coefficient of every frame's
    ``A_hat**2``: ``noise * n_frames * noise_share(vectors)``.
    """
    if not stats.noise:
        return q
    return q - stats.noise * stats.n_frames * noise_share(vectors, joint=joint)


def noise_share(vectors: list[np.ndarray], *, joint: bool) -> np.ndarray:
    """``sum_k prod_i vectors[i][k_i]``: the contraction of a constant 1, a product of column sums."""
    sums = [v.sum(axis=0) for v in vectors]
    return np.prod(sums, axis=0) if joint else reduce(np.multiply.outer, sums)


def _rows_times(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``p @ v``, casting a float32 ``p`` to ``v``'s dtype a block of rows at a time.

    Float32 statistics (`SpectralStats.compact`, a whole-Gaussian fit's start) are not copied whole;
    the products and sums stay in float64.
    """
    if p.dtype == v.dtype:
        return p @ v
    rows = p.reshape(-1, p.shape[-1])
    out = np.empty((len(rows), v.shape[1]), dtype=np.result_type(p, v))
    step = max(1, CAST_BLOCK // p.shape[-1])
    for start in range(0, len(rows), step):
        np.matmul(rows[start : start + step].astype(v.dtype), v, out=out[start : start + step])
    return out.reshape(*p.shape[:-1], v.shape[1])


def project(qaa, qab, stats: SpectralStats, *, gain_offset: bool):
    """Residual sum of squares and the best gain/offset for given contractions.

    Without gain/offset the model is ``G_s * A``. With them, ``gain * G_s * A + offset`` where the
    offset is shared by all frames; the DC coefficient of frame f is ``offset * sqrt(n)`` (H[0] = 1).
    """
    qaa = np.asarray(qaa, dtype=np.float64)
    qab = np.asarray(qab, dtype=np.float64)
    if not gain_offset:
        rss = qaa - 2.0 * qab + stats.cbb
        return np.maximum(rss, 0.0), np.ones_like(rss), np.zeros_like(rss)
    f = stats.n_frames
    sa, sb = stats.dc_a.sum(), stats.dc_b.sum()
    caa = qaa - sa * sa / f
    if stats.noise:  # the frames' mean DC holds one frame's noise, which the projection took out
        caa = caa + stats.noise
    cab = qab - sa * sb / f
    cbb = stats.cbb - sb * sb / f
    tiny = 1e-14 * max(float(np.max(np.abs(qaa))), 1e-300)
    ok = caa > tiny
    gain = np.where(ok, cab / np.where(ok, caa, 1.0), 0.0)
    rss = np.where(ok, cbb - gain * cab, cbb)
    offset = (sb - gain * sa) / (f * np.sqrt(stats.n_pixels))
    return np.maximum(rss, 0.0), gain, offset


@dataclass(frozen=True)
class Tabulated:
    """The contractions of ``P_AA`` and ``P_AB`` on a grid of sigmas (`tabulate`).

    The reference's noise enters the L2 objective only through ``share`` (`deflate`), so the
    objective for any noise level follows from one table: the rounds of a fit that corrects for
    an estimated noise contract once.
    """

    qaa: np.ndarray  # not deflated
    qab: np.ndarray
    share: np.ndarray  # the noise's share of ``qaa`` per unit variance and frame

    def project(self, stats: SpectralStats, *, gain_offset: bool):
        """RSS, gain and offset on the grid (`project`), corrected for ``stats.noise``."""
        qaa = self.qaa - stats.noise * stats.n_frames * self.share if stats.noise else self.qaa
        return project(qaa, self.qab, stats, gain_offset=gain_offset)

    def columns(self, picked) -> Tabulated:
        """The table of a joint grid's columns ``picked`` (a slice or an index)."""
        return Tabulated(self.qaa[picked], self.qab[picked], self.share[picked])

    def residual_ss(self, stats: SpectralStats, gain, offset) -> np.ndarray:
        """``sum (gain * G_sigma * A + offset - B)**2`` over all pixels and frames on the grid.

        The images' own residual, the reference's noise included (``stats.noise`` is not taken
        out); ``gain`` and ``offset`` one per grid point or shared.
        """
        gain, offset = np.asarray(gain, dtype=np.float64), np.asarray(offset, dtype=np.float64)
        dc = stats.dc_b - gain[..., None] * stats.dc_a  # each frame's DC residual before the offset
        moved = dc - offset[..., None] * np.sqrt(stats.n_pixels)
        rss = (stats.cbb - 2.0 * gain * self.qab + gain * gain * self.qaa
               - (dc * dc).sum(axis=-1) + (moved * moved).sum(axis=-1))
        return np.maximum(rss, 0.0)


def tabulate(stats: SpectralStats, axis_sigmas, *, joint: bool, truncate: float = 4.0) -> Tabulated:
    """`Tabulated` contractions on a grid of sigmas (the grid as `l2_grid` takes it)."""
    hs = axis_transfers(axis_sigmas, stats.shape, truncate)
    square = {id(h): h * h for h in hs}  # once for axes that share a transfer
    squares = [square[id(h)] for h in hs]
    return Tabulated(contract(stats.paa, squares, joint=joint), contract(stats.pab, hs, joint=joint),
                     noise_share(squares, joint=joint))


def l2_grid(stats, axis_sigmas, *, joint: bool, gain_offset: bool, truncate: float = 4.0):
    """RSS, gain and offset on a grid of sigmas.

    ``axis_sigmas[i]`` holds the sigma values tried along spatial axis i. With ``joint`` all axes
    share one list of (per-axis) values taken column by column; otherwise the grid is their outer
    product.
    """
    return tabulate(stats, axis_sigmas, joint=joint, truncate=truncate).project(
        stats, gain_offset=gain_offset)


def l2_at(stats, sigma, *, truncate: float = 4.0):
    """``(rss, gain, offset)`` at one per-axis sigma for both models.

    Returns ``{False: ..., True: ...}`` keyed by ``gain_offset``: one contraction serves both.
    """
    table = tabulate(stats, [[s] for s in sigma], joint=True, truncate=truncate)
    return {go: tuple(float(x[0]) for x in table.project(stats, gain_offset=go))
            for go in (False, True)}


def normal_matrix(stats, sigma, gain: float, *, per_axis: bool, gain_offset: bool, truncate=4.0):
    """Gauss-Newton ``J^T J`` for the parameters (sigmas..., [gain, offset]), from ``P_AA``.

    The Jacobian columns are ``gain * dH/dsigma_i * A_hat`` for the sigmas, ``H * A_hat`` for the
    gain and the unit DC vector (times sqrt(n), per frame) for the offset. Every product needed is
    one entry of a single outer-grid contraction of ``P_AA`` with ``[h^2, h*dh, dh^2]`` per axis.
    """
    vecs = [product_vectors(*transfer([s], n, truncate, derivative=True))
            for s, n in zip(sigma, stats.shape)]
    table = deflate(contract(stats.paa, vecs, joint=False), stats, vecs, joint=False)
    products = column_products(table, gain, per_axis=per_axis, gain_column=gain_offset)
    if not gain_offset:
        return products
    p = len(products)
    jtj = np.zeros((p + 1, p + 1))
    jtj[:p, :p] = products
    jtj[p - 1, p] = jtj[p, p - 1] = np.sqrt(stats.n_pixels) * stats.dc_a.sum()
    jtj[p, p] = stats.n_frames * stats.n_pixels
    return jtj


def product_vectors(h: np.ndarray, dh: np.ndarray) -> np.ndarray:
    """``[h^2, h*dh, dh^2]`` of one axis's transfer and its derivative (columns, `column_products`)."""
    return np.concatenate([h * h, h * dh, dh * dh], axis=1)


def column_products(table: np.ndarray, gain: float, *, per_axis: bool, gain_column: bool) -> np.ndarray:
    """The products of the Jacobian's columns (sigmas..., [gain]) summed against some spectrum.

    ``table``: that spectrum contracted on the outer grid of `product_vectors` per axis. Column
    ``i`` is ``gain * dH/dsigma_i`` (one column, their sum, for a shared sigma), the gain's ``H``.
    """
    d = table.ndim

    def term(i: int | None, j: int | None) -> float:
        # per axis: 0 -> h*h, 1 -> h*dh (one derivative on it), 2 -> dh*dh (both)
        return float(table[tuple((axis == i) + (axis == j) for axis in range(d))])

    ss = np.array([[term(i, j) for j in range(d)] for i in range(d)]) * gain**2
    sg = np.array([term(i, None) for i in range(d)]) * gain
    if not per_axis:  # one sigma moves every axis: its column is the sum of the axis columns
        ss = np.array([[ss.sum()]])
        sg = np.array([sg.sum()])
    if not gain_column:
        return ss
    p = len(sg)
    out = np.empty((p + 1, p + 1))
    out[:p, :p] = ss
    out[:p, p] = out[p, :p] = sg
    out[p, p] = term(None, None)
    return out
