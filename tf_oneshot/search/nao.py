"""Neural Architecture Optimization (Luo et al. 2018, NAO §3) as an ask/tell search algorithm.

NAO maps discrete architectures into a continuous space and optimizes there:

- an encoder E maps an architecture's token sequence x to an embedding e_x;
- a predictor f maps e_x to the architecture's performance;
- a decoder D maps an embedding back to an architecture.

All three are trained together on the pool's (architecture, score) pairs with
loss = λ · L_pp + (1 − λ) · L_rec (NAO §3.4: L_pp the predictor's squared
error, L_rec the decoder's cross-entropy; λ = 0.8 in the authors' code),
scores min-max scaled to [0, 1] as that code does. New candidates come from
the top-k architectures: each embedding moves along the predictor's gradient,
e' = e + η ∂f/∂e (NAO §3.3, Eq. 3), with η raised step by step until the
decoded architecture is one not seen before (the authors' code raises η by 1
up to 50 until enough new architectures turn up). NAO-WS and NAO-V2 (seed
001) run this between iterations of one-shot training; `tf-oneshot search
--algorithm=nao` runs it against a fixed one-shot model, one generation at a
time like evolution: a random initial pool, then generations of new
candidates, each from an encoder-predictor-decoder trained afresh on every
score told so far (the latest score of an architecture told twice).

Deviations from the paper, each for a reason:

- The encoder is token embeddings concatenated into a one-layer MLP, not an
  LSTM: a space's decisions are a fixed, unordered set of independent
  choices (not NAO's variable-order DAG string), so position-specific
  embeddings lose nothing, and an MLP trains in seconds on a CPU.
- The decoder is one softmax head per token read from the embedding, not an
  attention LSTM: with a fixed number of tokens each of known vocabulary,
  per-token heads decode every architecture of the space and only those.
- The embedding is L2-normalized, as NAO normalizes its encoder outputs.

Tokens are generic (`TokenCodec`): one token per decision, its index among the
decision's values; a `SubsetOf` with more than `CATEGORICAL_LIMIT` values gets
one in/out token per member instead, decoded as the subset of allowed size
with the highest probability. Constraints hold by construction: a decoded
architecture that breaks them (or a restricted sub-space) is rejected, and
the places it leaves are filled by constrained mutation of the top-k, then
constrained draws (`fresh_fills`). The network's weights, the shuffling and
dropout are seeded from (seed, generation), so a run restarted over its
results file proposes the same architectures.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from scipy import stats

from tf_oneshot.errors import UserError
from tf_oneshot.search.base import SearchAlgorithm, check_options
from tf_oneshot.search_spaces import SearchSpace, SubsetOf
from tf_oneshot.search_spaces.constraints import Constraints

# A SubsetOf with more values than this is encoded one in/out token per member.
CATEGORICAL_LIMIT = 64
# Attempts at a new, fitting mutant of the top-k before a fresh draw replaces it.
FILL_ATTEMPTS = 200
# The authors' code: NAO-V2 updates its controller 3 times (4 pool evaluations).
NAO_ROUNDS = 3


# --------------------------------------------------------------------- tokens
class TokenCodec:
    """Architectures <-> fixed-length integer token sequences, for any space's decisions.

    Args:
        space: the search space.

    Raises:
        UserError: if the space has no decision with two or more values.
    """

    def __init__(self, space: SearchSpace):
        self.space = space
        self.decisions = tuple(space.decisions())
        if not self.decisions or math.prod(d.size() for d in self.decisions) < 2:
            raise UserError(
                f"--algorithm=nao needs a search space with at least one decision of two or more values; "
                f"{space.name!r} has {len(self.decisions)} decision(s) and {space.size()} architecture(s)."
            )
        self.plan: list[tuple[str, Any, tuple]] = []
        vocab: list[int] = []
        for d in self.decisions:
            if isinstance(d, SubsetOf) and d.size() > CATEGORICAL_LIMIT:
                self.plan.append(("members", d, tuple(d.options)))
                vocab += [2] * len(d.options)
            else:
                values = tuple(d.values())
                self.plan.append(("choice", d, values))
                vocab.append(len(values))
        self.vocab_sizes = tuple(vocab)

    @property
    def length(self) -> int:
        """Number of tokens per architecture."""
        return len(self.vocab_sizes)

    def encode(self, archs: Sequence[Hashable]) -> np.ndarray:
        """Tokens of `archs`, shape (len(archs), length), int32."""
        out = np.zeros((len(archs), self.length), np.int32)
        for row, arch in enumerate(archs):
            col = 0
            for (kind, _, items), value in zip(self.plan, self.space.values_of(arch)):
                if kind == "choice":
                    out[row, col] = items.index(value)
                    col += 1
                else:
                    out[row, col:col + len(items)] = [o in value for o in items]
                    col += len(items)
        return out

    def decode(self, log_probs: np.ndarray) -> list[Hashable | None]:
        """The most probable architecture for each row of per-token log-probabilities.

        Args:
            log_probs: shape (n, length, max vocabulary); entries past a
                token's vocabulary are ignored.

        Returns:
            One architecture per row, None where the values fall outside the
            space (a restricted sub-space).
        """
        out = []
        for row in log_probs:
            values, col = [], 0
            for kind, d, items in self.plan:
                if kind == "choice":
                    values.append(items[int(np.argmax(row[col, :len(items)]))])
                    col += 1
                else:
                    odds = row[col:col + len(items), 1] - row[col:col + len(items), 0]
                    values.append(_best_subset(d, odds))
                    col += len(items)
            try:
                out.append(self.space.from_values(values))
            except UserError:
                out.append(None)
        return out


def _best_subset(d: SubsetOf, odds: np.ndarray) -> tuple:
    """The subset of allowed size maximizing the summed member log-odds."""
    order = np.argsort(-odds, kind="stable")
    size = int(np.clip(int((odds > 0).sum()), d.min_size, d.max_size))
    chosen = set(order[:size].tolist())
    return tuple(o for i, o in enumerate(d.options) if i in chosen)


# -------------------------------------------------------------------- network
class EncoderPredictorDecoder(keras.Model):
    """NAO's encoder E, predictor f and decoder D (NAO §3.1-3.2), small MLPs.

    Args:
        vocab_sizes: vocabulary of each token (`TokenCodec.vocab_sizes`).
        embedding_size: size of each token's embedding (32 in NAO).
        hidden_size: size of the architecture embedding e_x (64 in NAO-V2's code).
        mlp_layers: hidden layers of the predictor (0 in NAO-V2's code).
        mlp_hidden_size: their width (200 in NAO).
        mlp_dropout: dropout before each of them (0.1 in NAO).
        seed: seeds every initializer and the dropout.
    """

    def __init__(self, vocab_sizes: Sequence[int], embedding_size: int = 32, hidden_size: int = 64,
                 mlp_layers: int = 0, mlp_hidden_size: int = 200, mlp_dropout: float = 0.1, seed: int = 0,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        self.max_vocab = max(self.vocab_sizes)
        length = len(self.vocab_sizes)
        seeds = iter(np.random.SeedSequence(seed).generate_state(2 * mlp_layers + 8).tolist())

        def glorot() -> keras.initializers.Initializer:
            return keras.initializers.GlorotUniform(seed=next(seeds))

        # Token t with value v has its own row: offset[t] + v (positions differ in meaning).
        self.offsets = np.cumsum([0, *self.vocab_sizes[:-1]]).astype(np.int32)
        self.embedding = keras.layers.Embedding(
            sum(self.vocab_sizes), embedding_size,
            embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=next(seeds)))
        self.flatten = keras.layers.Flatten()
        self.encoder = keras.layers.Dense(hidden_size, activation="tanh", kernel_initializer=glorot())
        self.mlp = []
        for _ in range(mlp_layers):
            self.mlp.append(keras.layers.Dropout(mlp_dropout, seed=next(seeds)))
            self.mlp.append(keras.layers.Dense(mlp_hidden_size, activation="relu", kernel_initializer=glorot()))
        self.mlp_dropout = keras.layers.Dropout(mlp_dropout, seed=next(seeds))
        self.regressor = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=glorot())
        self.decoder = keras.layers.Dense(hidden_size, activation="relu", kernel_initializer=glorot())
        self.heads = keras.layers.Dense(length * self.max_vocab, kernel_initializer=glorot())
        self.reshape = keras.layers.Reshape((length, self.max_vocab))
        valid = np.arange(self.max_vocab)[None, :] < np.asarray(self.vocab_sizes)[:, None]
        self.logit_mask = np.where(valid, 0.0, -1e9).astype(np.float32)

    def encode(self, tokens: Any) -> Any:
        """E: tokens (n, length) -> L2-normalized embedding (n, hidden_size)."""
        x = self.flatten(self.embedding(tokens + self.offsets))
        return keras.ops.normalize(self.encoder(x), axis=-1)

    def predict_score(self, e: Any, training: bool = False) -> Any:
        """f: embedding -> performance in (0, 1), shape (n,)."""
        for layer in self.mlp:
            e = layer(e, training=training)
        return keras.ops.squeeze(self.regressor(self.mlp_dropout(e, training=training)), -1)

    def decode_log_probs(self, e: Any) -> Any:
        """D: embedding -> per-token log-probabilities (n, length, max vocabulary)."""
        logits = self.reshape(self.heads(self.decoder(e))) + self.logit_mask
        return keras.ops.log_softmax(logits, axis=-1)

    def call(self, tokens: Any, training: bool = False) -> tuple[Any, Any]:
        e = self.encode(tokens)
        return self.predict_score(e, training), self.decode_log_probs(e)


def fit_nao(
    codec: TokenCodec,
    archs: Sequence[Hashable],
    scores: Sequence[float],
    *,
    trade_off: float = 0.8,
    epochs: int = 1000,
    batch_size: int = 100,
    learning_rate: float = 1e-3,
    grad_bound: float = 5.0,
    seed: int = 0,
    **network: Any,
) -> tuple[EncoderPredictorDecoder, dict[str, float]]:
    """Trains an encoder-predictor-decoder on (architecture, score) pairs (NAO §3.4).

    Loss = trade_off · MSE(f(E(x)), s) + (1 − trade_off) · CE(D(E(x)), x), with
    scores min-max scaled to [0, 1]; Adam, gradients clipped to a global
    norm of `grad_bound` (the authors' code: λ = 0.8, 1000 epochs of batches
    of 100, learning rate 0.001, bound 5).

    Returns:
        The trained network and its fit on the training pairs:
        {"loss", "reconstruction_accuracy" (share of architectures decoded
        exactly), "kendall_tau" (predictions against scores)}.
    """
    tokens = codec.encode(archs)
    raw = np.asarray(scores, np.float64)
    spread = raw.max() - raw.min()
    targets = ((raw - raw.min()) / spread if spread > 0 else np.full_like(raw, 0.5)).astype(np.float32)
    model = EncoderPredictorDecoder(codec.vocab_sizes, seed=seed, **network)
    model(tokens[:1])
    optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=grad_bound)
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(seed)
    n = len(tokens)
    # One traced call per epoch (a Python loop over steps costs more than the steps).
    epoch = tf.function(_train_epoch)
    data = (tf.constant(tokens), tf.constant(targets))
    settings = (tf.constant(min(batch_size, n)), tf.constant(trade_off, tf.float32))
    loss = 0.0
    for _ in range(epochs):
        loss = epoch(model, optimizer, *data, tf.constant(rng.permutation(n).astype(np.int32)), *settings)
    predicted, log_probs = model(tokens, training=False)
    decoded = np.argmax(np.asarray(log_probs), axis=-1)
    tau = stats.kendalltau(np.asarray(predicted), raw).statistic if n > 1 and spread > 0 else float("nan")
    return model, {
        "loss": float(loss),
        "reconstruction_accuracy": float(np.mean(np.all(decoded == tokens, axis=1))),
        "kendall_tau": float(tau),
    }


def _train_epoch(model, optimizer, tokens, targets, order, batch_size, trade_off):
    """One pass over the pairs in `order`, batch by batch; returns the last batch's loss."""
    loss = tf.constant(0.0)
    n = tf.shape(order)[0]
    for start in tf.range(0, n, batch_size):
        idx = order[start:start + batch_size]
        x, y = tf.gather(tokens, idx), tf.gather(targets, idx)
        with tf.GradientTape() as tape:
            predicted, log_probs = model(x, training=True)
            mse = tf.reduce_mean(tf.square(predicted - y))
            ce = -tf.reduce_mean(tf.gather(log_probs, x, axis=2, batch_dims=2))  # true token's log-prob
            loss = trade_off * mse + (1.0 - trade_off) * ce
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


def predictor_gradient(model: EncoderPredictorDecoder, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings e_x of `tokens` and ∂f/∂e at them (NAO §3.3)."""
    e = tf.convert_to_tensor(model.encode(tf.constant(tokens)))
    with tf.GradientTape() as tape:
        tape.watch(e)
        f = tf.reduce_sum(model.predict_score(e, training=False))
    return e.numpy(), tape.gradient(f, e).numpy()


# ------------------------------------------------------------------ algorithm
class NAO(SearchAlgorithm):
    """NAO's search (Luo et al. 2018, §3) as ask/tell, generation by generation.

    Generation 0 is `initial_size` architectures drawn uniformly under the
    constraints (NAO's random seed pool); each later generation is `new_size`
    new architectures from the gradient steps of the `top_k` best told so far
    (the latest score of an architecture told twice: NAO-V2 §4.3 re-evaluates
    its pool). The network is not part of the state: each generation trains
    its own, seeded from (seed, generation).

    Args:
        space: the search space.
        num_architectures: distinct architectures to propose in all.
        constraints: bounds every proposal meets.
        seed: seeds the draws and the network.
        initial_size: the random initial pool (1000 in NAO-V2's code).
        new_size: new architectures per generation (300 in NAO-V2's code).
        top_k: architectures whose embeddings move (100 in NAO's code).
        trade_off: λ of the loss (0.8 in NAO's code).
        epochs, batch_size, learning_rate, grad_bound: training of the
            encoder-predictor-decoder (1000, 100, 0.001, 5 in NAO's code).
        step_size: the increment of η (1 in NAO's code).
        max_steps: the largest η is max_steps * step_size (50 in NAO's code).
        embedding_size, hidden_size, mlp_layers, mlp_hidden_size, mlp_dropout:
            the network (`EncoderPredictorDecoder`).

    Raises:
        UserError: a space NAO cannot search, or a budget that leaves NAO no
            proposal of its own.
        ValueError: a setting out of range.
    """

    name = "nao"

    def __init__(
        self,
        space: SearchSpace,
        num_architectures: int,
        constraints: Constraints | None = None,
        seed: int = 0,
        initial_size: int = 1000,
        new_size: int = 300,
        top_k: int = 100,
        trade_off: float = 0.8,
        epochs: int = 1000,
        batch_size: int = 100,
        learning_rate: float = 1e-3,
        grad_bound: float = 5.0,
        step_size: float = 1.0,
        max_steps: int = 50,
        embedding_size: int = 32,
        hidden_size: int = 64,
        mlp_layers: int = 0,
        mlp_hidden_size: int = 200,
        mlp_dropout: float = 0.1,
    ):
        check_options(
            (num_architectures >= 1, "num_architectures", num_architectures, ">= 1"),
            (initial_size >= 2, "initial_size", initial_size, ">= 2"),
            (new_size >= 1, "new_size", new_size, ">= 1"),
            (top_k >= 1, "top_k", top_k, ">= 1"),
            (0.0 <= trade_off <= 1.0, "trade_off", trade_off, "in [0, 1]"),
            (epochs >= 1, "epochs", epochs, ">= 1"),
            (batch_size >= 1, "batch_size", batch_size, ">= 1"),
            (step_size > 0, "step_size", step_size, "> 0"),
            (max_steps >= 1, "max_steps", max_steps, ">= 1"),
            (0.0 <= mlp_dropout < 1.0, "mlp_dropout", mlp_dropout, "in [0, 1)"),
        )
        self.codec = TokenCodec(space)
        if space.size() < num_architectures:
            raise UserError(
                f"--algorithm=nao cannot propose {num_architectures} distinct architectures: the space holds "
                f"only {space.size()}; lower --num_architectures."
            )
        if num_architectures <= initial_size:
            raise UserError(
                f"--algorithm=nao with {num_architectures} architectures in all proposes none of its own: its "
                f"initial pool alone is {initial_size} random architectures (--population_size); raise "
                "--num_architectures above it or lower --population_size."
            )
        super().__init__(space, num_architectures, constraints, seed)
        self.initial_size, self.new_size, self.top_k = int(initial_size), int(new_size), int(top_k)
        self.step_size, self.max_steps = float(step_size), int(max_steps)
        self.training = {"trade_off": float(trade_off), "epochs": int(epochs), "batch_size": int(batch_size),
                         "learning_rate": float(learning_rate), "grad_bound": float(grad_bound)}
        self.network = {"embedding_size": int(embedding_size), "hidden_size": int(hidden_size),
                        "mlp_layers": int(mlp_layers), "mlp_hidden_size": int(mlp_hidden_size),
                        "mlp_dropout": float(mlp_dropout)}
        # Each network's fit and how many proposals its decoder gave, by generation
        # (reports and tests; not part of the state).
        self.history: list[dict[str, float]] = []

    def generation_size(self, generation: int) -> int:
        return self.initial_size if generation == 0 else self.new_size

    def propose(self) -> list[Hashable]:
        """Generation 0: random under the constraints; later ones: NAO §3.3 on every score told so far."""
        size = min(self.generation_size(self.generation), self.num_architectures - self.proposed)
        told = self.best(None)
        if self.generation == 0 or len(told) < 2:
            return [self.draw() for _ in range(size)]
        return self._propose(told, size)

    def _propose(self, told: list[tuple[Hashable, float]], size: int) -> list[Hashable]:
        """NAO §3.3: train E, f, D on the told scores; move the top-k embeddings up f's gradient."""
        archs, scores = zip(*told)
        net_seed = int(np.random.SeedSequence([self.seed, self.generation]).generate_state(1)[0] % 2**31)
        model, fit = fit_nao(self.codec, archs, scores, seed=net_seed, **self.training, **self.network)
        top = list(archs[: self.top_k])
        e, grad = predictor_gradient(model, self.codec.encode(top))
        out: list[Hashable] = []
        rejected: set[Hashable] = set()
        for k in range(1, self.max_steps + 1):
            moved = e + (k * self.step_size) * grad
            for arch in self.codec.decode(np.asarray(model.decode_log_probs(moved))):
                if len(out) == size:
                    break
                if arch is None or not self.is_new(arch):
                    continue
                if not self.take(arch):
                    rejected.add(arch)  # never proposed: it breaks the constraints
                    continue
                out.append(arch)
            if len(out) == size:
                break
        self.history.append({"generation": self.generation, **fit, "decoded": len(out),
                             "constraint_rejections": len(rejected)})
        while len(out) < size:
            out.append(self._fill(top))
        return out

    def _fill(self, parents: list[Hashable]) -> Hashable:
        """A new architecture when the decoder gives no more: a mutant of the top-k, else a draw."""
        self.fresh_fills += 1
        for _ in range(FILL_ATTEMPTS):
            parent = parents[int(self.rng.integers(len(parents)))]
            child = self.space.mutate(parent, self.rng, float(self.rng.uniform(0.05, 0.3)))
            if self.take(child):
                return child
        return self.draw()
