"""The Python API as a notebook would use it, as a plain script (each `# %%` is a cell).

    python tests/api_notebook.py [OUT_DIR]

Evaluates the reference model on 20 items of the synthetic task through the API, loads the run into pandas,
recomputes the gap (crop − full, points) from the per-sample DataFrame by hand and checks it equals the one
recorded in results.json. Exits non-zero (an AssertionError) when anything disagrees. Run by tests/test_api.py.
"""

# %% set-up
import json
import sys
from pathlib import Path

import vopd_bench

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/api-notebook")

# %% evaluate the reference model on 20 items (full image and crop): `vopd-bench eval` as a function
run = vopd_bench.evaluate(model="vopd-tiny", tasks=["synth"], limit=20, out=out)
print(run)

# %% load the run back: typed config and results, the samples as a pandas DataFrame
run = vopd_bench.load_run(out)
df = run.samples
print(df[["id", "view", "image", "answer", "parsed", "correct"]].head())
assert len(df) == 40 and set(df["view"]) == {"full", "crop"}, df.shape
assert df["image"].map(lambda p: Path(p).is_file()).all(), "every synthetic item's image is a file on disk"

# %% the gap, recomputed from the DataFrame: pair the views by item id, crop accuracy − full accuracy
answered = df[df["error"].isna()]
wide = answered.pivot(index="id", columns="view", values="correct").dropna().astype(float)
gap = 100.0 * (wide["crop"].mean() - wide["full"].mean())
recorded = json.loads((out / "results.json").read_text())["tasks"]["synth"]["gap"]
print(f"gap from the DataFrame: {gap:+.2f} points over {len(wide)} pairs; results.json: {recorded['value']:+.2f} "
      f"over {recorded['n_pairs']} pairs")
assert len(wide) == recorded["n_pairs"] == 20
assert abs(gap - recorded["value"]) < 1e-9
assert run.gap("synth").value == recorded["value"]
print("OK")
