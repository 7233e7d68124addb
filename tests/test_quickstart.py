"""The quickstart teaches: a table of every candidate with scores that differ, what the cache
saved in numbers that are cache_info's, held-out counts, and a heatmap of the scores."""

import re

import pytest

import skembed
from skembed import quickstart
from skembed._hf.resolve import packaged_minilm_path
from skembed.datasets import load_reviews

pytestmark = pytest.mark.skipif(packaged_minilm_path() is None, reason="packaged MiniLM missing")


def test_default_grid_is_layers_by_pooling():
    assert quickstart.LAYERS == ("0", "2", "4", "6")
    assert quickstart.POOLINGS == ("mean", "max", "min")
    args = quickstart.argparse.ArgumentParser()
    quickstart.add_arguments(args)
    parsed = args.parse_args([])
    assert parsed.layers == list(quickstart.LAYERS) and parsed.pooling == list(quickstart.POOLINGS)
    assert parsed.plot == quickstart.PLOT and not parsed.no_plot


def test_quickstart_prints_a_table_the_cache_savings_and_draws_a_heatmap(
    tmp_path, capsys, monkeypatch
):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)  # nothing is written outside the working directory
    # Half the default grid (the embedding layer and the last) keeps the test short.
    layers, poolings = ["0", "6"], ["mean", "max"]
    skembed.clear_cache()
    calls = []
    real_info = skembed.cache_info
    monkeypatch.setattr(skembed, "cache_info", lambda: calls.append(real_info()) or calls[-1])
    assert quickstart.main(["--layers", *layers, "--pooling", *poolings]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # paragraphs are wrapped

    # The table: one row per candidate, each with its accuracy, rank and mean ± std.
    rows = re.findall(r"^(\d+)\s+(\d) \S*\s+(mean|max)\s+(\d\.\d{3}) ± (\d\.\d{3})$", out, re.M)
    assert sorted((layer, pool) for _, layer, pool, _, _ in rows) == sorted(
        (layer, pool) for layer in layers for pool in poolings
    )
    scores = [float(score) for *_, score, _ in rows]
    assert scores == sorted(scores, reverse=True)  # best first
    # The reviews are written so that the embedding layer cannot read them and the last
    # layer can: the spread is many accuracy steps (a step is one review of a fold, 1/70).
    texts, _ = load_reviews()
    fold = round(len(texts) * 0.7) // 3
    assert scores[0] - scores[-1] >= 5 / fold
    assert scores[0] >= 0.65
    assert re.search(r"^Best: layers='6'", out, re.M)

    # The cache sentence gives cache_info's numbers: one forward pass per training review.
    before, after = calls[:2]
    ran = after["state_misses"] - before["state_misses"]
    reused = after["state_hits"] - before["state_hits"]
    n_train = round(len(texts) * 0.7)
    assert ran == n_train
    assert f"the network ran {ran:,} times, once per training review." in flat
    assert f"({reused:,} reuses, the state_hits of skembed.cache_info()" in flat
    asked = (len(layers) * len(poolings) * 3 + 1) * n_train
    assert f"embedded a review {asked:,} times in all" in flat

    held_out = len(texts) - n_train
    match = re.search(rf"On the {held_out} held-out reviews: (\d+) correct", flat)
    assert match and int(match.group(1)) > held_out / 2

    picture = tmp_path / quickstart.PLOT
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(picture) in out


def test_no_plot_without_matplotlib(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    results = {
        "params": [{"embed__layers": "0", "pool__pooling": "mean"}],
        "mean_test_score": [0.5],
    }
    assert quickstart.save_heatmap(results, ["0"], ["mean"], tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_reviews_are_what_their_script_writes(tmp_path, capsys):
    import importlib.util
    from importlib import resources

    spec = importlib.util.spec_from_file_location(
        "make_reviews", quickstart.Path(__file__).parent.parent / "scripts" / "make_reviews.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.OUT = tmp_path / "reviews.csv"
    module.main()
    shipped = resources.files("skembed").joinpath("data/reviews.csv").read_bytes()
    assert module.OUT.read_bytes() == shipped
