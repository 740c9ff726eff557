"""Training-free rankings of architectures: the baselines every one-shot tau is read against.

A one-shot ranking is only worth its training if it beats the rankings a
researcher gets for free. Few zero-cost proxies beat plain parameter count
consistently (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS",
ICLR 2021, §4; ZiCo, ICLR 2023), so every ranking report carries these:

- "params", "flops": the space's arithmetic (`SearchSpace.count`), no model.
- "synflow" (Tanaka et al., NeurIPS 2020, §5; as a NAS proxy Abdelfattah et
  al. 2021, §3): with every weight replaced by its absolute value and batch
  norm at its initial moving statistics (an identity up to epsilon, so one
  all-ones image passes), R = sum of the logits of an all-ones image; the
  score is sum |theta * dR/dtheta| over the kernels. Data-free.
- "grad_norm" (Abdelfattah et al. 2021, §3): the sum over kernels of the L2
  norm of the cross-entropy gradient on one minibatch.
- "snip" (Lee et al., ICLR 2019, §4.1, connection sensitivity; as a NAS proxy
  Abdelfattah et al. 2021, §3): sum |theta * dL/dtheta| over the kernels.
- "jacob_cov" (Mellor et al., "Neural Architecture Search without Training",
  arXiv v1 2020, §3, the score before NASWOT's activation codes of ICML 2021):
  the Jacobian of the summed logits with respect to each input image, their
  correlation matrix's eigenvalues v, score -sum(log(v + k) + 1/(v + k)),
  k = 1e-5. It needs only gradients, so it runs on any Keras model; NASWOT's
  ReLU codes need the ReLU activations, which a user's subclassed layers do
  not expose.

Every proxy is higher-is-better and is computed at initialization on the
*stand-alone child* (`space.build_standalone`), seeded by `seed` so every child
starts from the same draws: the proxies are defined on the network that would
be trained, and the one-shot model with the child's masks is not that network
at initialization (its batch norm runs at the maximum width and its weights
are drawn for the supernet's fan-in). Batch norm runs on the minibatch's
statistics (training mode) for the data proxies, as the papers' code does.

`ProxyScorer` has the one-shot scorer's interface (`score(archs)` -> dicts with
`oneshot_accuracy`, the value a search ranks by, and `loss`), so `tf-oneshot
search --scorer=synflow` searches by a proxy with the same algorithms.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.training.model_dir import ModelDir

COST_PROXIES = ("params", "flops")
MODEL_PROXIES = ("synflow", "grad_norm", "snip", "jacob_cov")
PROXIES = (*COST_PROXIES, *MODEL_PROXIES)
PROXY_BATCH = 64  # Abdelfattah et al. 2021, §3: one minibatch (64 images in their NAS-Bench-201 runs)
JACOB_COV_K = 1e-5  # Mellor et al. 2020, §3


def check_proxies(names: Sequence[str]) -> tuple[str, ...]:
    """The proxy names, checked (UserError names the unknown one and the choices)."""
    for name in names:
        if name not in PROXIES:
            raise UserError(f"proxy {name!r} is unknown; choose from {', '.join(PROXIES)}.")
    return tuple(names)


def _kernels(model: keras.Model) -> list[tf.Variable]:
    # The papers' code scores conv and linear weights only (Abdelfattah et al. 2021).
    return [v for v in model.trainable_variables if len(v.shape) >= 2]


def synflow(model: keras.Model, image_shape: Sequence[int]) -> float:
    """Tanaka et al. 2020, §5: sum |theta * dR/dtheta|, R the summed logits of |theta| on an all-ones image."""
    kernels = _kernels(model)
    saved = [v.numpy() for v in model.trainable_variables]
    for v in model.trainable_variables:
        v.assign(tf.abs(v))
    try:
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(model(tf.ones((1, *image_shape)), training=False))
        grads = tape.gradient(total, kernels)
        return float(sum(np.abs(v.numpy().astype(np.float64) * g.numpy()).sum()
                         for v, g in zip(kernels, grads) if g is not None))
    finally:
        for v, value in zip(model.trainable_variables, saved):
            v.assign(value)


def _data_gradients(model: keras.Model, images: tf.Tensor, labels: tf.Tensor, kernels: bool,
                    inputs: bool) -> tuple[list[Any], tf.Tensor | None]:
    """One forward pass on the minibatch (training mode), two gradients from it.

    ([(kernel, dL/dkernel)] if `kernels`, the Jacobian of the summed logits
    with respect to the images if `inputs`): grad_norm and snip need the
    first, jacob_cov the second, and all three the same forward pass.
    """
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        logits = model(images, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        total = tf.reduce_sum(logits)
    weights = _kernels(model) if kernels else []
    pairs = list(zip(weights, tape.gradient(loss, weights))) if weights else []
    return pairs, tape.gradient(total, images) if inputs else None


def grad_norm(pairs: Sequence[tuple[Any, Any]]) -> float:
    """Abdelfattah et al. 2021, §3: the sum of the kernels' gradient L2 norms."""
    return float(sum(np.linalg.norm(g.numpy()) for _, g in pairs if g is not None))


def snip(pairs: Sequence[tuple[Any, Any]]) -> float:
    """Lee et al. 2019, §4.1: the summed connection sensitivity |theta * dL/dtheta|."""
    return float(sum(np.abs(v.numpy().astype(np.float64) * g.numpy()).sum() for v, g in pairs if g is not None))


def jacob_cov(model: keras.Model, images: tf.Tensor) -> float:
    """Mellor et al. 2020, §3: -sum(log(v + k) + 1/(v + k)) over the eigenvalues v of the Jacobians' correlations."""
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(model(images, training=True))
    return _jacob_cov_score(tape.gradient(total, images))


def _jacob_cov_score(jacobians: tf.Tensor) -> float:
    jacobians = jacobians.numpy().reshape(jacobians.shape[0], -1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.corrcoef(jacobians)
    if not np.isfinite(correlation).all():
        return float("-inf")  # a constant Jacobian: the network cannot tell its inputs apart
    v = np.linalg.eigvalsh(correlation)
    return float(-np.sum(np.log(v + JACOB_COV_K) + 1.0 / (v + JACOB_COV_K)))


def proxy_values(space: Any, archs: Sequence[Hashable], proxies: Sequence[str], images: np.ndarray | None = None,
                 labels: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Each proxy's score of each architecture (higher is better), one stand-alone model built per child.

    Args:
        space: any search space (registered or a user's).
        archs: the architectures, in the order of the returned arrays.
        proxies: names from `PROXIES`.
        images, labels: one minibatch (needed unless every proxy is "params",
            "flops" or "synflow").
        seed: the initialization seed, the same for every child.

    Raises:
        UserError: an unknown proxy, or a data proxy without a minibatch.
    """
    proxies = check_proxies(proxies)
    models = [p for p in proxies if p in MODEL_PROXIES]
    if any(p != "synflow" for p in models) and (images is None or labels is None or len(images) < 2):
        raise UserError(f"proxies {', '.join(models)} need a minibatch of at least 2 labelled images.")
    out = {p: np.zeros(len(archs)) for p in proxies}
    x = None if images is None else tf.convert_to_tensor(np.asarray(images, np.float32))
    y = None if labels is None else tf.convert_to_tensor(np.asarray(labels, np.int32))
    for i, arch in enumerate(archs):
        cost = space.count(arch)
        for name, value in (("params", cost.params), ("flops", cost.flops)):
            if name in out:
                out[name][i] = value
        if not models:
            continue
        keras.utils.set_random_seed(seed)
        model = space.build_standalone(arch)
        if not model.built:  # a subclassed model's weights come with its first call
            model(tf.zeros((1, *space.image_shape)), training=False)
        if "synflow" in out:
            out["synflow"][i] = synflow(model, space.image_shape)
        if any(p in out for p in ("grad_norm", "snip", "jacob_cov")):
            pairs, jacobians = _data_gradients(model, x, y, "grad_norm" in out or "snip" in out, "jacob_cov" in out)
            for name, fn in (("grad_norm", grad_norm), ("snip", snip)):
                if name in out:
                    out[name][i] = fn(pairs)
            if jacobians is not None:
                out["jacob_cov"][i] = _jacob_cov_score(jacobians)
    return out


def minibatch(model_dir: ModelDir, batch: int = PROXY_BATCH, seed: int = 0,
              data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One minibatch of the run's training split (images, labels), the proxies' data."""
    from tf_oneshot.training import data

    config = model_dir.config
    dataset = data.make_dataset(config.data.dataset, "train", batch, training=False,
                                data_dir=data_dir or config.data.data_dir, seed=seed)
    images, labels = (t.numpy() for t in next(iter(dataset)))
    return images, labels


class ProxyScorer:
    """Scores architectures by one training-free proxy, with `OneShotScorer`'s interface.

    Args:
        space: the search space.
        proxy: a name from `PROXIES`.
        images, labels: the minibatch of the data proxies.
        seed: the initialization seed of every child.
        step: the checkpoint step of the run searched (the results' identity).
    """

    bn_mode = "batch"  # the data proxies use the minibatch's statistics
    archs_per_pass = 1
    replicas = 1
    archs_per_call = 1
    recalibration_count = 0

    def __init__(self, space: Any, proxy: str, images: np.ndarray | None = None, labels: np.ndarray | None = None,
                 *, seed: int = 0, step: int = 0):
        check_proxies([proxy])
        self.space, self.proxy, self.seed, self.step = space, proxy, seed, step
        self.images, self.labels = images, labels
        self.num_examples = 0 if images is None else len(images)
        self.strategy = tf.distribute.get_strategy()
        self.options = {"scorer": proxy, "proxy_seed": seed, "proxy_batch": self.num_examples}

    @classmethod
    def from_model_dir(cls, model_dir: str | ModelDir, proxy: str, *, seed: int = 0, batch: int = PROXY_BATCH,
                       data_dir: str | None = None) -> ProxyScorer:
        """The proxy on `model_dir`'s space and one minibatch of its training split (none for params/flops)."""
        check_proxies([proxy])
        model_dir = ModelDir.open(model_dir)
        images = labels = None
        if proxy in MODEL_PROXIES and proxy != "synflow":
            images, labels = minibatch(model_dir, batch, seed, data_dir)
        return cls(model_dir.space, proxy, images, labels, seed=seed, step=model_dir.checkpoint_step())

    def score(self, archs: Sequence[Hashable]) -> list[dict[str, float]]:
        """One dict per architecture: `oneshot_accuracy` is the proxy (what a search ranks by), `loss` 0.

        The proxy's value is also stored under its own name, and the results'
        identity records `options.scorer`, so no line is read as an accuracy.
        """
        values = proxy_values(self.space, archs, [self.proxy], self.images, self.labels, self.seed)[self.proxy]
        return [{"oneshot_accuracy": float(v), "loss": 0.0, self.proxy: float(v)} for v in values]

    def tracing_count(self) -> int:
        """No compiled function: every child runs eagerly."""
        return 0
