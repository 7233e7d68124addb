"""The README's example and the shipped data set stay true to the code."""

import re
from pathlib import Path

from skembed.datasets import load_reviews

ROOT = Path(__file__).resolve().parent.parent


def test_reviews_dataset():
    texts, labels = load_reviews()
    assert len(texts) == len(labels) == 300
    assert labels.count("positive") == labels.count("negative") == 150
    assert len(set(texts)) == len(texts)
    frame = load_reviews(as_frame=True)
    assert list(frame.columns) == ["text", "label"]


def test_readme_example_runs(capsys):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Ten lines\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    exec(compile(block, "README.md", "exec"), {})
    assert "transformerembeddings__layers" in capsys.readouterr().out


def test_cli_lists_quickstart(capsys):
    import pytest

    from skembed.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "quickstart" in capsys.readouterr().out


def test_choosing_page_is_linked_and_names_real_classes():
    import skembed

    assert "(docs/choosing.md)" in (ROOT / "README.md").read_text()
    assert "choosing.md" in (ROOT / "mkdocs.yml").read_text()
    page = (ROOT / "docs" / "choosing.md").read_text()
    named = set(re.findall(r"\b([A-Z][A-Za-z0-9]*Embeddings)\b", page))
    assert len(named) >= 14
    assert named <= set(skembed.__all__) | {"SentenceTransformer"}, named - set(skembed.__all__)
