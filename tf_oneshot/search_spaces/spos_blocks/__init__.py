"""The ShuffleNetV2 spaces of Single Path One-Shot (SPOS, Guo et al. 2019): building blocks
(§3.2, Table 2), channel numbers (§3.3, Table 4) and both jointly.

Importing this package loads only the TensorFlow-free spaces; the networks
(`network`, with `model`, `standalone`) load when first built, by name
(`SearchSpace.network`). Few names are exported because the
isolation test forbids them anywhere else in the package; spaces built on
these blocks import `space.BlockLayout`, `space.CHOICES` ... from the module.
"""

from tf_oneshot.search_spaces.spos_blocks.channels import SposBlocksChannelsSpace, SposChannelsSpace
from tf_oneshot.search_spaces.spos_blocks.space import OP_NAMES, SposBlocksSpace

__all__ = ["OP_NAMES", "SposBlocksChannelsSpace", "SposBlocksSpace", "SposChannelsSpace"]
