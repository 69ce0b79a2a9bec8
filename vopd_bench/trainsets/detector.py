"""A zero-shot object detector run through transformers (`AutoModelForZeroShotObjectDetection`: OWLv2,
OWL-ViT, Grounding DINO, ... from any local folder or Hub id) as a box source: the regions of the
named objects found in each image."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vopd_bench.errors import UserError
from vopd_bench.trainsets.regions import Region
from vopd_bench.trainsets.sources import list_images

log = logging.getLogger(__name__)


@dataclass
class Detector:
    """`path`: a detector checkpoint (a folder, or a Hub id when one is reachable); `objects`: the names
    to look for; boxes with a score above `threshold` are kept (Grounding DINO also needs a text score
    above `text_threshold`); overlapping boxes of one label are merged by non-maximum suppression
    (IoU above `nms_iou`)."""

    path: str
    objects: list[str]
    threshold: float = 0.1
    text_threshold: float = 0.25
    nms_iou: float = 0.5
    device: str = "cpu"
    kind: str = "detector"
    _model: Any = field(default=None, init=False, repr=False)
    _processor: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.objects = [o.strip() for o in self.objects if o.strip()]
        if not self.objects:
            raise UserError("--objects: name at least one object to detect, e.g. --objects 'cat,cup'")
        if not 0.0 <= self.threshold < 1.0:
            raise UserError(f"--detector-threshold must be in [0, 1), got {self.threshold}")
        looks_local = self.path.startswith((".", "/", "~")) or Path(self.path).expanduser().exists()
        if looks_local and not (Path(self.path).expanduser() / "config.json").is_file():
            raise UserError(f"--detector {self.path}: not a detector checkpoint folder (no config.json there)")

    def load(self) -> None:
        """Load the processor and model (once); a path that is neither a local checkpoint nor a reachable
        Hub id is a one-line UserError."""
        if self._model is not None:
            return
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        try:
            self._processor = AutoProcessor.from_pretrained(self.path)
            self._model = AutoModelForZeroShotObjectDetection.from_pretrained(self.path).to(self.device).eval()
        except (OSError, ValueError, KeyError) as e:
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(f"--detector {self.path}: cannot load a zero-shot detector ({msg})") from None
        log.info("detector %s (%s) for %s", self.path, self.model_type, ", ".join(self.objects))

    @property
    def model_type(self) -> str:
        return str(getattr(getattr(self._model, "config", None), "model_type", "unknown"))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "detector": self.path, "model_type": self.model_type if self._model else None,
                "objects": self.objects, "threshold": self.threshold, "nms_iou": self.nms_iou,
                "text_threshold": self.text_threshold if "grounding" in self.model_type else None}

    def images(self, images_dir: Path) -> list[str]:
        return list_images(images_dir)

    def regions(self, name: str, image: Image.Image) -> list[Region]:
        import torch

        self.load()
        size = [(image.height, image.width)]
        grounding = "grounding" in self.model_type
        if grounding:  # Grounding DINO reads one lower-case phrase list: "cat. cup."
            text: Any = ". ".join(o.lower() for o in self.objects) + "."
            inputs = self._processor(images=[image], text=[text], return_tensors="pt")
        else:
            inputs = self._processor(text=[self.objects], images=[image], return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with torch.no_grad():
            out = self._model(**inputs)
        if grounding:
            res = self._processor.post_process_grounded_object_detection(
                out, inputs["input_ids"], threshold=self.threshold, text_threshold=self.text_threshold,
                target_sizes=size)[0]
            phrases = res["text_labels"] if "text_labels" in res else res["labels"]
            labels = [str(t).replace("[SEP]", "").replace("[CLS]", "").strip(" .") for t in phrases]
        else:
            res = self._processor.post_process_grounded_object_detection(
                out, threshold=self.threshold, target_sizes=size, text_labels=[self.objects])[0]
            labels = [str(t) for t in res["text_labels"]]
        regions = [Region([float(v) for v in box.tolist()], label, float(score), "detector")
                   for box, score, label in zip(res["boxes"], res["scores"], labels)]
        return nms(regions, self.nms_iou)


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(regions: list[Region], threshold: float) -> list[Region]:
    """Greedy non-maximum suppression per label: of boxes overlapping by IoU > `threshold`, the best scored."""
    kept: list[Region] = []
    for r in sorted(regions, key=lambda r: -(r.score or 0.0)):
        if all(k.label != r.label or iou(k.box, r.box) <= threshold for k in kept):
            kept.append(r)
    return kept
