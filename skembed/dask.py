"""Run fitted skembed estimators and pipelines on Dask collections, partition by partition.

A fitted estimator pickles without its weights, so shipping it to Dask workers is cheap; each
worker process loads the model once (through :data:`skembed.cache.MODELS`) the first time a
partition needs it and reuses it for every later partition. The output schema is built from the
fitted estimator's feature names, so Dask never runs the model just to infer ``meta``.

Two output shapes:

* document level (a pooler, a document embedder, or a pipeline whose output is 2-D): one row
  per document, the input partition's index, one column per output feature;
* token level (a token embedder such as :class:`~skembed.TransformerEmbeddings`): one row per
  token, the index label of its document repeated, then ``position``, ``token`` and one column
  per feature (Dask has no MultiIndex; ``(index, position)`` identifies a row).

This module needs the ``dask`` extra: ``pip install "skembed[dask]"``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any

import pandas as pd

from ._device import PER_WORKER, check_device, set_default_device

# One partition's output (embed_partition, output_meta) is made in skembed._partition, pandas
# only; those names, METHODS and is_token_level are skembed.dask's too (``as``: re-exported).
from ._partition import METHODS as METHODS
from ._partition import _resolve_dtype, embed_partition, output_meta
from ._steps import is_token_level as is_token_level
from .base import check_choice

try:
    import dask.dataframe as dd
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'skembed.dask needs Dask: pip install "skembed[dask]" '
        '(or pip install "dask[dataframe]" distributed pyarrow).'
    ) from exc

try:
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - Dask without distributed: the local schedulers only
    WorkerPlugin = object

# In a write_parquet folder; Parquet readers skip names that start with "_" or ".".
MANIFEST = "_skembed_parquet.json"
PART_FILE = re.compile(r"part\.\d+\.parquet")
TEMPORARY_FILE = re.compile(r"\.part\.\d+\.parquet\.[0-9a-f]+\.tmp")


def _series(data, column) -> dd.Series:
    if isinstance(data, dd.DataFrame):
        if column is None:
            if len(data.columns) != 1:
                raise ValueError(
                    f"data has columns {list(data.columns)[:5]}: pass column='the text column'."
                )
            column = data.columns[0]
        return data[column]
    if isinstance(data, dd.Series):
        return data
    raise TypeError(
        f"data must be a Dask Series or DataFrame, got {type(data).__name__}; "
        "for pandas use dask.dataframe.from_pandas(data, npartitions=...)."
    )


def transform(
    estimator, data, *, column=None, method: str = "transform", dtype=None
) -> dd.DataFrame | dd.Series:
    """Embed a Dask collection of documents lazily, one task per partition.

    Parameters
    ----------
    estimator : fitted skembed estimator or Pipeline
        Shipped to the workers without its weights; each worker process loads the model once.
    data : dask Series or DataFrame
        The documents (strings or token lists).
    column : str, optional
        The text column when ``data`` is a DataFrame with several columns.
    method : {"transform", "predict", "predict_proba"}, default="transform"
        Which method of ``estimator`` to apply (``predict`` for a pipeline ending in a
        classifier gives a Series named ``"prediction"``).
    dtype : numpy dtype, optional
        Dtype of the feature columns (float32 for skembed outputs, float64 for other steps).

    Returns
    -------
    dask DataFrame (or Series for ``predict``)
        Columns are the estimator's feature names; the partition index (and divisions) are
        kept. Token-level estimators give one row per token (see the module docstring).

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd
    >>> from skembed import TransformerDocumentEmbeddings
    >>> import skembed.dask
    >>> emb = TransformerDocumentEmbeddings().fit()
    >>> texts = dd.from_pandas(pd.Series(["one text", "two", "three"]), npartitions=2)
    >>> skembed.dask.transform(emb, texts).compute().shape
    (3, 384)
    """
    series = _series(data, column)
    dtype = _resolve_dtype(estimator, method, dtype)
    meta = output_meta(estimator, series._meta.index, method, dtype)
    # The index passes through unchanged, so Dask keeps the divisions.
    return series.map_partitions(
        embed_partition, estimator, method, dtype, meta=meta, transform_divisions=False
    )


def to_parquet(estimator, data, path, *, column=None, method: str = "transform", **kwargs) -> Any:
    """Embed ``data`` and write the result to Parquet, each partition by the worker that made it.

    Nothing is gathered in the client; a partition's vectors are written as soon as they are
    computed. ``kwargs`` go to :meth:`dask.dataframe.DataFrame.to_parquet` (``compute=False``
    returns a lazy object to compute later). Read back with ``dask.dataframe.read_parquet``.

    Examples
    --------
    >>> import tempfile, dask.dataframe as dd, pandas as pd
    >>> from skembed import TransformerDocumentEmbeddings
    >>> import skembed.dask
    >>> emb = TransformerDocumentEmbeddings().fit()
    >>> texts = dd.from_pandas(pd.Series(["one text", "two", "three"]), npartitions=2)
    >>> folder = tempfile.mkdtemp()
    >>> skembed.dask.to_parquet(emb, texts, folder)
    >>> dd.read_parquet(folder).compute().shape
    (3, 384)
    """
    out = transform(estimator, data, column=column, method=method)
    if method == "predict":
        out = out.to_frame()
    return out.to_parquet(path, **kwargs)


def _part_name(number: int, n_parts: int) -> str:
    return f"part.{number:0{max(5, len(str(n_parts - 1)))}d}.parquet"


def _write_partition(part, estimator, path: str, method: str, dtype, number: int) -> int:
    """Embed one partition and write it to ``path`` atomically; return its number of rows."""
    if os.path.exists(path):
        # Written earlier in this call (the call removed or skipped older files): Dask runs a
        # task again when the worker holding its result died; the file is already whole.
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    out = embed_partition(part, estimator, method, dtype, {"number": number})
    if isinstance(out, pd.Series):
        out = out.to_frame()
    folder, name = os.path.split(path)
    # A hidden temporary name in the same folder, then one rename: a reader (or a resumed
    # job) sees the whole partition or nothing, also when this worker is killed mid-write.
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        out.to_parquet(temporary, index=True)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return len(out)


def _write_manifest(folder: str, manifest: dict) -> None:
    path = os.path.join(folder, MANIFEST)
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    os.replace(temporary, path)


def _check_manifest(folder: str, manifest: dict) -> None:
    """Refuse to resume into a folder written with another partitioning or output."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        _write_manifest(folder, manifest)
        return
    with open(path, encoding="utf-8") as f:
        found = json.load(f)
    if found != manifest:
        changed = sorted(k for k in manifest if found.get(k) != manifest[k])
        raise ValueError(
            f"{folder} holds Parquet partitions written with a different {', '.join(changed)} "
            f"(see its {MANIFEST}): resuming would mix two outputs. Write to a new folder, or "
            "pass resume=False to write every partition again."
        )


def write_parquet(
    estimator,
    data,
    folder,
    *,
    column=None,
    method: str = "transform",
    dtype=None,
    resume: bool = True,
) -> dict:
    """Embed ``data`` into one Parquet file per partition, skipping partitions already written.

    Partition ``i`` goes to ``folder/part.<i>.parquet`` (numbers zero-padded), written by the
    worker that embedded it under a hidden temporary name and then renamed, so a file exists
    only once its partition is complete. A job killed midway (the client, the cluster, the
    machine) is resumed by calling again with the same collection: the partitions whose file
    exists are neither read nor embedded again, the others are, and the folder ends up as one
    uninterrupted run would have written it. A worker killed mid-run costs only the partitions
    it was embedding: Dask runs them again, and the rename makes each file appear once (a
    task of a partition whose file is written returns its row count without embedding it).
    Temporary files left by a killed worker are removed by the next call (do not run two
    calls into one folder at the same time).

    Parameters
    ----------
    estimator : fitted skembed estimator or Pipeline
    data : dask Series or DataFrame
        The documents. Their partitioning must be the same from one call to the next (the
        same Parquet files, or the same ``npartitions``): file ``i`` holds partition ``i``.
    folder : str or path
        A folder every worker can write to (a local disk for a ``LocalCluster``, a shared
        file system for several machines); made if missing.
    column : str, optional
        The text column when ``data`` is a DataFrame with several columns.
    method : {"transform", "predict", "predict_proba"}, default="transform"
    dtype : numpy dtype, optional
        As in :func:`output_meta`.
    resume : bool, default=True
        Skip the partitions whose file exists. ``False`` removes the folder's partition
        files (``part.<number>.parquet``) and writes every partition again.

    Returns
    -------
    dict
        ``written`` and ``skipped``: the partition numbers embedded by this call and those
        found done; ``rows``: the rows this call wrote.

    Raises
    ------
    ValueError
        When ``folder`` holds partitions of another partitioning, method or set of output
        columns (recorded in its ``_skembed_parquet.json``) and ``resume`` is True.

    Notes
    -----
    Each file holds the output of :func:`embed_partition`, the partition's index included:
    read the folder with ``dask.dataframe.read_parquet(folder)`` (or pandas), partitions in
    order. Give the input an index that identifies documents (``read_parquet(...,
    index="id")``) to find it in the output. To skip the forward pass of documents a killed
    job had embedded in a partition it had not finished, keep states across runs too
    (``WorkerSetup(state_directory=...)``, see docs/scaling.md).

    Examples
    --------
    >>> import tempfile, dask.dataframe as dd, pandas as pd
    >>> from skembed import TransformerDocumentEmbeddings
    >>> import skembed.dask
    >>> emb = TransformerDocumentEmbeddings().fit()
    >>> texts = dd.from_pandas(pd.Series(["one text", "two", "three"]), npartitions=2)
    >>> folder = tempfile.mkdtemp()
    >>> skembed.dask.write_parquet(emb, texts, folder)
    {'written': [0, 1], 'skipped': [], 'rows': 3}
    >>> skembed.dask.write_parquet(emb, texts, folder)  # done: nothing runs
    {'written': [], 'skipped': [0, 1], 'rows': 0}
    >>> dd.read_parquet(folder).compute().shape
    (3, 384)
    """
    import dask

    check_choice("resume", resume, (True, False))
    series = _series(data, column)
    dtype = _resolve_dtype(estimator, method, dtype)
    meta = output_meta(estimator, series._meta.index, method, dtype)  # fitted, columns known
    folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    os.makedirs(folder, exist_ok=True)
    n_parts = series.npartitions
    names = [os.path.join(folder, _part_name(i, n_parts)) for i in range(n_parts)]
    columns = [str(meta.name)] if isinstance(meta, pd.Series) else [str(c) for c in meta.columns]
    manifest = {"npartitions": n_parts, "method": method, "columns": columns}
    if resume:
        _check_manifest(folder, manifest)
    else:  # a fresh output: no partition of an earlier run (of another partitioning) stays
        for name in os.listdir(folder):
            if PART_FILE.fullmatch(name):
                os.remove(os.path.join(folder, name))
        _write_manifest(folder, manifest)
    for name in os.listdir(folder):  # left by workers killed mid-write
        if TEMPORARY_FILE.fullmatch(name):
            os.remove(os.path.join(folder, name))
    todo = [i for i in range(n_parts) if not (resume and os.path.exists(names[i]))]
    parts = series.to_delayed()
    tasks = [
        dask.delayed(_write_partition)(parts[i], estimator, names[i], method, dtype, i)
        for i in todo
    ]
    rows = dask.compute(*tasks) if tasks else ()
    skipped = sorted(set(range(n_parts)) - set(todo))
    return {"written": todo, "skipped": skipped, "rows": int(sum(rows))}


class WorkerSetup(WorkerPlugin):
    """Configure skembed in every Dask worker process, including workers started later.

    Settings made with ``client.run`` are lost when a worker restarts; a plugin registered with
    ``client.register_plugin(WorkerSetup(...))`` runs again in every new worker process.

    Parameters
    ----------
    state_cache : bool, default=True
        Keep the forward-pass states of documents (see :func:`skembed.set_cache`). A worker
        that streams a corpus once gains nothing from it: turn it off to save memory.
    state_max_bytes : int, optional
        Byte budget of the state cache of each worker (1 GiB by default).
    shared_states : bool, default=False
        Whether workers on one machine share forward-pass states through a temporary folder
        (see :func:`skembed.set_cache`). Partitions hold different documents, so sharing
        only writes files nobody reads; turn it on when workers embed the same documents
        (a grid search run on the cluster).
    torch_threads : int, optional
        ``torch.set_num_threads`` in each worker (Dask starts workers with
        ``OMP_NUM_THREADS=1``, so torch uses one thread unless told otherwise).
    device : str, optional
        What estimators fitted with ``device="auto"`` or ``"cuda"`` run on in each worker
        (resolved in the worker, when it unpickles them; an explicit ``"cuda:<index>"`` is kept).
        ``None`` leaves the default (CUDA when present, on the worker's current CUDA device:
        right with dask-cuda, which gives each worker its own ``CUDA_VISIBLE_DEVICES``). A device
        string (``"cpu"``, ``"cuda:1"``) applies to every worker. ``"per-worker"`` gives each
        worker process on a machine its own GPU: the k-th live worker gets
        ``cuda:{k % device_count}`` (counted among processes that see the same
        ``CUDA_VISIBLE_DEVICES``; a restarted worker takes the place of the one it replaces),
        and the CPU where CUDA is missing. Start one worker per GPU (see docs/scaling.md).
    state_directory : str or path, optional
        Keep forward-pass states in this folder across processes and runs
        (``skembed.set_cache(directory=...)`` in each worker; a folder all workers see): a
        job killed midway and started again reads the states of the documents it had
        embedded instead of running them through the network. Needs ``state_cache=True``;
        the workers write to it whatever ``shared_states`` says. Bounded by
        ``set_cache(max_disk_bytes=...)`` (10 GiB by default).

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    >>> client = Client(cluster)
    >>> _ = client.register_plugin(WorkerSetup(state_cache=False, torch_threads=2))
    >>> import skembed
    >>> list(client.run(lambda: skembed.cache_info()["state_enabled"]).values())
    [False]
    >>> client.close(); cluster.close()
    """

    name = "skembed-worker-setup"

    def __init__(
        self,
        state_cache: bool = True,
        state_max_bytes=None,
        torch_threads=None,
        shared_states: bool = False,
        device=None,
        state_directory=None,
    ):
        if device is not None and device != PER_WORKER:
            device = check_device(device)  # fail in the client, not in every worker
        if state_directory is not None:
            if not state_cache:
                raise ValueError(
                    "state_directory needs state_cache=True: states reach the folder "
                    "through the state cache."
                )
            state_directory = os.fspath(state_directory)
        self.device = device
        self.state_directory = state_directory
        self.state_cache = state_cache
        self.state_max_bytes = state_max_bytes
        self.torch_threads = torch_threads
        self.shared_states = shared_states

    def setup(self, worker=None) -> None:
        import torch

        from .cache import set_cache

        directory = getattr(self, "state_directory", None)  # plugins pickled before it
        set_cache(
            enabled=self.state_cache,
            max_bytes=self.state_max_bytes,
            shared=self.shared_states or directory is not None,
        )
        if directory is not None:
            set_cache(directory=directory)
        if self.torch_threads is not None:
            torch.set_num_threads(int(self.torch_threads))
        if getattr(self, "device", None) is not None:  # plugins pickled before it had a device
            set_default_device(self.device)

    def teardown(self, worker=None) -> None:
        if getattr(self, "device", None) is not None:
            set_default_device(None)
