"""One module per source layout; each exposes `load(spec: TaskSpec, data: Path | None) -> list[Item]`."""
