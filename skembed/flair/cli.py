"""``skembed train-lm CORPUS --out PATH [--backward] ...``: train a Flair character LM."""

from __future__ import annotations

import argparse

from ..cli import command


@command("train-lm", "train a Flair character language model (forward or backward)")
def train_lm(args: argparse.Namespace) -> int:
    from .train import train_language_model

    try:
        result = train_language_model(
            args.corpus,
            args.out,
            is_forward_lm=not args.backward,
            valid=args.valid,
            valid_fraction=args.valid_fraction,
            hidden_size=args.hidden_size,
            nlayers=args.nlayers,
            embedding_size=args.embedding_size,
            nout=args.nout,
            dropout=args.dropout,
            sequence_length=args.sequence_length,
            mini_batch_size=args.batch_size,
            learning_rate=args.lr,
            clip=args.clip,
            anneal_factor=args.anneal_factor,
            patience=args.patience,
            max_epochs=args.max_epochs,
            max_steps=args.max_steps,
            eval_every=args.eval_every,
            seed=args.seed,
            resume=args.resume,
            device=args.device,
            show_progress_bar=not args.quiet,
        )
    except KeyboardInterrupt:
        print(
            f"\nInterrupted: the state is saved in {args.out}/checkpoint.pt; add --resume to go on."
        )
        return 130
    last = result.history[-1] if result.history else {}
    print(
        f"{result.steps} steps; best validation perplexity {result.best_valid_perplexity:.4f} "
        f"(last {last.get('valid_perplexity', float('nan')):.4f}).\n"
        f"Model: {result.best_path}  (use it with skembed.FlairEmbeddings or Flair)\n"
        f"Checkpoint: {result.checkpoint_path}  (continue with --resume)"
    )
    return 0


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", help="a text file (one document per line) or a folder of text files")
    p.add_argument("--out", required=True, help="output folder (best-lm.pt, checkpoint.pt)")
    p.add_argument("--backward", action="store_true", help="train a backward LM")
    p.add_argument("--valid", default=None, help="validation text file (default: held out)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="held-out share (0.1)")
    p.add_argument("--hidden-size", type=int, default=1024, help="LSTM state size (1024)")
    p.add_argument("--nlayers", type=int, default=1, help="LSTM layers (1)")
    p.add_argument("--embedding-size", type=int, default=100, help="character embedding (100)")
    p.add_argument("--nout", type=int, default=None, help="projection size (none)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout (0.1)")
    p.add_argument("--sequence-length", type=int, default=250, help="BPTT length (250)")
    p.add_argument("--batch-size", type=int, default=100, help="columns per batch (100)")
    p.add_argument("--lr", type=float, default=20.0, help="SGD learning rate (20)")
    p.add_argument("--clip", type=float, default=0.25, help="gradient norm clip (0.25)")
    p.add_argument("--anneal-factor", type=float, default=0.25, help="lr factor on plateau")
    p.add_argument("--patience", type=int, default=10, help="evaluations without gain (10)")
    p.add_argument("--max-epochs", type=int, default=10, help="passes over the corpus (10)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


train_lm.add_arguments = _add_arguments
