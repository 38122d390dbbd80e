"""Where a fine-tuned encoder's weights live: a folder per training, named by the link and the fingerprint of
what it was trained on (base, pairs, settings), and the catalogue entry's `weights: {path}` a link to the
current one. The link is swapped in one rename, so a reader (the SIE server, the fingerprint) sees the old
weights or the new ones, never a mix; the previous folder is kept, older ones are removed."""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from taxo_pipeline.errors import InputError
from taxo_pipeline.training.encoder import TrainingReport, TrainingSettings, train_encoder, weights_fingerprint
from taxo_pipeline.training.pairs import pairs_fingerprint

KEEP = 2  # trained folders kept beside the link: the current one and the one before


@dataclass(frozen=True)
class FineTuned:
    folder: Path
    fingerprint: str
    report: TrainingReport | None  # None: weights with this fingerprint were already trained


def fine_tune(base_weights: Path, base_fingerprint: str, link: Path, training: pl.DataFrame,
              settings: TrainingSettings, logger: logging.Logger | logging.LoggerAdapter) -> FineTuned:  # fmt: skip
    """Train (unless already trained from the same base, pairs and settings) and point `link` at the weights."""
    name = weights_fingerprint(base_fingerprint, pairs_fingerprint(training), settings)
    link.parent.mkdir(parents=True, exist_ok=True)
    folder = link.with_name(f"{link.name}-{name[:16]}")
    report = None if folder.is_dir() else train_encoder(base_weights, training, folder, settings, logger)
    point(link, folder)
    return FineTuned(folder, name, report)


def point(link: Path, folder: Path, keep: int = KEEP) -> None:
    """Make `link` a symbolic link to `folder` (beside it), then remove all but the `keep` newest trained folders."""
    if link.exists() and not link.is_symlink():
        raise InputError(f"{link} is a folder, not the link taxo-pipeline keeps to a fine-tuned encoder's weights: "
                         "move it away or name another `weights: path` in the model catalogue")  # fmt: skip
    staged = link.with_name(f".{link.name}.{os.getpid()}.link")
    staged.unlink(missing_ok=True)
    staged.symlink_to(folder.name)
    os.replace(staged, link)
    # Only this link's folders: its name and a fingerprint, never another model's that shares the prefix.
    own = re.compile(re.escape(link.name) + r"-[0-9a-f]{16}")
    trained = sorted((p for p in link.parent.iterdir() if own.fullmatch(p.name) and not p.is_symlink() and p.is_dir()
                      and p != folder), key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
    for old in trained[keep - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
