"""Command-line options shared by the scoring commands (`eval`, `parity`), declared once.

`shared_options` adds the options both commands take; `BackendCommand` adds every registered backend's
own options (`BackendSpec.cli_options`) when the command parses or prints its help, and `BackendChoice`
offers the registered backend names, so a backend registered later shows up in both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from vopd_bench.backends import BackendConfig, backend_names, backend_spec, cli_options
from vopd_bench.commands._outcome import allow_errors_option
from vopd_bench.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

# (parameter declarations, click.option keywords), in --help order
SHARED: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--model", "-m"), dict(default="vopd-tiny", show_default=True, help="vopd-tiny, a local folder, or a Hub id.")),
    (("--task", "-t", "tasks"), dict(multiple=True, required=True, help="Task name (repeatable) or a task YAML file.")),
    (("--data",), dict(multiple=True, help="Local files in the benchmark's published layout: PATH, or TASK=PATH.")),
    (("--views",), dict(default=None, help="Comma-separated views: full, crop, and red_box, blur_surround, "
                                           "crop_native (the gap decomposed), masked, random_crop (controls). "
                                           "Default: full,crop where boxes exist.")),
    (("--limit",), dict(type=int, default=None, help="Only the first N items of each task (quick looks).")),
    (("--out", "-o"), dict(default=None, help="Output folder. Re-running resumes.")),
    (("--overwrite",), dict(is_flag=True, help="Replace a run directory that holds a different configuration.")),
    (("--max-pixels",), dict(type=int, default=None,
                             help="Image budget: max pixels per image after resizing (recorded).")),
    (("--min-pixels",), dict(type=int, default=None, help="Image budget: min pixels per image (recorded).")),
    (("--batch-size",), dict(type=int, default=None, help="Requests per backend call.")),
    (("--dtype",), dict(default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")),
    (("--revision",), dict(default=None, help="Hub revision (branch, tag or commit).")),
    (("--max-new-tokens",), dict(type=int, default=None, help="Override the task's generation length.")),
    (("--seed",), dict(type=int, default=0, show_default=True, help="Seed of the views' randomness and of sampling.")),
    (("--chat-template-kwargs",), dict(default=None, metavar="JSON",
                                       help='Extra chat-template variables, e.g. \'{"enable_thinking": false}\' '
                                            "(recorded).")),
    (("--trust-remote-code",), dict(is_flag=True, help="Run the checkpoint's own Python code (off by default; "
                                                       "recorded).")),
)
TAIL: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--quiet", "-q"), dict(is_flag=True, help="No progress bar.")),
)


def _param_name(decls: tuple[str, ...]) -> str:
    plain = [d for d in decls if not d.startswith("-")]
    return plain[0] if plain else max(decls, key=len).lstrip("-").replace("-", "_")


def shared_options(**help: str) -> Callable[[F], F]:
    """Decorator adding the options every scoring command takes (`--allow-errors` and `--quiet` last);
    `help` replaces an option's help text, by parameter name (e.g. `out="..."`)."""
    unknown = set(help) - {_param_name(d) for d, _ in (*SHARED, *TAIL)}
    if unknown:
        raise ValueError(f"no shared option {sorted(unknown)}")

    def apply(f: F) -> F:
        for decls, kw in reversed(TAIL):
            f = click.option(*decls, **{**kw, "help": help.get(_param_name(decls), kw["help"])})(f)
        f = allow_errors_option(f)
        for decls, kw in reversed(SHARED):
            f = click.option(*decls, **{**kw, "help": help.get(_param_name(decls), kw["help"])})(f)
        return f

    return apply


class BackendChoice(click.Choice):
    """The registered backend names (read when used, so later registrations count), optionally with `auto`."""

    def __init__(self, auto: bool = False) -> None:
        self.auto = auto
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return (("auto",) if self.auto else ()) + backend_names()

    @choices.setter
    def choices(self, _value: Any) -> None:
        pass


class BackendCommand(click.Command):
    """A command that also takes every registered backend's own options (listed before `--help`)."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        own = {p.name for p in params}
        help_option = self.get_help_option(ctx)
        backend = [o for o in cli_options() if o.name not in own]
        return [p for p in params if p is not help_option] + backend + ([help_option] if help_option else [])


def backend_config(name: str, kw: Mapping[str, Any], batch_size: int | None = None, **fields: Any) -> BackendConfig:
    """The `BackendConfig` of backend `name` from the shared options and that backend's own options; the
    batch size is `--batch-size`, else `batch_size`, else the backend's default. A bad value is a `UserError`."""
    spec = backend_spec(name)
    options, extra = spec.configure(kw)
    if kw["batch_size"] is not None:
        batch_size = kw["batch_size"]
    try:
        return BackendConfig(
            backend=name, model=kw["model"], revision=kw["revision"], dtype=kw["dtype"], max_pixels=kw["max_pixels"],
            min_pixels=kw["min_pixels"], batch_size=spec.default_batch_size(options) if batch_size is None else batch_size,
            trust_remote_code=bool(kw.get("trust_remote_code")),
            chat_template_kwargs=parse_json_object(kw.get("chat_template_kwargs"), "--chat-template-kwargs"),
            options=options, extra=extra, **fields,
        )
    except ValueError as e:
        raise UserError(str(e)) from None


def parse_json_object(text: str | None, option: str) -> dict[str, Any]:
    """A JSON object given on the command line ({} when not given); anything else is a `UserError`."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{option}: not valid JSON ({e.msg} at column {e.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise UserError(f"{option}: want a JSON object such as '{{\"enable_thinking\": false}}', got {text!r}")
    return value


def split_views(views: str | None) -> list[str] | None:
    """`--views a,b` as a list (None: the default views)."""
    return [v.strip() for v in views.split(",") if v.strip()] if views else None


def model_slug(model: str) -> str:
    """A folder-name-safe short name of a model (its last path component)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.rstrip("/").split("/")[-1]) or "model"
