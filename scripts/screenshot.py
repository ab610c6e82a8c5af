"""Save docs/screenshot.png and docs/screenshots/*.png: the real widget docked in napari.

docs/screenshot.png: the sample pair after a fit, reference / target / fit / residual in a grid.
docs/screenshots/: the default dock, after a fit, per-frame and blur-map modes (the map's
colourbar in the dock), after an error (a rotated target picked after the blur map: every
earlier result cleared), a rotated, shifted kernel fitted with kernel "rotated" and "fit shift", and
two layers on different grids (a fine reference beside its blurred 2 x 2 block means).

Run under a display, e.g.: xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshot.py
"""

from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication, QMenu
from scipy import ndimage

from napari_blurfit._gaussian import GaussianKernel
from napari_blurfit.layers import KernelShape
from napari_blurfit.sample_data import load_sample_pair

DOCS = Path(__file__).resolve().parents[1] / "docs"
SHOTS = DOCS / "screenshots"


def settle(rounds=30):
    for _ in range(rounds):
        QApplication.processEvents()


def fit(widget):
    widget.start_fit()
    while widget._worker is not None:
        QApplication.processEvents()
    settle()


def save(viewer, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    settle()
    viewer.window._qt_window.grab().save(str(path))
    print("saved", path)


def save_grid(viewer, path):
    """Reference, target, fit and residual side by side, saved."""
    viewer.grid.enabled = True
    viewer.grid.shape = (2, 2)
    viewer.reset_view()
    save(viewer, path)


def sample_menu_path(viewer):
    """The menu path napari shows for this plugin's sample (for the README)."""
    for menu in viewer.window._qt_window.findChildren(QMenu):
        if menu.title().replace("&", "") == "Open Sample":
            for action in menu.actions():
                sub = action.menu()
                if "Blur Fit" in action.text():
                    items = [a.text() for a in sub.actions()] if sub is not None else []
                    return ["File", "Open Sample", action.text(), *items]
    return []


viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1400, 900)
print("menu:", " > ".join(sample_menu_path(viewer)))
viewer.open_sample("napari-blurfit", "cell_pair")
_, widget = viewer.window.add_plugin_dock_widget("napari-blurfit", "Fit Gaussian blur")
save(viewer, SHOTS / "1-default-dock.png")

widget.gain_offset.value = True
widget._options_section.expand(animate=False)
fit(widget)
save_grid(viewer, DOCS / "screenshot.png")
widget.plots.tabs.setCurrentIndex(1)
save(viewer, SHOTS / "2-after-fit-transfer.png")
widget.plots.tabs.setCurrentIndex(0)
print(widget.result_text.text())

viewer.grid.enabled = False
viewer.layers.clear()
rng = np.random.default_rng(0)
frames = np.stack([ndimage.zoom(rng.random((40, 40)), 4) * 100 for _ in range(8)]).astype(np.float32)
viewer.add_image(frames, name="movie")
viewer.add_image(np.stack([ndimage.gaussian_filter(f, 1 + 0.3 * i) for i, f in enumerate(frames)]),
                 name="movie blurred")
widget.reference.value, widget.target.value = viewer.layers["movie"], viewer.layers["movie blurred"]
widget.mode.value = "per frame"
fit(widget)
save(viewer, SHOTS / "4-per-frame.png")
print(widget.result_text.text())

viewer.layers.clear()
sharp, _ = load_sample_pair()
sharp = sharp.astype(np.float32)  # a uint8 target would round small blurs up
ramp = np.linspace(0.5, 4.0, sharp.shape[1])
varying = np.stack([ndimage.gaussian_filter(sharp, s)[:, i] for i, s in enumerate(ramp)], axis=1)
viewer.add_image(sharp, name="sharp", scale=(0.107, 0.107), units=("um", "um"))
viewer.add_image(varying, name="blur 0.5 to 4 px", scale=(0.107, 0.107), units=("um", "um"))
widget.reference.value, widget.target.value = viewer.layers["sharp"], viewer.layers["blur 0.5 to 4 px"]
widget.mode.value = "blur map"
widget.tile.value = 64
fit(widget)
viewer.reset_view()
save(viewer, SHOTS / "5-blur-map.png")
print(widget.result_text.text())

turned = viewer.add_image(sharp, name="turned 10°", rotate=10, scale=(0.107, 0.107), units=("um", "um"))
widget.target.value = turned  # an error: the blur map's numbers, histogram and colourbar go
save(viewer, SHOTS / "3-after-error.png")
print(widget.status.text())

viewer.layers.clear()
widget.mode.value = "whole image/volume"
moved = GaussianKernel.from_basicsr(2.5, 1.2, 0.5, shift=(0.4, -0.6)).apply(sharp)
moved = (moved + rng.normal(0, 2.0, moved.shape)).astype(np.float32)  # camera-like noise
viewer.add_image(sharp, name="sharp", scale=(0.2, 0.2), units=("um", "um"))
viewer.add_image(moved, name="rotated, shifted", scale=(0.2, 0.2), units=("um", "um"))
widget.reference.value, widget.target.value = viewer.layers["sharp"], viewer.layers["rotated, shifted"]
widget.gain_offset.value = False
widget.kernel.value = KernelShape.ROTATED
widget.fit_shift.value = True
widget._options_section.collapse(animate=False)  # room for the longer result on a 900 px screen
fit(widget)
save_grid(viewer, SHOTS / "6-rotated-shift.png")
print(widget.result_text.text())

viewer.grid.enabled = False
viewer.layers.clear()
blocks = ndimage.gaussian_filter(sharp, 2.5)
blocks = blocks[: blocks.shape[0] // 2 * 2, : blocks.shape[1] // 2 * 2]
blocks = blocks.reshape(blocks.shape[0] // 2, 2, blocks.shape[1] // 2, 2).mean(axis=(1, 3))
blocks = (blocks + rng.normal(0, 1.0, blocks.shape)).astype(np.float32)  # camera-like noise
viewer.add_image(sharp, name="fine (65 nm)", scale=(0.065, 0.065), units=("um", "um"))
viewer.add_image(blocks, name="coarse (130 nm)", scale=(0.13, 0.13), translate=(0.0325, 0.0325),
                 units=("um", "um"))  # a block's centre: half a fine pixel past its first one
widget.reference.value, widget.target.value = viewer.layers["fine (65 nm)"], viewer.layers["coarse (130 nm)"]
widget.kernel.value = KernelShape.ROUND
widget.fit_shift.value = False
widget._options_section.expand(animate=False)  # the "target pixels" choice
fit(widget)
save_grid(viewer, SHOTS / "7-grids.png")
print(widget.result_text.text())

viewer.close()
