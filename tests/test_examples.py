"""Every script in examples/ runs (so the documentation never rots)."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, capsys):
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out  # it printed its results


def test_docstring_examples():
    import doctest

    import napari_blurfit.blurmap
    import napari_blurfit.fit
    import napari_blurfit.stack

    for module in (napari_blurfit.fit, napari_blurfit.stack, napari_blurfit.blurmap):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
