#!/usr/bin/env python3
"""Build the training store from data whose licence allows shipping, and train the bundled models.

Permitted data: the bundled demo song "Paper Lanterns" (``expertmix/demo``): arrangement,
reference balance and drum samples CC0-1.0, pitched instruments rendered from FluidR3_GM (MIT);
its reference mix is ``expertmix/demo/reference/reference_mix.flac``. It is added exactly as a user
would (``expertmix learn add``), with ``--augment`` perturbed copies, then ``expertmix learn
train`` writes ``models/``.

Deliberately *not* used: the dev corpus (``../shared/corpus``). Its real songs are MedleyDB
material under CC BY-NC-SA 4.0: a model trained on them would arguably be an adaptation that
must carry the non-commercial share-alike terms, which the MIT-licensed expertmix cannot ship.
Its constructed songs contain GPL-2+ samples (techno, hip-hop) or a score encoding that "may
restrict commercial use" (string quartet). The corpus is used to *evaluate* these models
(``benchmarks/learning_eval.py``), never to train them.

With a single song there is no cross-validation by song; ``models/README.md`` says so and
points at the leave-one-song-out figures of the same recipe in ``benchmarks/LEARNING.md``.

Reproducible: the same expertmix, the same demo files and the same arguments give
byte-identical model files (deterministic LightGBM, seeded augmentation).

    python benchmarks/train_models.py [--augment 16] [--out models] [--store /tmp/x.sqlite]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from expertmix import learning as L  # noqa: E402

DEMO = REPO / "expertmix" / "demo"
LICENCE = ("CC0-1.0 (Paper Lanterns demo: arrangement, reference balance, drum samples) + MIT (FluidR3_GM "
           "instrument samples); see expertmix/demo/LICENSE-AUDIO.txt")
NOTE = ("1 reference song: the bundled demo 'Paper Lanterns' (10 stems, pop/rock, 20 s) and its reference mix, "
        "added with `expertmix learn add --augment {n}`; MedleyDB (CC BY-NC-SA) and the GPL-sample corpus songs "
        "deliberately excluded")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--augment", type=int, default=16)
    ap.add_argument("--out", type=Path, default=REPO / "models")
    ap.add_argument("--store", type=Path, default=None, help="store file (default: a fresh temporary one)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="expertmix-train-")
    store = args.store or Path(tmp.name) / "store.sqlite"
    t0 = time.perf_counter()
    r = L.add_reference(DEMO, DEMO / "reference" / "reference_mix.flac", store=store, genre="pop", licence=LICENCE,
                        name="paper_lanterns_demo", augment=args.augment, on_duplicate="skip")
    add_s = time.perf_counter() - t0
    print(f"added the demo: fit residual {r.residual_db} dB, {r.augmented} augmented copies, {add_s:.0f} s")
    t0 = time.perf_counter()
    rep = L.train(store, args.out, licence=LICENCE, data_note=NOTE.format(n=args.augment))
    print(f"trained in {time.perf_counter() - t0:.1f} s into {rep.out_dir}")
    for s in rep.slots:
        print(f"  {s.slot:<24} {s.model or 'no model'}  rows {s.rows}  {s.skipped or ''}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
