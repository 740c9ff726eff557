"""The building-block space of Single Path One-Shot (SPOS, Guo et al. 2019, §3.2, Table 2).

Importing this package loads only the TensorFlow-free space; the models
(`model`, `standalone`) load when built.
"""

from tf_oneshot.search_spaces.spos_blocks.space import CHOICES, OP_NAMES, BlockLayout, SposBlocksSpace

__all__ = ["CHOICES", "OP_NAMES", "BlockLayout", "SposBlocksSpace"]
