"""The 64-child space of "Deeper insights into weight sharing in NAS" (§3.1, App. A.1).

Importing this package loads only the TensorFlow-free space; the networks
(`network`, with `model`, `standalone`) load when first built, by name
(`SearchSpace.network`).
"""

from tf_oneshot.search_spaces.darts64.space import EDGE_KEYS, EDGES, OP_NAMES, OPS, Darts64Space

__all__ = ["EDGES", "EDGE_KEYS", "OPS", "OP_NAMES", "Darts64Space"]
