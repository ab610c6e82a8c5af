"""The fitting core runs without napari or Qt (scripts, CLI, cluster workers)."""

import subprocess
import sys


def test_core_imports_no_gui():
    code = (
        "import sys, numpy as np\n"
        "import napari_blurfit, napari_blurfit.cli, napari_blurfit.io\n"
        "from napari_blurfit import fit_blur\n"
        "a = np.random.default_rng(0).random((32, 32))\n"
        "fit_blur(a, a + 0.1 * a[::-1])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt6', 'PyQt5',"
        " 'PySide6', 'magicgui', 'vispy')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
