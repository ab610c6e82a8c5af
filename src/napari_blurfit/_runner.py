"""Run a dataset's per-pair work in process or as tasks on a `dask.distributed` cluster.

A task reads its own pair (paths travel to the workers, not pixels) and returns a small
`Outcome`. At most `IN_FLIGHT_PER_THREAD` tasks per worker thread are submitted at a time, so a
worker holds about one pair's pixels per thread whatever the number of pairs, and results are
handed back as they finish.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from ._pair_grids import GridPair, pair_grids
from ._result import BlurFit
from .fit import fit_blur
from .io import read_image

IN_FLIGHT_PER_THREAD = 2  # tasks submitted per worker thread: one running, one ready to start
RETRIES = 2  # reruns of a task that raised unexpectedly (a lost worker's tasks are rerun anyway)


class Outcome(NamedTuple):
    """One pair's outcome: its fit (or why there is none), and its shapes, dtypes and grids when read.

    ``grids``: the (reference, target) grids the pair is fitted across, None when it is fitted
    on one grid.
    """

    fit: BlurFit | None = None
    error: str | None = None
    shape: tuple[int, ...] | None = None  # the reference's
    dtypes: tuple | None = None  # (reference, target)
    target_shape: tuple[int, ...] | None = None
    grids: tuple | None = None


def active_client():
    """The `dask.distributed` client dask itself would compute on now, or None.

    As in ``dask.compute``: the current client (a worker's own inside a task). No client can
    exist unless ``distributed`` is imported, so it is not imported here.
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        return None


def load(item) -> np.ndarray:
    """A pair's image: an array as it is, anything else read as a file."""
    return item if isinstance(item, np.ndarray) else read_image(item)


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def fit_loaded(a, b, options: dict | None, grids: GridPair | None = None,
               spatial_axes=None) -> Outcome:
    """Fit one read pair (``options`` None: only describe it, for a joint fit).

    ``grids``: the pair's grids from pixel sizes (`napari_blurfit._pair_grids`); None when no
    grid was asked for, so the pair is fitted as `fit_blur` takes it.
    """
    try:
        chosen = {} if grids is None else pair_grids(a.shape, b.shape, spatial_axes, grids)
    except ValueError as err:
        return Outcome(error=_reason(err))
    described = Outcome(shape=a.shape, dtypes=(a.dtype, b.dtype), target_shape=b.shape,
                        grids=(chosen["reference_grid"], chosen["target_grid"]) if chosen else None)
    if options is None:
        return described
    try:
        return described._replace(fit=fit_blur(a, b, **options, **chosen))
    except (ValueError, TypeError) as err:
        return Outcome(error=_reason(err))


def read_pair(reference, target) -> tuple[np.ndarray, np.ndarray] | Outcome:
    """Both images of a pair, or the `Outcome` that says why they cannot be read."""
    try:
        return load(reference), load(target)
    except (OSError, ValueError, TypeError) as err:
        return Outcome(error=_reason(err))


def pair_task(reference, target, options: dict | None, grids: GridPair | None = None,
              spatial_axes=None) -> Outcome:
    """A cluster task: read one pair on the worker and fit (or describe) it."""
    pixels = read_pair(reference, target)
    return pixels if isinstance(pixels, Outcome) else fit_loaded(*pixels, options, grids, spatial_axes)


def _ship(client, item):
    """A path travels as it is; an array is scattered, so it is not embedded in the task."""
    return client.scatter(item, hash=False) if isinstance(item, np.ndarray) else item


def _task_options(client, options: dict | None) -> dict | None:
    """Options as every task gets them: FFTs on one thread unless asked, a mask sent once.

    A callback is the caller's: it is called here, not on the workers.
    """
    if options is None:
        return None
    options = {"workers": 1, **{k: v for k, v in options.items() if k != "callback"}}
    if isinstance(options.get("mask"), np.ndarray):
        options["mask"] = client.scatter(options["mask"], broadcast=True, hash=False)
    return options


def _in_flight(client) -> int:
    return IN_FLIGHT_PER_THREAD * max(1, sum(client.nthreads().values()))


def _collected(future) -> Outcome:
    """A finished task's outcome.

    A task that failed for good (its workers died too often, or it raised after its retries)
    gives that pair's error.
    """
    if future.status == "finished":
        return future.result()
    err = future.exception()
    return Outcome(error=f"the task failed: {_reason(err)}")


def on_cluster(client, pairs, indexes, options: dict | None, *, retries: int = RETRIES,
               grids=None, spatial_axes=None) -> Iterator[tuple[int, Outcome]]:
    """``(index, outcome)`` of ``pairs[index]`` for each index, in the order the tasks finish.

    New tasks are submitted as earlier ones finish, so at most a few per worker thread are in
    flight. ``grids``: a `GridPair` per pair (see `fit_loaded`), or None.
    """
    from distributed import as_completed

    options = _task_options(client, options)
    todo = iter(indexes)
    index_of = {}

    def submit(i):
        future = client.submit(pair_task, *(_ship(client, p) for p in pairs[i]), options,
                               None if grids is None else grids[i], spatial_axes,
                               retries=retries, pure=False)
        index_of[future.key] = i
        return future

    running = as_completed([submit(i) for i in itertools.islice(todo, _in_flight(client))])
    for future in running:
        i = index_of.pop(future.key)
        outcome = _collected(future)
        future.release()
        following = next(todo, None)
        if following is not None:
            running.add(submit(following))
        yield i, outcome


def in_process(pairs, indexes, options: dict | None, keep=None, *, grids=None,
               spatial_axes=None) -> Iterator[tuple[int, Outcome]]:
    """``(index, outcome)`` of ``pairs[index]`` for each index, one after another, here.

    ``keep(index, reference, target)``, if given, is offered the pixels of each pair that was
    read and fitted, so a joint fit need not read them again. ``grids``: a `GridPair` per pair
    (see `fit_loaded`), or None.
    """
    for i in indexes:
        pixels = read_pair(*pairs[i])
        if isinstance(pixels, Outcome):
            yield i, pixels
            continue
        outcome = fit_loaded(*pixels, options, None if grids is None else grids[i], spatial_axes)
        if keep is not None and outcome.error is None:
            keep(i, *pixels)
        yield i, outcome
