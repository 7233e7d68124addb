"""CharacterEmbeddings: random character features, then features trained on the labels in ``fit``.

1. Makes up words whose part-of-speech tag is given by their suffix (``-ing``, ``-ly``,
   ``-tion``...), split into training and held-out documents (no held-out word is ever seen).
2. Embeds the tokens with a seeded random character BiLSTM (``fit(X)``) and with one trained
   on the per-token tags (``fit(X, y)``, early stopping on a held-out tenth), and scores a
   logistic regression on each set of features: the trained features win.
3. Trains on document labels inside a Pipeline (the Pipeline passes ``y`` to ``fit``), with a
   GridSearchCV over the LSTM size, then pickles the fitted pipeline with its trained weights.

Runs offline in well under a minute on a CPU:

    python examples/pooled_character_tagging.py
"""

from __future__ import annotations

import pickle
import random
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skembed import CharacterEmbeddings, DocumentPoolEmbeddings, token_xy

SUFFIXES = {"ing": "VERB", "ed": "VERB", "ly": "ADV", "tion": "NOUN", "ness": "NOUN", "ous": "ADJ"}


def tagged_documents(n_docs: int, rng: random.Random):
    docs, tags = [], []
    for _ in range(n_docs):
        words = [
            "".join(rng.choice("abcdefghiklmnoprstu") for _ in range(rng.randint(2, 6)))
            + rng.choice(list(SUFFIXES))
            for _ in range(rng.randint(3, 8))
        ]
        docs.append(words)
        tags.append([next(t for s, t in SUFFIXES.items() if w.endswith(s)) for w in words])
    return docs, tags


def main() -> None:
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    rng = random.Random(0)
    train_docs, train_tags = tagged_documents(80, rng)
    test_docs, test_tags = tagged_documents(40, rng)
    print(f"{sum(map(len, train_docs))} training tokens, {sum(map(len, test_docs))} held out")
    print(f"  e.g. {list(zip(train_docs[0], train_tags[0]))[:4]}")

    sizes = {"char_embedding_dim": 6, "hidden_size_char": 3, "device": "cpu", "random_state": 0}
    for name, y in (("random ", None), ("trained", train_tags)):
        start = time.perf_counter()
        emb = CharacterEmbeddings(**sizes, max_epochs=20, learning_rate=0.05, batch_size=8).fit(
            train_docs, y
        )
        X_train, y_train = token_xy(emb.transform(train_docs), train_tags)
        X_test, y_test = token_xy(emb.transform(test_docs), test_tags)
        score = LogisticRegression(max_iter=2000).fit(X_train, y_train).score(X_test, y_test)
        note = ""
        if y is not None:
            note = f", {len(emb.loss_curve_)} epochs, kept epoch {emb.best_epoch_}"
        print(
            f"{name} features ({emb.n_features_out_}): held-out accuracy {score:.3f} "
            f"({time.perf_counter() - start:.1f} s{note})"
        )

    names = ["Anna", "Bert", "Clara", "Dieter", "Emma", "Felix", "Greta", "Hans", "Ida", "Jonas"]
    common = ["table", "river", "green", "under", "apple", "quiet", "stone", "water", "bread"]
    texts, labels = [], []
    for k in range(96):  # label: does the document name a person?
        words = rng.sample(common, 3) + [rng.choice(names if k % 2 == 0 else common)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(int(k % 2 == 0))
    pipe = make_pipeline(
        CharacterEmbeddings(**sizes, max_epochs=10, learning_rate=0.1, batch_size=8),
        DocumentPoolEmbeddings(pooling="mean"),
        LogisticRegression(max_iter=1000),
    )
    search = GridSearchCV(pipe, {"characterembeddings__hidden_size_char": [3, 6]}, cv=2)
    search.fit(texts[:64], labels[:64])
    best = search.best_estimator_
    print(
        f"\ndocument labels in a pipeline: best {search.best_params_}, held-out accuracy "
        f"{best.score(texts[64:], labels[64:]):.3f}"
    )
    back = pickle.loads(pickle.dumps(best))
    same = np.array_equal(back.predict_proba(texts[64:]), best.predict_proba(texts[64:]))
    print(f"pickled with its trained weights: same predictions after loading: {same}")


if __name__ == "__main__":
    main()
