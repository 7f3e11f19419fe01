"""Checkpoint loading: device and dtype selection, offline hub resolution, revision hashing.

torch and transformers are imported inside the functions, so importing this module is cheap
and never touches CUDA.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmjobs.config import Settings
from llmjobs.errors import CheckpointError

log = logging.getLogger(__name__)

# The model architectures each kind can run.
ARCHITECTURES_FOR_KIND = {
    "moderate": ("classifier",),
    "translate": ("seq2seq", "causal"),
    "write": ("causal",),
}
_WEIGHT_FILE = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)$")
_HASH_BLOCK_BYTES = 1 << 20
# Files a worker needs from a hub repository; other formats (ONNX, GGUF, TF, Flax) are skipped.
# NOTE: *.bin is kept because many older repositories (opus-mt among them) ship only
# pytorch_model.bin, so a repository with both formats downloads its weights twice.
_HUB_PATTERNS = [
    "*.json", "*.safetensors", "*.bin", "*.model", "*.spm", "*.txt", "*.tiktoken", "*.jinja"
]
# A tokenizer's model_max_length above this is a "no limit" placeholder, not a real limit.
_UNSET_MAX_LENGTH = 1_000_000


@dataclass
class LoadedCheckpoint:
    """A model and its tokenizer, loaded once and ready for inference."""

    source: str
    revision: str
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    architecture: str  # classifier | seq2seq | causal
    # Maximum input tokens the model accepts: the position embeddings or the tokenizer limit.
    max_input_tokens: int
    local_dir: Path


def select_device(setting: str) -> str:
    """Resolve the device setting ("auto", "cpu", "cuda", "cuda:N") to a torch device name."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(
            f"device {setting!r} is configured but CUDA is not available; "
            "set LLMJOBS_DEVICE=cpu or run the worker on a machine with a GPU"
        )
    return setting


def select_dtype(setting: str, device: str) -> Any:
    """Resolve the dtype setting to a torch dtype.

    auto is bfloat16 on a CUDA device that supports it (else float16), and float32 on CPU.
    """
    import torch

    if setting == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[setting]


def load_checkpoint(source: str, task: str, settings: Settings, device: str) -> LoadedCheckpoint:
    """Load the checkpoint at source (a local folder or a Hugging Face id) for a kind.

    Raises CheckpointError naming the source and the fix when it is missing, not cached
    in offline mode, unreadable, or of an architecture the kind cannot run.
    """
    local_dir, revision = resolve_checkpoint_dir(source, task)
    architecture = detect_architecture(local_dir, source)
    allowed = ARCHITECTURES_FOR_KIND.get(task, ())
    if architecture not in allowed:
        raise CheckpointError(
            f"checkpoint {source!r} is a {architecture} model, but kind {task!r} needs "
            f"{' or '.join(allowed)}; point LLMJOBS_CHECKPOINT_{task.upper()} at a suitable checkpoint"
        )

    dtype = select_dtype(settings.dtype, device)
    model, tokenizer = _load_model_and_tokenizer(local_dir, source, architecture, dtype)
    model.to(device)
    model.eval()
    if architecture == "causal":
        configure_decoder_only(model, tokenizer)

    loaded = LoadedCheckpoint(
        source=source, revision=revision, model=model, tokenizer=tokenizer, device=device,
        dtype=str(dtype).removeprefix("torch."), architecture=architecture,
        max_input_tokens=model_max_input_tokens(model, tokenizer), local_dir=local_dir,
    )
    log.info(
        "Loaded %s checkpoint %s (revision %s) on %s as %s.",
        architecture, source, revision, device, loaded.dtype,
    )
    return loaded


def resolve_checkpoint_dir(source: str, task: str) -> tuple[Path, str]:
    """Return the local folder of a checkpoint and its revision, downloading only when online."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"checkpoint folder {str(path)!r} has no config.json; point "
                f"LLMJOBS_CHECKPOINT_{task.upper()} at a folder saved with save_pretrained"
            )
        revision = _hub_snapshot_revision(path) or content_revision(path)
        return path, revision
    if _looks_like_path(source):
        raise CheckpointError(
            f"checkpoint folder {source!r} does not exist; build one with "
            f"`llmjobs checkpoints make-tiny DIR` or download a real one and set "
            f"LLMJOBS_CHECKPOINT_{task.upper()} (or [checkpoints] {task} in config.toml) to its folder"
        )
    return _resolve_hub_id(source, task)


def content_revision(folder: Path) -> str:
    """Return "sha256:" and 16 hex digits of a hash over config.json and the weight files.

    Files are read in 1 MiB blocks, so hashing a checkpoint of any size uses constant memory.
    """
    digest = hashlib.sha256()
    names = ["config.json", *sorted(p.name for p in folder.iterdir() if _WEIGHT_FILE.match(p.name))]
    for name in names:
        digest.update(name.encode("utf-8") + b"\0")
        with (folder / name).open("rb") as handle:
            while block := handle.read(_HASH_BLOCK_BYTES):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def detect_architecture(folder: Path, source: str) -> str:
    """Return classifier, seq2seq or causal from the checkpoint's config.json."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"cannot read the config of checkpoint {source!r}: {error}") from error
    names = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if "ForSequenceClassification" in names:
        return "classifier"
    if "ForCausalLM" in names or "LMHeadModel" in names or "ForConditionalGeneration" in names:
        return "causal"
    raise CheckpointError(
        f"checkpoint {source!r} has architectures {names or 'none'!r}; expected a sequence "
        "classifier, an encoder-decoder model or a causal LM"
    )


def configure_decoder_only(model: Any, tokenizer: Any) -> None:
    """Set left padding and a pad token (the EOS token when there is none) for batched generation."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def model_max_input_tokens(model: Any, tokenizer: Any) -> int:
    """Return the longest input the model accepts: the smaller of the tokenizer and position limits."""
    limits = []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _UNSET_MAX_LENGTH:
        limits.append(tokenizer_limit)
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-family models reserve pad_token_id + 1 positions before the first token.
        if model.config.model_type in ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"):
            positions -= (model.config.pad_token_id or 0) + 1
        limits.append(positions)
    return min(limits) if limits else 512


def hub_offline() -> bool:
    """Return whether HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE turns off network access to the hub."""
    truthy = ("1", "true", "yes", "on")
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").lower() in truthy for name in names)


def _resolve_hub_id(repo_id: str, task: str) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    fix = (
        f"download it on a machine with network access with `huggingface-cli download {repo_id} "
        f"--local-dir DIR`, copy DIR here and set LLMJOBS_CHECKPOINT_{task.upper()}=DIR "
        f"(or [checkpoints] {task} = \"DIR\" in config.toml)"
    )
    try:
        folder = snapshot_download(repo_id=repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=offline)
    except Exception as error:  # huggingface_hub raises many types: offline, network, not found
        state = "is not in the local Hugging Face cache and the hub is offline" if offline else (
            f"could not be downloaded ({type(error).__name__}: {error})"
        )
        raise CheckpointError(f"checkpoint {repo_id!r} {state}; {fix}") from error
    path = Path(folder)
    return path, _hub_snapshot_revision(path) or content_revision(path)


def _hub_snapshot_revision(folder: Path) -> str | None:
    # Hub cache layout: .../models--ORG--NAME/snapshots/<commit hash>/
    resolved = folder.resolve()
    if resolved.parent.name == "snapshots" and resolved.parent.parent.name.startswith("models--"):
        return resolved.name
    return None


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~"))
        or source.count("/") > 1
        or "\\" in source
        or source.strip() != source
        or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source)
    )


def _load_model_and_tokenizer(folder: Path, source: str, architecture: str, dtype: Any) -> tuple[Any, Any]:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    model_class = {
        "classifier": AutoModelForSequenceClassification,
        "seq2seq": AutoModelForSeq2SeqLM,
        "causal": AutoModelForCausalLM,
    }[architecture]
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = model_class.from_pretrained(folder, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError, ImportError) as error:
        raise CheckpointError(f"cannot load checkpoint {source!r} from {str(folder)!r}: {error}") from error
    return model, tokenizer
