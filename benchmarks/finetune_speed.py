"""Times few-step fine-tuning ("Deeper insights" §3.3) of many children: masked vs per-child Keras models.

Re-ranking the top k of a search, or drawing Figure 4 over a 64-child space,
fine-tunes many children from the same snapshot. Two ways, both in
`tf_oneshot.training.finetune`:

  masked:     `FineTuner`: each child inside the one-shot model under its
              fixed masks, from a fresh copy of the snapshot; one trace of
              the train, recalibration and evaluation functions for all.
  standalone: `finetune_standalone`: each child's own Keras model with the
              inherited weights, a new model and new traces per child.

Both give the same fine-tuned child (tests/test_finetune.py). This trains a
small darts64 one-shot model (or takes --model_dir), fine-tunes --children
children for --steps mini-batches each way, and prints wall-clock and process
CPU seconds per child (CPU time is the less noisy on a shared machine).

    python benchmarks/finetune_speed.py                 # 8 children, 10 steps
    python benchmarks/finetune_speed.py --children=64 --steps=20 --jit_compile

Measured on 2 shared CPU cores (load ~7, so noisy), darts64 F=8, 2 cells,
batch 64, snapshot of 100 uniform-sampler steps, 10 fine-tuning steps, 512
recalibration images: masked 11.6 s CPU for the first child (its trace),
5.6 s CPU per further child; standalone 4.5 s first, 4.0 s per further child
(evaluating the test split too): 6.8 against 7.8 children/min over 8. The
masked step runs the one-shot model, slower per step than the child's own
network without XLA; with --jit_compile its train step takes ~1.6-2.4 s CPU
per child instead of ~4 s (about 2.7 s per child in all) after a ~15 s trace,
so it pays off from about a dozen children on (the 64 of Figure 4).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_oneshot.training import finetune, model_dir, trainer  # noqa: E402
from tf_oneshot.training.config import TrainConfig  # noqa: E402


def _timed(fn, children):
    wall, cpu = time.perf_counter(), time.process_time()
    first = None
    for i, child in enumerate(children):
        fn(child)
        if i == 0:
            first = (time.perf_counter() - wall, time.process_time() - cpu)
    return first, (time.perf_counter() - wall, time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", default=None, help="a trained one-shot model_dir (default: train one)")
    parser.add_argument("--children", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--train_steps", type=int, default=100, help="one-shot training when no --model_dir")
    parser.add_argument("--recalibration_images", type=int, default=512)
    parser.add_argument("--jit_compile", action="store_true", help="masked: the train step under XLA")
    args = parser.parse_args()

    path = args.model_dir
    if path is None:
        path = os.path.join(tempfile.mkdtemp(), "model")
        config = TrainConfig(dataset="digits", space="darts64", filters=8, num_cells=2, batch_size=64,
                             ghost_batch_size=32, train_steps=args.train_steps, log_every=50,
                             checkpoint_every=args.train_steps, sampler="uniform", space_args="stem_filters=8")
        trainer.train(config, path, log=lambda s: None)
    loaded = model_dir.load_oneshot(path)
    children = [str(a) for a in list(loaded.space.enumerate(limit=100_000))[:args.children]]
    print(f"{loaded.space.name}, snapshot step {loaded.step}: {len(children)} children x {args.steps} fine-tuning "
          f"steps, {args.recalibration_images} recalibration images (timings on a shared machine)")
    tic = time.perf_counter()
    tuner = finetune.FineTuner(path, args.steps, recalibration_images=args.recalibration_images,
                               jit_compile=args.jit_compile or None)
    setup = time.perf_counter() - tic
    results = {
        "masked": _timed(tuner, children),
        "standalone": _timed(lambda c: finetune.finetune_standalone(
            loaded, c, args.steps, recalibration_images=args.recalibration_images), children),
    }
    print(f"masked set-up (load, build): {setup:.1f}s wall")
    for name, ((w1, c1), (w, c)) in results.items():
        rest = max(len(children) - 1, 1)
        print(f"{name:>10}: first child {w1:.1f}s wall / {c1:.1f}s CPU; the others {(w - w1) / rest:.2f}s wall / "
              f"{(c - c1) / rest:.2f}s CPU each; {len(children) / w * 60:.1f} children/min overall")


if __name__ == "__main__":
    main()
