"""Save docs/screenshot.png: the real widget docked in napari after a fit of the sample pair.

Run under a display, e.g.: xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshot.py
"""

from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"

viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1400, 900)
viewer.open_sample("napari-blurfit", "cell_pair")
_, widget = viewer.window.add_plugin_dock_widget("napari-blurfit", "Fit Gaussian blur")
widget.gain_offset.value = True
widget.per_axis.value = True
worker = widget.start_fit()
while widget._worker is not None:
    QApplication.processEvents()
viewer.grid.enabled = True  # reference, target, fit and residual side by side
viewer.grid.shape = (2, 2)
viewer.reset_view()
for _ in range(20):
    QApplication.processEvents()
viewer.window._qt_window.grab().save(str(OUT))
print("saved", OUT)
print(widget.result_text.value)
viewer.close()
