"""Fine-tune a sentence-transformers bi-encoder on (product text, category document) pairs.

The loss is in-batch negatives (MultipleNegativesRankingLoss): each product's category is the positive and
every other category in the batch a negative. Many products share a category, so batches never hold the
same text twice (BatchSamplers.NO_DUPLICATES): a shared category would otherwise be its own negative.
The trainer is sentence-transformers' own; seeded, so the same pairs, base and settings give the same
weights on the same machine. The weights are written aside and renamed into place: a folder that exists
is whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """How an encoder is fine-tuned: a model catalogue entry's `train:` block (all optional but `base`)."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    seed: int = 0
    max_steps: int = -1  # > 0: stop after this many steps (a smoke test's tiny run)
    per_source_cap: int = 150  # products per shop or file at most: one big shop must not be the training set
    taxonomy_pairs: bool = False  # add (node name, path) pairs from the taxonomy alone
    log_every: int = 10  # steps between progress lines

    def fingerprint_part(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "log_every"}


@dataclass(frozen=True)
class TrainingReport:
    path: Path
    pairs: int
    steps: int
    seconds: float
    loss: float | None  # the mean training loss


def weights_fingerprint(base_fingerprint: str, pairs_fingerprint: str, settings: TrainingSettings) -> str:
    """Names the trained weights: the base's weights, the pairs and the settings."""
    parts = {"base": base_fingerprint, "pairs": pairs_fingerprint, "settings": settings.fingerprint_part()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def train_encoder(base: Path, pairs: pl.DataFrame, target: Path, settings: TrainingSettings,
                  logger: logging.Logger | logging.LoggerAdapter = log) -> TrainingReport:  # fmt: skip
    """Fine-tune the sentence-transformers model in `base` on `pairs` (anchor, positive) and save it to `target`;
    progress lines go to `logger` (a Dagster run's log in the asset)."""
    if pairs.height < 2:
        raise ValueError(f"fine-tuning needs at least 2 (product, category) pairs, got {pairs.height}")
    from datasets import Dataset  # the training stack loads only when something is trained
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import PrinterCallback
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the progress lines below say the same, once per N steps

    model = SentenceTransformer(str(base), device="cpu")
    work = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "checkpoints"), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio,  # a float below 1: a share of the steps
        seed=settings.seed, data_seed=settings.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", report_to=[], use_cpu=True,
        logging_steps=settings.log_every, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    dataset = Dataset.from_dict({"anchor": pairs["anchor"].to_list(), "positive": pairs["positive"].to_list()})
    progress = _Progress(settings.log_every, logger)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=losses.MultipleNegativesRankingLoss(model), callbacks=[progress.callback()])  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # it prints every logged dict
    started = time.monotonic()
    result = trainer.train()
    model.save(str(work / "model"))
    if not target.is_dir():  # another process that trained the same fingerprint meanwhile keeps its folder
        os.replace(work / "model", target)
    shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    logger.info("fine-tuned %s on %d pairs: %d steps in %.0f s, mean loss %.4f -> %s",
             base.name, pairs.height, result.global_step, seconds, result.training_loss, target)  # fmt: skip
    return TrainingReport(target, pairs.height, result.global_step, seconds, result.training_loss)


class _Progress:
    """A progress line every `every` steps: steps done of all, the loss, the rate and the time left."""

    def __init__(self, every: int, logger):
        self.every, self.logger, self.started = every, logger, time.monotonic()

    def callback(self):
        from transformers import TrainerCallback

        progress = self

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    progress.line(state.global_step, state.max_steps, float(logs["loss"]))

        return Callback()

    def line(self, step: int, steps: int, loss: float) -> None:
        elapsed = time.monotonic() - self.started
        rate = step / elapsed if elapsed > 0 else 0.0
        eta = (steps - step) / rate if rate > 0 else float("nan")
        self.logger.info("fine-tuning: step %d/%d, loss %.4f, %.2f steps/s, %.0f s left", step, steps, loss, rate, eta)
