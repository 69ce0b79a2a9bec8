"""Resolving a model name to a loadable location, loading its config and processor with one-line errors
(the backends' preflight), and fingerprinting what was loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError

REFERENCE_NAME = "vopd-tiny"
REFERENCE_DIR = Path(__file__).parent / "reference" / REFERENCE_NAME  # the shipped checkpoint (no torch import)


def resolve_model(name: str) -> str:
    """`vopd-tiny` → the shipped reference checkpoint; an existing folder → itself; else a Hub id."""
    if name == REFERENCE_NAME:
        return str(REFERENCE_DIR)
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise UserError(f"model folder {name} has no config.json (not a saved model: point --model at the folder "
                            "save_pretrained wrote)")
        return str(p.resolve())
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")
    if looks_like_path or "/" not in name:
        raise UserError(f"model path not found: {name} (use {REFERENCE_NAME}, a local folder or a Hub id org/name)")
    return name


def fingerprint(path: str) -> str | None:
    """Cheap content fingerprint of a local checkpoint: config + each weight file's size, head and tail."""
    p = Path(path)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    cfg = p / "config.json"
    if cfg.is_file():
        h.update(json.dumps(json.loads(cfg.read_text()), sort_keys=True).encode())
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 1 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.hexdigest()[:16]


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line (its first sentence of the first line, at most `limit` chars)."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if len(text) > limit:
        cut = text.find(". ", 0, limit)
        text = text[: cut + 1] if cut > 0 else text[: limit - 3] + "..."
    return text


def model_label(name: str, path: str) -> str:
    """How an error names a model: "model NAME (PATH)", or "model PATH" when they are the same."""
    return f"model {path}" if name == path else f"model {name!r} ({path})"


REMOTE_CODE_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
TRUST_FLAG = "--trust-remote-code"


def remote_code_classes(path: str) -> list[str]:
    """The classes a local model folder's `auto_map` entries name that transformers does not have (i.e. code the
    checkpoint ships itself); [] for a Hub id, a folder without `auto_map`, or one naming only native classes."""
    import transformers

    found: list[str] = []
    for name in REMOTE_CODE_FILES:
        try:
            data = json.loads((Path(path) / name).read_text())
        except (OSError, ValueError):
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if not isinstance(auto_map, dict):
            continue
        for ref in auto_map.values():
            for r in ref if isinstance(ref, list) else [ref]:
                cls = r.split(".")[-1] if isinstance(r, str) else None
                if cls and not hasattr(transformers, cls) and cls not in found:
                    found.append(cls)
    return found


def check_remote_code(path: str, name: str, trust_remote_code: bool) -> None:
    """A checkpoint that needs its own Python code runs only with `--trust-remote-code`: a one-line `UserError`."""
    if trust_remote_code:
        return
    classes = remote_code_classes(path)
    if classes:
        raise UserError(
            f"{model_label(name, path)} needs its own Python code ({', '.join(classes)} in auto_map): pass "
            f"{TRUST_FLAG} to run it (only for a checkpoint you trust), or use the model's transformers-native "
            "version"
        )


def _remote_code_error(e: BaseException, path: str, name: str) -> UserError | None:
    """transformers' refusal of remote code (e.g. for a Hub id) as our one-line error naming the flag."""
    if "trust_remote_code" in str(e):
        return UserError(f"{model_label(name, path)} needs its own Python code: pass {TRUST_FLAG} to run it "
                         "(only for a checkpoint you trust)")
    return None


def load_config(path: str, name: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The model's transformers config; a missing, unreadable or unknown one, or one that needs remote code
    without `trust_remote_code`, is a one-line `UserError`."""
    from transformers import AutoConfig, __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    check_remote_code(path, name, trust_remote_code)
    try:
        return AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        if (err := _remote_code_error(e, path, name)) is not None:
            raise err from None
        model_type = _local_model_type(path)
        if model_type is not None and model_type not in CONFIG_MAPPING_NAMES:
            raise UserError(
                f"{Path(path) / 'config.json'} has model_type {model_type!r}, unknown to transformers {__version__} "
                "(upgrade transformers, or fix config.json)"
            ) from None
        raise UserError(f"cannot load the config of {model_label(name, path)}: {first_line(e)}") from None


def load_processor(path: str, name: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The model's processor, which must carry a chat template; any failure is a one-line `UserError`."""
    from transformers import AutoProcessor

    check_remote_code(path, name, trust_remote_code)
    try:
        processor = AutoProcessor.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as e:
        if (err := _remote_code_error(e, path, name)) is not None:
            raise err from None
        raise UserError(f"cannot load the processor of {model_label(name, path)}: {first_line(e)}") from None
    check_chat_template(processor, path, name)
    return processor


def check_chat_template(processor: Any, path: str, name: str) -> None:
    """Prompts are rendered with the processor's chat template: refuse a processor that has none."""
    if not getattr(processor, "chat_template", None):
        raise UserError(
            f"{model_label(name, path)} has no chat template: add the base model's chat_template.jinja "
            "(or its chat_template entry) to the folder"
        )


def _local_model_type(path: str) -> str | None:
    """`model_type` from a local folder's config.json (None for a Hub id or an unreadable file)."""
    try:
        value = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def template_hash(template: str | None, kwargs: dict[str, Any] | None = None) -> str | None:
    """Short hash of the prompt's chat template together with its extra variables (`--chat-template-kwargs`
    change the prompt, so they are part of a run's identity); without kwargs, the template's hash alone."""
    if not template:
        return None
    text = template + ("\0" + json.dumps(kwargs, sort_keys=True) if kwargs else "")
    return hashlib.sha256(text.encode()).hexdigest()[:12]
