"""Driving the front ends in tests as a user would: the command in process, the dock widget."""


def run_main(capsys, *args):
    """``main(argv)`` in process: (exit status, stdout, stderr)."""
    from napari_blurfit.cli import main

    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


def widget_for(viewer, reference, target, **options):
    """A widget on ``viewer`` with the two named layers picked and options set."""
    from napari_blurfit._widget import BlurFitWidget  # Qt only where a test drives the dock

    widget = BlurFitWidget(viewer)
    widget.reference.value = viewer.layers[reference]
    widget.target.value = viewer.layers[target]
    for name, value in options.items():
        getattr(widget, name).value = value
    return widget


def run(widget, qtbot, timeout=120_000):
    """Start the widget's fit and wait until its worker is done; the worker."""
    worker = widget.start_fit()
    assert worker is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)
    return worker
