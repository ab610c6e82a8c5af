"""The npe2 manifest is valid and discovered, and what it points to exists."""

import subprocess
import sys
from pathlib import Path

from npe2 import PluginManager


def test_npe2_validate():
    npe2 = Path(sys.executable).with_name("npe2")
    out = subprocess.run([str(npe2), "validate", "napari-blurfit"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_manifest_contributions():
    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-blurfit")
    assert [w.display_name for w in manifest.contributions.widgets] == ["Fit Gaussian blur"]
    assert [s.key for s in manifest.contributions.sample_data] == ["cell_pair"]
    assert "napari/layers/measure" in manifest.contributions.menus
    sample = pm.get_command("napari-blurfit.sample_pair").exec()
    assert [kw["name"] for _, kw, _ in sample] == ["cell reference", "cell target"]
    assert sample[0][0].shape == sample[1][0].shape == (320, 320)
