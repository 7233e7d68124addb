"""A fitted pipeline on a Dask cluster: predictions, pooled vectors and token frames to Parquet.

Runs offline on a local cluster of 2 worker processes (1 thread each) with the packaged MiniLM:

1. fit ``TransformerDocumentEmbeddings -> LogisticRegression`` here, on 150 labelled reviews;
2. predict the other 50 on the workers with ``skembed.dask.transform(..., method="predict")``;
3. write pooled vectors and token-level frames to Parquet, partition by partition, from the
   workers, and read them back;
4. show that each worker process loaded the model once.

    pip install "skembed[dask,minilm]"
    python examples/dask_predict_and_parquet.py
"""

import logging
import os
import pickle
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    import dask
    import dask.dataframe as dd
    from distributed import Client, LocalCluster
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    import skembed
    import skembed.dask
    from skembed import TransformerDocumentEmbeddings, TransformerEmbeddings
    from skembed.datasets import load_reviews

    reviews = load_reviews(as_frame=True)
    train, test = reviews.iloc[:150], reviews.iloc[150:]
    embed = TransformerDocumentEmbeddings("all-MiniLM-L6-v2", pooling="mean", normalize=True)
    pipe = make_pipeline(embed, LogisticRegression(max_iter=1000)).fit(
        train["text"], train["label"]
    )
    size = len(pickle.dumps(pipe))  # what each task carries to a worker: no weights
    print(f"fitted here on {len(train)} reviews; the fitted pipeline pickles to {size} bytes")

    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="skembed-dask-") as tmp,  # the Parquet files too
        dask.config.set({"temporary-directory": tmp}),  # the cluster's scratch space
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"local cluster of 2 worker processes up in {time.perf_counter() - start:.1f} s")
        texts = dd.from_pandas(test, npartitions=4)  # a DataFrame: text and label columns

        # 1. Predictions, computed on the workers; the index of the partitions is kept.
        predicted = skembed.dask.transform(pipe, texts, column="text", method="predict")
        predicted = predicted.compute()
        accuracy = (predicted == test["label"]).mean()
        print(f"predicted {len(predicted)} reviews on the workers: accuracy {accuracy:.2f}")

        # 2. Pooled vectors straight to Parquet: each worker writes the partitions it embeds.
        vectors = Path(tmp) / "vectors"
        skembed.dask.to_parquet(pipe[0], texts, vectors, column="text")
        back = dd.read_parquet(vectors).compute()
        print(
            f"pooled vectors: {len(list(vectors.glob('*.parquet')))} Parquet files, "
            f"read back {back.shape}, columns {list(back.columns[:2])}..."
        )

        # 3. Token-level frames: one row per token, the document's index label repeated.
        tokens = Path(tmp) / "tokens"
        tok = TransformerEmbeddings("all-MiniLM-L6-v2").fit()
        skembed.dask.to_parquet(tok, texts, tokens, column="text")
        frame = dd.read_parquet(tokens).compute()
        print(f"token frames: {frame.shape[0]} token rows for {len(test)} reviews")
        print(frame.iloc[:4, :4].to_string())

        loads = client.run(lambda: sum(skembed.cache_info()["model_loads"].values()))
        print("model loads per worker process:", sorted(loads.values()))


if __name__ == "__main__":  # worker processes re-import this file: keep the work under main()
    main()
