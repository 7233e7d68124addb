"""Write skembed/data/reviews.csv: the short movie reviews that ship with skembed.

The reviews are written for skembed (templates and word lists below, drawn with a fixed
seed), so they are the project's own work under its licence. Run
``python scripts/make_reviews.py`` to write the file again: the same seed gives the same file.

Why these reviews: in most of them the words alone do not give the label away. Every
template comes in pairs that use the same words for both labels ("The plot was dull." and
"The plot was not dull at all."; "The cast was clumsy, but overall the film was superb." and
"The cast was superb, but overall the film was clumsy."), so a classifier must read the
order and the negation, which the upper layers of a transformer encode better than its
embedding layer. That makes the layer and pooling choices of a grid search matter.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SEED = 0
N_REVIEWS = 300
OUT = Path(__file__).resolve().parent.parent / "skembed" / "data" / "reviews.csv"

ASPECTS = [
    "acting", "plot", "script", "soundtrack", "ending", "dialogue", "camera work", "pacing",
    "cast", "story", "direction", "photography", "music", "humour", "editing", "lead actor",
]  # fmt: skip
POSITIVE = [
    "wonderful", "brilliant", "superb", "moving", "delightful", "gripping", "charming",
    "excellent", "beautiful", "clever", "funny", "touching", "great", "fresh", "stunning",
]  # fmt: skip
NEGATIVE = [
    "dull", "boring", "awful", "clumsy", "tedious", "flat", "painful", "weak", "bland",
    "terrible", "lifeless", "predictable", "forgettable", "messy", "dreadful",
]  # fmt: skip

# (template, which adjective decides, whether the sentence flips it). {a}, {b}: aspects;
# {x}: the first adjective; {y}: a second adjective of the other polarity.
TEMPLATES = [
    ("The {a} was {x}.", "x", False),
    ("What a {x} {a}.", "x", False),
    ("The {a} was {x} from start to finish.", "x", False),
    ("The {a} was not {x} at all.", "x", True),
    ("I would never call the {a} {x}.", "x", True),
    ("The {a} was {x}, but overall the film was {y}.", "y", False),
    ("Overall the film was {x}, even if the {a} was {y}.", "x", False),
    ("I expected the {a} to be {x}, but it was {y}.", "y", False),
]


def review(rng: random.Random, template: str, decides: str, flips: bool, positive: bool):
    """One review with the wanted label, drawn for ``template``."""
    polarity = positive != flips  # the polarity of the deciding adjective
    good, bad = rng.choice(POSITIVE), rng.choice(NEGATIVE)
    x, y = (good, bad) if (decides == "x") == polarity else (bad, good)
    a, b = rng.sample(ASPECTS, 2)
    text = template.format(a=a, b=b, x=x, y=y)
    return text[0].upper() + text[1:], "positive" if positive else "negative"


def main() -> None:
    rng = random.Random(SEED)
    rows, seen = [], set()
    for _ in range(100 * N_REVIEWS):
        i = len(rows)
        template, decides, flips = TEMPLATES[(i // 2) % len(TEMPLATES)]
        text, label = review(rng, template, decides, flips, positive=i % 2 == 0)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
        if len(rows) == N_REVIEWS:
            break
    else:
        raise RuntimeError("the templates and word lists give too few distinct reviews")
    rng.shuffle(rows)
    with OUT.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} reviews to {OUT}")


if __name__ == "__main__":
    main()
