"""Training character LMs: perplexity goes down, Flair-format checkpoints, exact resume, CLI."""

from __future__ import annotations

import inspect
import random

import numpy as np
import pytest
import torch

from skembed.cli import main as cli_main
from skembed.flair import CharLM, FlairEmbeddings, train_language_model
from skembed.flair.train import _Run
from skembed.flair.unpickle import load_pt

TINY = {
    "hidden_size": 32,
    "embedding_size": 8,
    "sequence_length": 40,
    "mini_batch_size": 10,
    "show_progress_bar": False,
    "device": "cpu",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def corpus_lines(n: int = 400, seed: int = 0) -> list[str]:
    """Sentences of a tiny grammar: learnable structure in a few hundred steps."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "the old man", "her sister"]
    verbs = ["sees", "likes", "finds", "walks to", "talks about"]
    objects = ["the house", "a red ball", "the river", "some bread", "the garden"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ." for _ in range(n)]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    return path


def test_recipe_defaults_are_flairs():
    defaults = {k: p.default for k, p in inspect.signature(train_language_model).parameters.items()}
    assert defaults["learning_rate"] == 20.0 and defaults["clip"] == 0.25
    assert defaults["sequence_length"] == 250 and defaults["mini_batch_size"] == 100
    assert defaults["anneal_factor"] == 0.25 and defaults["patience"] == 10


def test_training_lowers_perplexity_and_writes_flair_files(tmp_path, corpus_file):
    result = train_language_model(corpus_file, tmp_path, max_steps=240, eval_every=40, **TINY)
    ppl = [h["valid_perplexity"] for h in result.history]
    assert len(ppl) == 6 and result.steps == 240
    n_chars = len(result.model.dictionary)
    assert ppl[0] < n_chars  # better than guessing after the first 40 steps
    assert ppl[-1] < 0.6 * ppl[0] and result.best_valid_perplexity == min(ppl)
    # best-lm.pt: Flair's LanguageModel.save keys; checkpoint.pt: save_checkpoint keys too.
    best = load_pt(result.best_path)
    assert {"state_dict", "dictionary", "is_forward_lm", "document_delimiter"} <= set(best)
    assert "optimizer_state_dict" not in best
    checkpoint = load_pt(result.checkpoint_path)
    assert {"optimizer_state_dict", "epoch", "split", "loss"} <= set(checkpoint)
    assert (tmp_path / "loss.txt").read_text().count("valid ppl") == 6
    # Both files load as embeddings; the best one is what the result holds.
    for path in (result.best_path, result.checkpoint_path):
        out = FlairEmbeddings(str(path), device="cpu").fit().transform(["the cat sees a dog ."])
        assert out[0].shape == (6, 32) and np.isfinite(out.to_numpy()).all()
    for key, value in CharLM.load(result.best_path).state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value)


def test_resume_continues_exactly(tmp_path, corpus_file):
    straight = train_language_model(
        corpus_file, tmp_path / "a", max_steps=50, eval_every=20, **TINY
    )
    train_language_model(corpus_file, tmp_path / "b", max_steps=30, eval_every=20, **TINY)
    # eval_every and the recipe come from the checkpoint; the stop at 30 was off-schedule.
    resumed = train_language_model(corpus_file, tmp_path / "b", max_steps=50, resume=True, **TINY)
    assert resumed.steps == 50
    assert [h["step"] for h in resumed.history] == [20, 30, 40, 50]
    a = load_pt(tmp_path / "a" / "checkpoint.pt")["state_dict"]
    b = load_pt(tmp_path / "b" / "checkpoint.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)
    np.testing.assert_allclose(
        resumed.history[-1]["valid_loss"], straight.history[-1]["valid_loss"], atol=1e-6
    )


def test_interrupt_saves_a_checkpoint_that_resumes(tmp_path, corpus_file, monkeypatch):
    original = _Run.train_step

    def interrupted(self, data, targets):
        if self.step == 7:
            raise KeyboardInterrupt
        original(self, data, targets)

    monkeypatch.setattr(_Run, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_language_model(corpus_file, tmp_path, max_steps=20, **TINY)
    monkeypatch.setattr(_Run, "train_step", original)
    assert load_pt(tmp_path / "checkpoint.pt")["skembed_training"]["step"] == 7
    assert (
        train_language_model(corpus_file, tmp_path, max_steps=12, resume=True, **TINY).steps == 12
    )


def test_backward_lm_from_strings_and_flair_corpus_layout(tmp_path):
    result = train_language_model(
        corpus_lines(200), tmp_path / "bw", is_forward_lm=False, max_steps=15, **TINY
    )
    assert result.model.is_forward_lm is False
    emb = FlairEmbeddings(str(result.best_path), device="cpu").fit()
    assert emb.transform(["a dog sees the river ."])[0].shape == (6, 32)
    # Flair's layout: train/ with one file per split, valid.txt; evaluated after each split.
    folder = tmp_path / "corpus"
    (folder / "train").mkdir(parents=True)
    for i in range(2):
        (folder / "train" / f"part{i}.txt").write_text("\n".join(corpus_lines(60, seed=i)))
    (folder / "valid.txt").write_text("\n".join(corpus_lines(30, seed=9)))
    result = train_language_model(folder, tmp_path / "fw", max_epochs=1, **TINY)
    assert [h["epoch"] for h in result.history] == [1, 1]


def test_plateau_annealing_multiplies_the_learning_rate(tmp_path, corpus_file):
    # Tiny updates: the validation loss cannot improve, so after `patience` evaluations
    # without gain the learning rate is multiplied by anneal_factor.
    result = train_language_model(
        corpus_file,
        tmp_path,
        learning_rate=1e-3,
        clip=1e-9,
        patience=1,
        eval_every=3,
        max_steps=12,
        **TINY,
    )
    assert [h["learning_rate"] for h in result.history] == pytest.approx(
        [1e-3, 1e-3, 2.5e-4, 2.5e-4]
    )


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
        train_language_model(tmp_path / "nope.txt", tmp_path / "out", **TINY)
    with pytest.raises(TypeError, match="document 1 is a int"):
        train_language_model(iter(["ok", 3]), tmp_path / "out", **TINY)
    with pytest.raises(ValueError, match="valid_fraction"):
        train_language_model(corpus_lines(50), tmp_path / "out", valid_fraction=1.5, **TINY)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_language_model(corpus_lines(50), tmp_path / "fresh", resume=True, **TINY)


def test_command_line(tmp_path, corpus_file, capsys):
    args = [
        "train-lm",
        str(corpus_file),
        "--out",
        str(tmp_path / "cli"),
        "--backward",
        "--hidden-size",
        "16",
        "--embedding-size",
        "4",
        "--sequence-length",
        "30",
        "--batch-size",
        "8",
        "--max-steps",
        "10",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert cli_main(args) == 0
    assert "best validation perplexity" in capsys.readouterr().out
    assert CharLM.load(tmp_path / "cli" / "best-lm.pt").is_forward_lm is False
    resume = args[:-5] + ["--max-steps", "20", "--device", "cpu", "--resume", "--quiet"]
    assert cli_main(resume) == 0
    assert load_pt(tmp_path / "cli" / "checkpoint.pt")["skembed_training"]["step"] == 20
