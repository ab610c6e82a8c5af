"""Small matplotlib plots for the dock widget, drawn in the viewer's theme colours.

One `ResultPlots` holds two tabs: the fit's loss against sigma (or sigma per frame, or the
tile histogram of a blur map, with the map's colourbar: in the dock, beside the canvas rather
than over the image) and the transfer plot (measured vs Gaussian transfer against spatial
frequency). `KernelPicture` draws the fitted kernel itself, small, beside the result text.
Nothing is shown before there is a result. Axes are named z, y, x as the command line names them.
"""

from __future__ import annotations

import numpy as np

from ._summary import angle_of, axis_names, principal, principal_sigmas_of

PLOT_HEIGHT = 210  # px: two plots fit a laptop screen beside the dock's inputs
KERNEL_SIZE = 104  # px: the kernel picture, a thumbnail beside the result text
KERNEL_VIEW_SIGMAS = 3.0  # the picture shows the kernel out to this many sigmas (plus the shift)


def palette(theme_name: str) -> dict:
    """Plot colours from a napari theme (``viewer.theme``): background, text, lines, accents."""
    from napari.utils.theme import get_theme

    theme = get_theme(theme_name)

    def hex_(name):
        return getattr(theme, name).as_hex()

    return {"background": hex_("background"), "axes": hex_("foreground"), "text": hex_("text"),
            "line": hex_("current"), "accent": hex_("warning"), "muted": hex_("highlight"),
            "grid": hex_("primary")}


def _field(obj, name):
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def nice_ticks(lo: float, hi: float) -> list[float]:
    """Three to six plain 1-2-5 (or finer) tick values inside ``[lo, hi]`` for a log axis."""
    decades = range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
    for subs in ((1,), (1, 3), (1, 2, 5), (1, 1.5, 2, 3, 4, 5, 7)):
        ticks = [m * 10.0**e for e in decades for m in subs if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 3:
            return ticks[:: int(np.ceil(len(ticks) / 6))]
    return list(np.linspace(lo, hi, 3))


def readable_axis(ax, which: str, lo: float, hi: float) -> None:
    """Log scale with plain-number ticks when ``[lo, hi]`` spans a factor 3 or more, else linear.

    Narrow log ranges otherwise get crowded ``2x10^0``-style minor labels that overlap.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    axis = ax.xaxis if which == "x" else ax.yaxis
    if lo > 0 and hi / lo >= 3:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        axis.set_major_locator(FixedLocator(nice_ticks(lo, hi)))
        axis.set_minor_locator(NullLocator())
    else:
        (ax.set_xscale if which == "x" else ax.set_yscale)("linear")
        axis.set_major_locator(MaxNLocator(4))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)


def smooth_profile(sigma, loss, best_sigma: float, best_loss: float, lo: float, hi: float):
    """A smooth loss curve through the evaluated points and the optimum (monotone cubic in log sigma).

    Returns ``(dense_sigma, dense_loss)``; the curve passes exactly through every evaluated point
    and through ``(best_sigma, best_loss)``, so its dip sits at the fitted optimum.
    """
    from scipy.interpolate import PchipInterpolator

    s = np.append(np.asarray(sigma, float), best_sigma)
    v = np.append(np.asarray(loss, float), best_loss)
    keep = np.isfinite(s) & np.isfinite(v) & (s > 0)
    s, v = s[keep], v[keep]
    s, index = np.unique(s, return_index=True)
    v = v[index]
    if s.size < 3:
        return s, v
    dense = np.geomspace(max(lo, s[0]), min(hi, s[-1]), 240)
    if dense[0] <= best_sigma <= dense[-1]:
        dense = np.sort(np.append(dense, best_sigma))
    return dense, PchipInterpolator(np.log(s), v)(np.log(dense))


class _Plot:
    """One themed matplotlib canvas."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtWidgets import QSizePolicy

        self.figure = Figure(figsize=(3.4, PLOT_HEIGHT / 100), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(PLOT_HEIGHT)
        self.canvas.setMinimumWidth(200)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.axes = self.figure.add_subplot()

    def start(self, colors: dict):
        """Clear and colour the figure for a new drawing; returns the axes."""
        self.figure.clear()
        self.axes = ax = self.figure.add_subplot()
        self.figure.set_facecolor(colors["background"])
        ax.set_facecolor(colors["axes"])
        for spine in ax.spines.values():
            spine.set_color(colors["muted"])
        ax.tick_params(colors=colors["text"], labelsize=8, which="both")
        ax.xaxis.label.set_color(colors["text"])
        ax.yaxis.label.set_color(colors["text"])
        ax.title.set_color(colors["text"])
        return ax

    def finish(self, colors: dict, legend: bool = False):
        ax = self.axes
        ax.xaxis.label.set_size(8)
        ax.yaxis.label.set_size(8)
        if legend:
            leg = ax.legend(fontsize=7, frameon=False)
            for text in leg.get_texts():
                text.set_color(colors["text"])
        self.canvas.draw_idle()


class ResultPlots:
    """The result plots in tabs: "loss" (or "sigma per frame" / "tiles") and "transfer"."""

    def __init__(self):
        from qtpy.QtWidgets import QTabWidget

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.main, self.transfer = _Plot(), _Plot()
        self.tabs.addTab(self.main.canvas, "loss")
        self.tabs.addTab(self.transfer.canvas, "transfer")
        self.tabs.setVisible(False)
        self.colorbar = None  # the blur map's colourbar (a matplotlib Colorbar) while one is shown

    def clear(self):
        """Hide and empty the plots (no result, or the last fit failed): nothing stale stays."""
        for plot in (self.main, self.transfer):
            plot.figure.clear()
            plot.axes = plot.figure.add_subplot()
        self.colorbar = None
        self.tabs.setVisible(False)

    def draw(self, result, colors: dict, map_layer=None):
        """Draw a `napari_blurfit.layers.LayerFit` and show the tabs.

        A rotated or shifted fit has no loss-against-sigma curve of its own (the search's
        profile is of the centred, axis-aligned start), nor has a fit across grids (no profile),
        so their "loss" tab is hidden. A blur
        map's colourbar takes the colormap and contrast limits of ``map_layer`` (the map's image
        layer, as the user may have changed them), else those the layer was made with.
        """
        fit = result.fit
        whole = fit is not None and (fit.full_covariance or fit.shift_fitted
                                     or not len(fit.profile.get("sigma", ())))
        self.colorbar = None
        if result.frames is not None:
            _draw_frames(self.main, result.frames, colors)
            title = "sigma per frame"
        elif result.blur_map is not None:
            self.colorbar = _draw_tiles(self.main, result, colors, map_layer)
            title = "tiles"
        else:
            if not whole:
                _draw_loss(self.main, fit, colors)
            title = "loss"
        self.tabs.setTabText(0, title)
        self.tabs.setTabVisible(0, not whole)
        transfer = None if fit is None else getattr(fit, "transfer", None)
        if transfer is not None:
            _draw_transfer(self.transfer, transfer, result, colors)
        self.tabs.setTabVisible(1, transfer is not None)
        if whole or transfer is None:
            self.tabs.setCurrentIndex(1 if whole else 0)
        self.tabs.setVisible(not whole or transfer is not None)


def _draw_frames(plot, frames, colors):
    ax = plot.start(colors)
    if any(f.full_covariance for f in frames):  # rotated: the ellipse's own axes
        sig = principal_sigmas_of([f.covariance for f in frames])
        names = ["major", "minor"] if sig.shape[1] == 2 else ["major", "middle", "minor"]
    else:
        sig = np.array([f.sigma for f in frames], dtype=float)
        names = axis_names(sig.shape[1])
        if not any(f.per_axis for f in frames):
            sig = sig[:, :1]  # one shared sigma: one line
    cycle = [colors["line"], colors["accent"], colors["text"]]
    for i in range(sig.shape[1]):
        ax.plot(sig[:, i], marker=".", color=cycle[i % 3], label=names[i] if sig.shape[1] > 1 else None)
    ax.set_xlabel("frame")
    ax.set_ylabel("sigma (px)")
    if len(frames) <= 12:
        ax.set_xticks(range(len(frames)))
    plot.finish(colors, legend=sig.shape[1] > 1)


def map_colors(result, map_layer=None):
    """The blur map's matplotlib colormap and contrast limits, as napari shows the map layer."""
    from matplotlib.colors import ListedColormap
    from napari.utils.colormaps import ensure_colormap

    if map_layer is not None:
        colormap, limits = map_layer.colormap, map_layer.contrast_limits
    else:
        kwargs = result.layers[0][1]
        colormap, limits = ensure_colormap(kwargs["colormap"]), kwargs["contrast_limits"]
    return ListedColormap(colormap.map(np.linspace(0, 1, 256))), tuple(float(v) for v in limits)


def _draw_tiles(plot, result, colors, map_layer=None):
    """Tile histogram, its bars in the map's colours, under the map's colourbar; returns the bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    ax = plot.start(colors)
    cmap, (lo, hi) = map_colors(result, map_layer)
    norm = Normalize(lo, hi)
    s = result.blur_map.sigma.mean(axis=-1)
    values = np.clip(s[np.isfinite(s)].ravel(), lo, hi)  # a tile beyond the limits: an end bin
    _, edges, bars = ax.hist(values, bins=20, range=(lo, hi))
    for bar, left, right in zip(bars, edges[:-1], edges[1:]):
        bar.set_facecolor(cmap(norm((left + right) / 2)))
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("tile sigma (px)")
    ax.set_ylabel("tiles")
    strip = ax.inset_axes((0.0, 1.04, 1.0, 0.07))  # right above the bars, as wide as their axis
    colorbar = plot.figure.colorbar(ScalarMappable(norm, cmap), cax=strip, orientation="horizontal",
                                    ticklocation="top")
    colorbar.ax.xaxis.set_major_locator(MaxNLocator(5))
    colorbar.ax.tick_params(colors=colors["text"], labelsize=8)
    colorbar.outline.set_edgecolor(colors["muted"])
    colorbar.set_label("colours of the blur map layer (sigma, px)", size=8, color=colors["text"])
    plot.finish(colors)
    return colorbar


def _draw_loss(plot, fit, colors):
    ax = plot.start(colors)
    prof = fit.profile
    sigma = np.asarray(prof["sigma"], float)
    rows = np.atleast_2d(np.asarray(prof["loss"], float))
    best = list(fit.sigma) if fit.per_axis else [fit.sigma[0]] * len(rows)
    positive = [s for s in fit.sigma if s > 0] or [1.0]
    lo = max(sigma.min(), min(positive) / 10) if sigma.size else 0.1
    hi = min(sigma.max(), max(positive) * 10) if sigma.size else 10.0
    cycle = [colors["line"], colors["text"], colors["muted"]]
    shown = []
    for i, row in enumerate(rows):
        label = axis_names(len(rows))[i] if len(rows) > 1 else None
        inside = (sigma >= lo) & (sigma <= hi)
        xs, ys = smooth_profile(sigma[inside], row[inside], best[i], fit.loss, lo, hi)
        ax.plot(xs, ys, color=cycle[i % 3], lw=1.5, label=label)
        ax.plot(sigma[inside], row[inside], ".", color=cycle[i % 3], ms=3)
        shown.append(ys)
    for s in sorted(set(best)):
        ax.axvline(s, color=colors["accent"], lw=1)
    values = np.concatenate([np.ravel(y) for y in shown]) if shown else np.array([1.0])
    _loss_range(ax, values[np.isfinite(values)])
    if not hi > lo:  # one evaluated point (an image-space polish that started at its optimum)
        centre = max(best[0], 0.1)
        lo, hi = centre / 1.2, centre * 1.2
    readable_axis(ax, "x", lo, hi)
    ax.set_xlabel("sigma (px)")
    ax.set_ylabel(f"mean {prof['objective']} loss")
    text = ", ".join(f"{s:.3g}" for s in (fit.sigma if fit.per_axis else fit.sigma[:1]))
    ax.set_title(f"optimum {text} px", fontsize=8)
    plot.finish(colors, legend=len(rows) > 1)


def _loss_range(ax, values):
    """Log loss axis when the curve spans decades (down to 1e-4 of its top), else linear with margins."""
    if not values.size or values.max() <= values.min():
        return
    lo, hi = float(values.min()), float(values.max())
    if lo > 0 and hi / lo >= 3:
        readable_axis(ax, "y", max(lo, hi * 1e-4) / 1.3, hi * 1.3)
    else:
        pad = 0.05 * (hi - lo)
        readable_axis(ax, "y", lo - pad, hi + pad)


def _draw_transfer(plot, transfer, result, colors):
    ax = plot.start(colors)
    f = np.asarray(_field(transfer, "frequency"), float)
    ax.plot(f, np.asarray(_field(transfer, "measured"), float), ".", ms=3, color=colors["text"],
            label="measured")
    ax.plot(f, np.asarray(_field(transfer, "model"), float), color=colors["line"], lw=1.5,
            label="Gaussian")
    ax.set_xlabel("frequency (cycles/px)")
    ax.set_ylabel("transfer")
    _transfer_range(ax, np.asarray(_field(transfer, "measured"), float))
    unit, size = _common_unit(result)
    if unit:
        top = ax.secondary_xaxis("top", functions=(lambda x: x / size, lambda x: x * size))
        top.set_xlabel(f"cycles/{unit}", fontsize=8, color=colors["text"])
        top.tick_params(colors=colors["text"], labelsize=8)
    plot.finish(colors, legend=True)


def _transfer_range(ax, measured):
    """0 to 1 with a margin, widened for the bulk of the measured points but not for a stray one.

    At high frequencies the measured transfer divides noise by little signal: one point can
    reach 5 and squash the curve that matters into a sliver.
    """
    finite = measured[np.isfinite(measured)]
    lo, hi = -0.1, 1.1
    if finite.size:
        lo = min(lo, float(np.percentile(finite, 2)))
        hi = max(hi, float(np.percentile(finite, 98)))
    pad = 0.05 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)


UNIT_SYMBOLS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "meter": "m",
                "centimeter": "cm", "angstrom": "Å"}


def unit_symbol(unit: str) -> str:
    """Short form of a unit name ("micrometer" -> "µm"); ``""`` stays ``""``."""
    return UNIT_SYMBOLS.get(unit, unit)


def _common_unit(result) -> tuple[str, float]:
    """The spatial unit and pixel size when all spatial axes share them, else ``("", 1.0)``."""
    units, sizes = set(result.units), set(result.pixel_size)
    if len(units) == 1 and len(sizes) == 1 and next(iter(units)):
        return unit_symbol(next(iter(units))), float(next(iter(sizes)))
    return "", 1.0


def kernel_view(fit) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """What the kernel picture shows: a 2D image of the sampled kernel and its 1-sigma ellipse.

    Returns ``(image, centre, covariance, radius)``: the kernel (its central plane for 3D, rows
    down and columns right, offsets ``-r..r`` about the unshifted centre), the ellipse's centre
    ``(x, y)`` and 2x2 covariance ``[[yy, yx], [xy, xx]]`` in that plane, and the half-width to
    show (px). ``None`` when there is no Gaussian to draw (a sigma of 0: the identity, or NaN).
    """
    if not principal(fit.covariance)[0][-1] > 0:  # NaN or 0
        return None
    kernel = fit.kernel
    image = kernel.sampled(fit.truncate)
    cov, mu = np.asarray(kernel.covariance, float), np.asarray(kernel.shift, float)
    while image.ndim > 2:  # the central plane; the Gaussian's section there is a Gaussian too
        image = image[image.shape[0] // 2]
        gain = cov[1:, :1] / cov[0, 0]
        mu = mu[1:] - gain[:, 0] * mu[0]
        cov = cov[1:, 1:] - gain @ cov[:1, 1:]
    radius = KERNEL_VIEW_SIGMAS * float(principal(cov)[0][0]) + float(np.abs(mu).max())
    radius = min(max(radius, 1.5), (max(image.shape) - 1) / 2 + 0.5)
    return image, mu[::-1], cov, radius


class KernelPicture:
    """A thumbnail of the fitted kernel in the theme's colours, with its 1-sigma ellipse."""

    def __init__(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        size = KERNEL_SIZE / 100
        self.figure = Figure(figsize=(size, size), dpi=100)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedSize(KERNEL_SIZE, KERNEL_SIZE)
        self.canvas.setToolTip("The fitted kernel (1-sigma ellipse, + the unshifted centre); rows "
                               "grow downwards as on the canvas")
        self.canvas.setVisible(False)
        self.axes = None

    def clear(self):
        """Hide and empty the picture (no single fit to show)."""
        self.figure.clear()
        self.axes = None
        self.canvas.setVisible(False)

    def draw(self, fit, colors: dict):
        """Draw ``fit``'s kernel (a `napari_blurfit.BlurFit`) and show the picture."""
        from matplotlib.colors import LinearSegmentedColormap
        from matplotlib.patches import Ellipse

        view = kernel_view(fit)
        if view is None:
            self.clear()
            return
        image, centre, cov, radius = view
        self.figure.clear()
        self.figure.set_facecolor(colors["background"])
        ax = self.axes = self.figure.add_axes((0.02, 0.12, 0.96, 0.86))
        ax.set_facecolor(colors["axes"])  # beyond the truncated kernel: zero, the ramp's start
        ramp = LinearSegmentedColormap.from_list("kernel", [colors["axes"], colors["line"], colors["text"]])
        ry, rx = ((n - 1) / 2 for n in image.shape)
        ax.imshow(image, cmap=ramp, extent=(-rx - 0.5, rx + 0.5, ry + 0.5, -ry - 0.5),
                  interpolation="nearest")
        width, height = 2 * principal(cov)[0]  # the angle turns from +x towards +y, as rows go down
        ax.add_patch(Ellipse(tuple(centre), width, height, angle=angle_of(cov), fill=False,
                             edgecolor=colors["accent"], lw=1))
        ax.plot([0], [0], "+", color=colors["text"], ms=5, mew=0.8)
        ax.set_xlim(-radius, radius)
        ax.set_ylim(radius, -radius)  # rows down, as napari shows them
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(colors["muted"])
        self.figure.text(0.5, 0.01, f"kernel, ±{radius:.3g} px", ha="center", va="bottom",
                         fontsize=7, color=colors["text"])
        self.canvas.draw_idle()
        self.canvas.setVisible(True)
