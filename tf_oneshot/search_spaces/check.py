"""The space contract, run on any space: a user's space is checked, not trusted.

Everything the pipeline assumes of a space and cannot see for itself fails
silently when it is wrong: a weight the checkpoint does not reach trains and
is then scored at its initial value; a `count()` that is off lets
`--max_params` pass a larger model; a one-shot model that computes something
else under a child's masks than the child ranks the wrong architectures
(Bender et al. 2018, §3: the one-shot model must stand for every child).
So `tf-oneshot space --check`, `tf-oneshot train` on a user's space and the
contract tests of the built-in spaces run these same checks:

- string, JSON, KerasTuner and config forms round-trip exactly;
- every variable of the one-shot model (batch-norm moving statistics
  included) is reachable from `tf.train.Checkpoint(model=...)`'s object graph;
- `count_oneshot()` and `count(arch)` equal Keras' `count_params()`;
- `masked_l2` under an architecture's masks decays exactly that
  architecture's stand-alone weights (the sum of squares of its conv and
  Dense kernels and PACT clip values, after the weight copy);
- under an architecture's masks, the one-shot model equals that
  architecture's stand-alone model holding the inherited weights, two
  architectures in two ghost batches of one call (masks arrive as [G, ...]);
- one traced function serves several architectures (the architecture is a
  tensor, never a Python value).

Each failure is one line naming what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.layers.common import nested_layers
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.layers.quantize import decayed_weights
from tf_oneshot.search_spaces import space_from_config
from tf_oneshot.search_spaces.base import SearchSpace

# Logits of the one-shot model and of the stand-alone child agree to float32 round-off.
TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check of the contract: its name, None or the one-line problem, and its cost."""

    name: str
    problem: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclasses.dataclass(frozen=True)
class SpaceReport:
    """The results of `check_space`, in order."""

    space: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def problems(self) -> list[str]:
        return [f"{r.name}: {r.problem}" for r in self.results if not r.ok]

    def raise_first(self) -> None:
        """Raises the first problem as a one-line UserError (the commands' error contract)."""
        problems = self.problems()
        if problems:
            more = f" (and {len(problems) - 1} more; `tf-oneshot space --check` lists them)" if len(problems) > 1 else ""
            raise UserError(f"search space {self.space!r} fails its contract: {problems[0]}{more}")


def check_space(space: SearchSpace, num_archs: int = 3, ghost_batch_size: int = 2, seed: int = 0,
                quick: bool = False) -> SpaceReport:
    """Runs the checks of the contract on `space` (those needing a model only if it builds).

    Args:
        space: the space (a user's, or a built-in one).
        num_archs: sampled architectures the counts, equality and trace checks use.
        ghost_batch_size: examples per ghost batch of the test inputs.
        seed: seeds the sampled architectures, images and perturbed batch norms.
        quick: only the checks whose failures are silent in training and
            search (round trips, checkpoint, counts, masked l2), as `tf-oneshot train`
            runs them on a user's space; the equality and trace checks
            build more and trace, so `tf-oneshot space --check` runs them.

    Returns:
        A `SpaceReport`; `report.raise_first()` turns a failure into a UserError.
    """
    rng = np.random.default_rng(seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(max(2, num_archs))))
    results = [_timed("round trips", lambda: check_round_trips(space, archs))]
    built: dict[str, Any] = {}

    def build() -> str | None:
        try:
            model = space.build_oneshot(ghost_batch_size)
        except Exception as e:  # the space's own code: name what it raised, in one line
            key = _unknown_key(e, space)
            if key is not None:
                return (f"build_oneshot({ghost_batch_size}) raised KeyError {key!r}: no mask has that name; "
                        f"forward must read masks by decision name, one of: {', '.join(space.mask_shapes())}.")
            return f"build_oneshot({ghost_batch_size}) raised {_one_line(e)}; it must return a built OneShotModel."
        problem = check_built(model)
        if problem is None:
            built["model"] = model
        return problem

    results.append(_timed("build", build))
    if "model" in built:
        model = built["model"]
        results += [
            _timed("checkpoint", lambda: check_checkpoint(model)),
            _timed("counts", lambda: check_counts(space, model, archs, ghost_batch_size)),
            _timed("masked l2", lambda: check_masked_l2(space, model, archs, ghost_batch_size)),
        ]
        if not quick:
            results += [
                _timed("one-shot equals stand-alone", lambda: check_equal_outputs(space, model, archs, rng)),
                _timed("one trace", lambda: check_one_trace(space, model, archs, rng)),
            ]
    return SpaceReport(space.name or type(space).__name__, tuple(results))


def _timed(name: str, check: Callable[[], str | None]) -> CheckResult:
    start = time.perf_counter()
    try:
        problem = check()
    except UserError as e:
        problem = str(e)
    except Exception as e:  # the space's own code failed: one line naming what it raised
        problem = f"raised {_one_line(e)}"
    return CheckResult(name, problem, time.perf_counter() - start)


# Keras wraps an exception raised in `call()` into one of the same type whose text
# holds the original message in bold (ANSI codes), then every argument of the call.
_KERAS_BOLD = re.compile(r"\x1b\[1m(.*?)\x1b\[0m", re.DOTALL)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _one_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    bold = _KERAS_BOLD.search(str(text))
    text = _ANSI.sub("", bold.group(1) if bold else str(text))
    first = (text.strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _unknown_key(error: BaseException, space: SearchSpace) -> str | None:
    """The key of a KeyError (unwrapped from Keras') that names no mask of `space`, else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyError) and len(seen.args) == 1 and isinstance(seen.args[0], str) \
                and "\n" not in seen.args[0]:
            return None if seen.args[0] in space.mask_shapes() else seen.args[0]
        seen = seen.__cause__ or seen.__context__
    return None


# ------------------------------------------------------------------ the checks
def check_built(model: keras.Model) -> str | None:
    """The model `build_oneshot` returns holds its weights: a checkpoint restores into it, counts see them."""
    unbuilt = [layer.name for layer in nested_layers(model) if not layer.built]
    if model.weights and not unbuilt:
        return None
    what = "no variables" if not model.weights else f"unbuilt layers (e.g. {unbuilt[0]})"
    return (f"build_oneshot returned a model with {what}; return {type(model).__name__}.create(self, "
            "ghost_batch_size, skip_inactive), which calls it once on all-on inputs, not the constructor.")


def check_round_trips(space: SearchSpace, archs: Sequence[Hashable]) -> str | None:
    """The string, JSON, KerasTuner and config forms give back what they were made from."""
    for arch in archs:
        text = str(arch)
        forms = {
            "parse(str(arch))": space.parse(text),
            "from_json(to_json(arch))": space.from_json(json.loads(json.dumps(space.to_json(arch)))),
            "from_hyperparameter_values(hyperparameter_values(arch))":
                space.from_hyperparameter_values(space.hyperparameter_values(arch)),
        }
        for form, back in forms.items():
            if back != arch:
                return (f"{form} differs from {text!r}; decision values must be hashable and format and parse "
                        "back (OneOf options of str, int, float or tuples of them).")
    try:
        config = json.loads(json.dumps(space.to_config()))
        same = space_from_config(config) == space
    except (TypeError, ValueError) as e:
        return (f"to_config() does not round-trip ({_one_line(e)}); every field must be JSON-able and "
                "__post_init__ must accept what to_config() writes (lists for tuples).")
    if not same:
        return ("space_from_config(to_config()) is another space; make __post_init__ normalize fields "
                "(e.g. tuple(...) of lists) so that equal configs give equal spaces.")
    return None


def check_checkpoint(model: keras.Model) -> str | None:
    """Every variable of `model` is reachable from a `tf.train.Checkpoint` of it.

    Keras tracks layers kept in lists and dicts, but TensorFlow checkpoints
    follow attributes only: such layers would train, be saved only as
    optimizer slots (batch-norm statistics not at all) and be scored at
    their initial values.
    """
    checkpoint = tf.train.Checkpoint(model=model)  # the view holds it weakly
    reachable = {id(t) for t in tf.train.TrackableView(checkpoint).descendants()}
    missing = [v.path for v in model.weights if id(v) not in reachable]
    if not missing:
        return None
    return (f"{len(missing)} of {len(model.weights)} variables (e.g. {missing[0]}) are not reachable from "
            "tf.train.Checkpoint(model=...), so training would not save them; a list or dict of layers is "
            "tracked by Keras, not by TensorFlow checkpoints: keep them with "
            "`tf_oneshot.layers.track_layers(self, 'prefix', layers)` or as attributes.")


def check_counts(space: SearchSpace, model: keras.Model, archs: Sequence[Hashable],
                 ghost_batch_size: int) -> str | None:
    """`count_oneshot()` and `count(arch)` equal the Keras models' `count_params()`."""
    hint = ("count the weights of every layer: a batch norm holds 4 per channel (gamma, beta, moving mean "
            "and variance), a Dense layer its bias too")
    stated = space.count_oneshot().params
    if stated != model.count_params():
        return (f"count_oneshot() says {stated:,} parameters but the one-shot model has "
                f"{model.count_params():,} (count_params()); {hint}.")
    for arch in archs:
        stated, actual = space.count(arch).params, space.build_standalone(arch, ghost_batch_size).count_params()
        if stated != actual:
            return (f"count({str(arch)!r}) says {stated:,} parameters but its stand-alone model has {actual:,} "
                    f"(count_params()); {hint}. Constraints such as --max_params trust count().")
    return None


def check_masked_l2(space: SearchSpace, model: Any, archs: Sequence[Hashable], ghost_batch_size: int) -> str | None:
    """Under one architecture's masks, `masked_l2` equals the sum of squares of the child's decayed weights.

    Those are every conv and Dense kernel the stand-alone child holds
    (`layers.conv_kernels`) and its PACT clipping levels, which PACT decays
    too (Choi et al. 2018, §2). The one-shot model, under that child's masks,
    must decay exactly those (Bender et al. 2018, §3.2): fewer, and training
    runs without weight decay on them; more, and it shrinks weights the child
    does not use (a path its masks turn off, or a layer whose output no
    active path reaches, which the stand-alone model drops), which other
    children share.
    """
    for arch in archs:
        child = space.build_standalone(arch, ghost_batch_size, name="check_l2")
        weights = decayed_weights(nested_layers(child))
        initial = [w.numpy() for w in weights]
        space.inherit_weights(model, child, arch)
        if all(np.array_equal(w.numpy(), v) for w, v in zip(weights, initial)):
            return None  # inherit_weights copied nothing: the equality check names that, not this one
        expected = float(sum(np.sum(np.square(w.numpy())) for w in weights))
        got = float(model.masked_l2(space.encode_batch([arch])))
        if abs(got - expected) <= TOLERANCE * max(expected, 1.0):
            continue
        if got < expected:
            return (f"masked_l2 under the masks of {str(arch)!r} is {got:.6g}, less than the sum of squares of its "
                    f"stand-alone model's kernels ({expected:.6g}); it must add each conv and Dense kernel the "
                    "architecture uses, weighted by path_fraction of its mask (supernet.weighted_sum_of_squares).")
        return (f"masked_l2 under the masks of {str(arch)!r} is {got:.6g}, more than the sum of squares of its "
                f"stand-alone model's kernels ({expected:.6g}); it decays weights the architecture does not use "
                "(a path its masks turn off, or a layer no active path reaches): weight each kernel by the "
                "path_fraction of the masks that make it reach the output (Bender et al. 2018, §3.2).")
    return None


def _perturb_batch_norms(model: keras.Model, rng: np.random.Generator) -> None:
    """Batch norms as if trained (beta != 0): a mask applied before one instead of after shows."""
    for layer in nested_layers(model):
        if isinstance(layer, (GhostBatchNormalization, keras.layers.BatchNormalization)) and layer.weights:
            weights = layer.get_weights()
            weights[0] = rng.uniform(0.5, 1.5, weights[0].shape).astype(weights[0].dtype)
            weights[1] = rng.normal(0.0, 0.5, weights[1].shape).astype(weights[1].dtype)
            layer.set_weights(weights)


def _batch_statistics(model: keras.Model) -> keras.Model:
    for layer in nested_layers(model):
        if isinstance(layer, GhostBatchNormalization):
            layer.set_mode("batch")  # Bender et al. 2018, §3.2: batch statistics at evaluation
    return model


def _images(space: SearchSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(n, *space.image_shape)).astype("float32")


def check_equal_outputs(space: SearchSpace, model: Any, archs: Sequence[Hashable],
                        rng: np.random.Generator) -> str | None:
    """Under each architecture's masks the one-shot model computes its stand-alone model.

    Two architectures go through one call as two ghost batches (masks
    [G, ...]); each half must equal that child's stand-alone model holding
    the inherited weights, with batch statistics in both (Bender et al. 2018, §3.2).
    """
    _perturb_batch_norms(model, rng)
    model.set_bn_mode("batch")
    gbs = model.ghost_batch_size
    for a, b in zip(archs, archs[1:]):
        images = _images(space, 2 * gbs, rng)
        logits = np.asarray(model({"images": images, **space.encode_batch([a, b])}, training=False))
        for k, arch in enumerate((a, b)):
            child = space.build_standalone(arch, gbs, name="check")
            try:
                space.inherit_weights(model, child, arch)
            except (ValueError, KeyError) as e:
                return (f"inherit_weights(..., {str(arch)!r}) failed ({_one_line(e)}); give the stand-alone "
                        "layers the one-shot layers' names (tf_oneshot.layers.copy_weights_by_name).")
            part = slice(k * gbs, (k + 1) * gbs)
            expected = np.asarray(_batch_statistics(child)(images[part], training=False))
            gap = float(np.max(np.abs(logits[part] - expected)))
            if not gap <= TOLERANCE * max(1.0, float(np.max(np.abs(expected)))):
                return (f"under the masks of {str(arch)!r} the one-shot model's logits differ from its stand-alone "
                        f"model's by {gap:.3g} (ghost batch {k} of 2); likely causes: a path of the stand-alone "
                        "model (a shortcut, a second layer) missing from forward or computed there differently; a "
                        "width that changes between stages, where the stage's output must be masked to its width "
                        "and the weight copy must slice the next layer's input side too (copy_weights_by_name("
                        "sliced=True) keeps the leading slice of every axis); a mask applied before the batch norm "
                        "it follows instead of after; masks not read as [G, ...] (layers.per_example); a shared "
                        "weight inherit_weights does not copy.")
    return None


def check_one_trace(space: SearchSpace, model: Any, archs: Sequence[Hashable],
                    rng: np.random.Generator) -> str | None:
    """One traced function serves every architecture: the masks are tensors of one static shape."""
    images = _images(space, model.ghost_batch_size, rng)
    logits = tf.function(lambda masks: model({"images": images, **masks}, training=False))
    for arch in archs:
        logits({k: tf.constant(v) for k, v in space.encode_batch([arch]).items()})
    traces = logits.experimental_get_tracing_count()
    if traces != 1:
        return (f"{len(archs)} architectures traced the one-shot model {traces} times; read the architecture only "
                "from the mask tensors (never as Python values) and give masks the static mask_shapes().")
    return None


__all__ = ["CheckResult", "SpaceReport", "check_built", "check_checkpoint", "check_counts", "check_equal_outputs",
           "check_masked_l2", "check_one_trace", "check_round_trips", "check_space"]
