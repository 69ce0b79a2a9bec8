"""Copy the photographs that scikit-image bundles (astronaut, coffee, chelsea, rocket) into a folder, so
`vopd-bench prompts FOLDER --boxes examples/skimage_coco.json` runs on real pixels offline.

    python examples/skimage_photos.py photos/
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")


def main(out: str) -> None:
    try:
        import skimage
    except ImportError:
        sys.exit("needs scikit-image: pip install 'vopd-bench[prompts]'")
    src = Path(skimage.__file__).parent / "data"
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        shutil.copyfile(src / name, dst / name)
    print(f"copied {len(PHOTOS)} photographs to {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
