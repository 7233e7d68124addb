"""Train a Flair character language model with Flair's recipe; checkpoints in Flair's format.

The recipe (Flair's ``LanguageModelTrainer`` defaults): each split of the corpus is read as
one character stream (documents shuffled, 1% of them lower-cased and 1% upper-cased), cut into
``mini_batch_size`` columns and trained with truncated back-propagation through time over
``sequence_length`` characters, the hidden state carried from step to step; SGD with learning
rate 20, gradients clipped to norm 0.25, the learning rate multiplied by 0.25 when the
validation loss has not improved for ``patience`` evaluations. A backward LM is trained on the
reversed stream.

Outputs in the folder ``out``: ``best-lm.pt`` (the model with the best validation loss, as
Flair's ``LanguageModel.save`` writes it), ``checkpoint.pt`` (the latest state, as Flair's
``save_checkpoint`` writes it, plus what an exact resume needs) and ``loss.txt``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import torch
from torch.nn.functional import cross_entropy

from .._device import resolve_device
from .corpus import Corpus, build_dictionary, read_corpus
from .lm import CharLM
from .unpickle import CharDictionary, load_pt


@dataclass
class TrainingResult:
    """What :func:`train_language_model` did.

    Attributes
    ----------
    model : CharLM
        The model with the best validation loss (the content of ``best_path``), in eval mode.
    best_path, checkpoint_path : Path
        ``out/best-lm.pt`` and ``out/checkpoint.pt``.
    history : list of dict
        One entry per evaluation: ``step``, ``epoch``, ``train_loss``, ``valid_loss``,
        ``valid_perplexity``, ``learning_rate``.
    steps : int
        Optimizer steps done in total (including those before a resume).
    """

    model: CharLM
    best_path: Path
    checkpoint_path: Path
    history: list[dict] = field(default_factory=list)
    steps: int = 0

    @property
    def best_valid_perplexity(self) -> float:
        return min((h["valid_perplexity"] for h in self.history), default=math.inf)


def batchify(ids: torch.Tensor, columns: int) -> torch.Tensor:
    """``(n,)`` ids to ``(n // columns, columns)``, each column a contiguous stretch of text."""
    columns = max(1, min(columns, len(ids) // 2))
    rows = len(ids) // columns
    return ids[: rows * columns].view(columns, rows).t().contiguous()


@torch.no_grad()
def evaluate(lm: CharLM, data: torch.Tensor, sequence_length: int) -> float:
    """Mean next-character cross-entropy over ``(time, columns)`` ids, state carried along."""
    was_training = lm.training
    lm.eval()
    total, count, hidden = 0.0, 0, None
    for i in range(0, data.shape[0] - 1, sequence_length):
        seq = min(sequence_length, data.shape[0] - 1 - i)
        logits, _, hidden = lm(data[i : i + seq], hidden)
        targets = data[i + 1 : i + 1 + seq].reshape(-1)
        total += cross_entropy(logits.flatten(0, 1), targets, reduction="sum").item()
        count += targets.numel()
    lm.train(was_training)
    return total / max(count, 1)


def _split_stream(lm: CharLM, corpus: Corpus, index: int, recipe: dict, epoch: int):
    """One split as a character-id stream in the recipe's order (reproducible per epoch)."""
    rng = random.Random(f"{recipe['seed']}-{epoch}-{index}")
    docs = [d + "\n" for d in corpus.train_text(index).split("\n") if d]
    if recipe["shuffle"]:
        rng.shuffle(docs)
    if recipe["random_case_flip"]:
        draws = [rng.randint(0, 99) for _ in docs]
        docs = [d.lower() if r == 0 else d.upper() if r == 1 else d for d, r in zip(docs, draws)]
    # encode_text reverses the text for a backward LM, as Flair flips the id stream.
    return torch.from_numpy(lm.encode_text("".join(docs)).copy())


def _split_order(n_splits: int, epoch: int, recipe: dict) -> list[int]:
    order = list(range(n_splits))
    if epoch > 0 and recipe["shuffle"]:  # Flair reads the splits in order first, then shuffled
        random.Random(f"{recipe['seed']}-order-{epoch}").shuffle(order)
    return order


class _Run:
    """The training loop's state; everything :meth:`checkpoint` saves makes resume exact."""

    def __init__(self, lm: CharLM, corpus: Corpus, out: Path, recipe: dict, saved: dict | None):
        self.lm, self.corpus, self.out, self.recipe = lm, corpus, out, recipe
        self.device = lm.encoder.weight.device
        self.optimizer = torch.optim.SGD(lm.parameters(), lr=recipe["learning_rate"])
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=recipe["anneal_factor"], patience=recipe["patience"]
        )
        ids = torch.from_numpy(lm.encode_text(corpus.valid).copy())
        self.valid = batchify(ids, recipe["mini_batch_size"]).to(self.device)
        # Position: the next step is batch `batch` of split `order[pos]` in epoch `epoch`.
        self.epoch, self.pos, self.batch, self.hidden = 0, 0, 0, None
        self.step, self.evaluated_at, self.best = 0, -1, math.inf
        self.history: list[dict] = []
        self.loss_sum, self.loss_count = 0.0, 0
        self.rng_state = None
        if saved is not None:
            t = saved["skembed_training"]
            self.optimizer.load_state_dict(saved["optimizer_state_dict"])
            self.scheduler.load_state_dict(t["scheduler"])
            self.epoch, self.pos, self.batch = t["epoch"], t["pos"], t["batch"]
            self.hidden = tuple(h.to(self.device) for h in t["hidden"]) if t["hidden"] else None
            self.step, self.evaluated_at, self.best = t["step"], t["evaluated_at"], t["best"]
            self.history = list(t["history"])
            self.loss_sum, self.loss_count = t["loss_sum"], t["loss_count"]
            self.rng_state = t["rng_state"]

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def evaluate(self, scheduled: bool, bar) -> None:
        """Validation loss; the plateau scheduler only counts the scheduled evaluations."""
        loss = evaluate(self.lm, self.valid, self.recipe["sequence_length"])
        if scheduled:
            self.scheduler.step(loss)
        if loss < self.best:
            self.best = loss
            self.lm.save(self.out / "best-lm.pt")
        train_loss = self.loss_sum / self.loss_count if self.loss_count else math.nan
        entry = {
            "step": self.step,
            "epoch": self.epoch + 1,
            "train_loss": train_loss,
            "valid_loss": loss,
            "valid_perplexity": math.exp(min(loss, 700.0)),
            "learning_rate": self.lr,
        }
        self.history.append(entry)
        self.loss_sum, self.loss_count = 0.0, 0
        self.evaluated_at = self.step
        with open(self.out / "loss.txt", "a", encoding="utf-8") as log:
            log.write(
                f"| step {self.step:7d} | epoch {entry['epoch']:3d} | train loss {train_loss:.4f} "
                f"| valid loss {loss:.4f} | valid ppl {entry['valid_perplexity']:.4f} "
                f"| learning rate {self.lr:.4f}\n"
            )
        bar.set_postfix(val_ppl=f"{entry['valid_perplexity']:.3f}", lr=self.lr, refresh=False)

    def checkpoint(self) -> None:
        state = {
            "epoch": self.epoch,
            "pos": self.pos,
            "batch": self.batch,
            "hidden": [h.detach().cpu() for h in self.hidden] if self.hidden else None,
            "step": self.step,
            "evaluated_at": self.evaluated_at,
            "best": self.best,
            "history": self.history,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "scheduler": self.scheduler.state_dict(),
            "rng_state": torch.get_rng_state(),
            "recipe": self.recipe,
        }
        if self.device.type == "cuda":
            state["cuda_rng_state"] = torch.cuda.get_rng_state(self.device)
        # Flair's checkpoint keys (epoch, split, loss, optimizer_state_dict) plus ours.
        self.lm.save(
            self.out / "checkpoint.pt",
            optimizer_state_dict=self.optimizer.state_dict(),
            epoch=self.epoch,
            split=self.pos,
            loss=self.best,
            skembed_training=state,
        )

    def train_step(self, data: torch.Tensor, targets: torch.Tensor) -> None:
        self.lm.train()
        logits, _, hidden = self.lm(data, self.hidden)
        loss = cross_entropy(logits.flatten(0, 1), targets)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.lm.parameters(), self.recipe["clip"])
        self.optimizer.step()
        # Truncated BPTT: carry the state, not its history.
        self.hidden = tuple(h.detach() for h in hidden)
        self.step += 1
        self.loss_sum += loss.item()
        self.loss_count += 1

    def run(self, max_epochs: int, max_steps: int | None, eval_every: int | None, bar) -> None:
        sl = self.recipe["sequence_length"]
        n_splits = len(self.corpus.train)
        while self.epoch < max_epochs:
            order = _split_order(n_splits, self.epoch, self.recipe)
            while self.pos < n_splits:
                stream = _split_stream(
                    self.lm, self.corpus, order[self.pos], self.recipe, self.epoch
                )
                data = batchify(stream, self.recipe["mini_batch_size"]).to(self.device)
                n_batches = max(0, math.ceil((data.shape[0] - 1) / sl))
                if bar.total is None and n_splits == 1 and max_steps is None:
                    bar.total = max_epochs * n_batches
                while self.batch < n_batches:
                    if max_steps is not None and self.step >= max_steps:
                        return
                    i = self.batch * sl
                    seq = min(sl, data.shape[0] - 1 - i)
                    self.train_step(data[i : i + seq], data[i + 1 : i + 1 + seq].reshape(-1))
                    self.batch += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.loss_sum / self.loss_count:.3f}", refresh=False)
                    if eval_every and self.step % eval_every == 0:
                        self.evaluate(True, bar)
                        self.checkpoint()
                # The split is done: move on (Flair evaluates after each split).
                self.pos, self.batch, self.hidden = self.pos + 1, 0, None
                if not eval_every:
                    self.evaluate(True, bar)
                    self.checkpoint()
            self.epoch, self.pos = self.epoch + 1, 0


def train_language_model(
    corpus: str | PathLike | Iterable[str],
    out: str | PathLike,
    *,
    is_forward_lm: bool = True,
    valid: str | PathLike | Iterable[str] | None = None,
    valid_fraction: float = 0.1,
    dictionary: CharDictionary | Iterable[str] | None = None,
    hidden_size: int = 1024,
    nlayers: int = 1,
    embedding_size: int = 100,
    nout: int | None = None,
    dropout: float = 0.1,
    sequence_length: int = 250,
    mini_batch_size: int = 100,
    learning_rate: float = 20.0,
    clip: float = 0.25,
    anneal_factor: float = 0.25,
    patience: int = 10,
    max_epochs: int = 10,
    max_steps: int | None = None,
    eval_every: int | None = None,
    random_case_flip: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    resume: bool | str | PathLike = False,
    device: str = "auto",
    show_progress_bar: bool = True,
) -> TrainingResult:
    """Train a character LM that :class:`FlairEmbeddings` (and Flair itself) can load.

    Parameters
    ----------
    corpus : path or iterable of str
        A text file (one document per line), a folder of text files (each file is one split,
        read one at a time; Flair's layout with ``train/`` and ``valid.txt`` is recognised), or
        an iterable of document strings (line breaks inside a document become spaces).
    out : path
        Folder for ``best-lm.pt``, ``checkpoint.pt`` and ``loss.txt``.
    is_forward_lm : bool, default=True
        Train a forward LM, or a backward one (on the reversed text).
    valid : path or iterable of str, optional
        Validation text. By default the last ``valid_fraction`` of the corpus (the tail of its
        last split, cut at a line break) is held out.
    valid_fraction : float, default=0.1
    dictionary : CharDictionary or iterable of str, optional
        The characters; by default every character of the corpus, most frequent first.
    hidden_size, nlayers, embedding_size, nout, dropout
        The model's sizes (``nout`` adds a projection). Flair's published "fast" models use
        ``hidden_size=1024``, the others 2048.
    sequence_length, mini_batch_size, learning_rate, clip, anneal_factor, patience
        Flair's recipe: truncated BPTT length, number of columns, SGD learning rate, gradient
        norm clip, plateau annealing factor and patience (in evaluations).
    max_epochs : int, default=10
        Passes over the corpus.
    max_steps : int, optional
        Stop after this many optimizer steps in total (a resume continues the count).
    eval_every : int, optional
        Evaluate (and checkpoint) every this many steps; by default at the end of every split,
        as Flair does. An extra evaluation at the end is reported but does not feed the
        plateau scheduler, so stopping and resuming never changes the course of training.
    random_case_flip, shuffle : bool, default=True
        The recipe's random case changes and document shuffling (seeded by ``seed``).
    seed : int, default=0
        Seeds the initial weights, dropout and the data order (the global torch RNG of the
        caller is left as it was).
    resume : bool or path, default=False
        Continue from ``out/checkpoint.pt`` (True) or from the given checkpoint, with the same
        corpus; training then proceeds exactly as if it had not stopped. The model sizes, the
        recipe and ``eval_every`` come from the checkpoint; ``max_epochs`` and ``max_steps``
        from this call.
    device : str, default="auto"
        Trains on CUDA when available.
    show_progress_bar : bool, default=True
        A progress bar with the training loss and validation perplexity.

    Returns
    -------
    TrainingResult

    Examples
    --------
    >>> import tempfile
    >>> texts = ["the cat sat on the mat", "a dog ate the bone"] * 20
    >>> result = train_language_model(
    ...     texts, tempfile.mkdtemp(), hidden_size=16, embedding_size=8, sequence_length=20,
    ...     mini_batch_size=4, max_steps=10, show_progress_bar=False)
    >>> result.best_path.name, result.steps
    ('best-lm.pt', 10)
    """
    data = read_corpus(corpus, valid, valid_fraction)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    saved = None
    if resume:
        path = out / "checkpoint.pt" if resume is True else Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume: no checkpoint at {path}; train without resume first.")
        saved = load_pt(path)
        if not isinstance(saved, dict) or "skembed_training" not in saved:
            raise ValueError(
                f"resume: {path} holds no skembed training state (it was not written by "
                "train_language_model); load it with CharLM.load to start from its weights."
            )
        lm = CharLM.from_file_state(saved, source=str(path))
        recipe = dict(saved["skembed_training"]["recipe"])
    else:
        recipe = {
            "sequence_length": int(sequence_length),
            "mini_batch_size": int(mini_batch_size),
            "learning_rate": float(learning_rate),
            "clip": float(clip),
            "anneal_factor": float(anneal_factor),
            "patience": int(patience),
            "random_case_flip": bool(random_case_flip),
            "shuffle": bool(shuffle),
            "seed": int(seed),
            "eval_every": int(eval_every) if eval_every else None,
        }
        for name in ("sequence_length", "mini_batch_size", "patience"):
            if recipe[name] < 1:
                raise ValueError(f"{name} must be a positive integer, got {recipe[name]}.")
        if dictionary is None:
            dictionary = build_dictionary(data)
    cuda = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        if saved is None:
            torch.manual_seed(recipe["seed"])
            lm = CharLM(
                dictionary,
                is_forward_lm=is_forward_lm,
                hidden_size=hidden_size,
                nlayers=nlayers,
                embedding_size=embedding_size,
                nout=nout,
                dropout=dropout,
            )
        run = _Run(lm.to(dev), data, out, recipe, saved)
        if run.rng_state is not None:
            torch.set_rng_state(run.rng_state)
            if cuda and "cuda_rng_state" in saved["skembed_training"]:
                torch.cuda.set_rng_state(saved["skembed_training"]["cuda_rng_state"], dev)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=max_steps,
            initial=run.step,
            desc="train-lm",
            unit="step",
            disable=not show_progress_bar,
        )
        try:
            run.run(max_epochs, max_steps, recipe["eval_every"], bar)
            if run.evaluated_at != run.step:
                run.evaluate(False, bar)
            run.checkpoint()
        except KeyboardInterrupt:
            run.checkpoint()  # the position is always a step boundary: resume picks up here
            raise
        finally:
            bar.close()
    best = CharLM.load(out / "best-lm.pt")
    return TrainingResult(best, out / "best-lm.pt", out / "checkpoint.pt", run.history, run.step)
