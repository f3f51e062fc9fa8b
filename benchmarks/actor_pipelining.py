"""Does the model actor wait for input? `outpaint run` with one call per actor vs two
(runtime.actor_concurrency 1 vs 2: with two, the next batch is prepared and VAE-encoded
while the current one denoises), on real local Ray with the tiny FLUX Fill model on CPU.

Reports the run's own `model busy` figure (denoising-loop time / actor time) and
images/s for both, alternating settings over ``--reps`` so machine noise hits both.
On CPU the "GPU" loop shares cores with the CPU stages and the tiny model's loop is
short next to its VAE work, so the absolute figures say little about a GPU; the
comparison shows the pipelining at work. On a GPU box, run it with a real model.path.

    python benchmarks/actor_pipelining.py [--rows 48] [--reps 2] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--model", help="model.path (default: a tiny random FLUX Fill on CPU)")
    args = ap.parse_args(argv)

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    from skimage import data

    from pipeline import config as config_mod
    from pipeline.backends.testmodel import make_test_model
    from pipeline.run.runner import run

    tmp = tempfile.mkdtemp()
    Image.fromarray(data.astronaut()[::2, ::2]).save(os.path.join(tmp, "a.png"))
    model = args.model or make_test_model(os.path.join(tmp, "tiny"))
    manifest = os.path.join(tmp, "m.parquet")
    pq.write_table(
        pa.table(
            {
                "id": [f"r{i}" for i in range(args.rows)],
                "image": [os.path.join(tmp, "a.png")] * args.rows,
                "width": [args.size] * args.rows,
                "height": [args.size] * args.rows,
            }
        ),
        manifest,
    )
    res: dict[int, list] = {1: [], 2: []}
    for _ in range(args.reps):
        for conc in (1, 2):
            cfg = config_mod.from_dict(
                {
                    "input": {"manifest": manifest},
                    "output": {
                        "uri": os.path.join(tmp, f"out{conc}"),
                        "report": False,
                        "mode": "overwrite",
                    },
                    "model": {
                        "backend": "flux-fill",
                        "path": model,
                        "dtype": "float32" if not args.model else "bfloat16",
                        "steps": args.steps,
                    },
                    "runtime": {"batch_size": 2, "block_rows": 2, "actor_concurrency": conc},
                }
            )
            r = run(cfg, quiet=True)
            res[conc].append((r["model_busy"]["fraction"], r["images_per_s"]))
    for conc, rs in res.items():
        busy, ips = np.mean([r[0] for r in rs]), np.mean([r[1] for r in rs])
        print(
            f"actor_concurrency {conc}: model busy {100 * busy:.0f}%, {ips:.2f} images/s "
            f"(runs: {', '.join(f'{100 * b:.0f}%/{i:.2f}' for b, i in rs)})"
        )
    b1, b2 = (np.mean([r[0] for r in res[c]]) for c in (1, 2))
    i1, i2 = (np.mean([r[1] for r in res[c]]) for c in (1, 2))
    print(f"two calls per actor: model busy x{b2 / b1:.2f}, throughput x{i2 / i1:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
