"""Mixed-precision quantization search on ResNet-18/34 (SPOS, Guo et al. 2019, §3.3, §4, Table 6).

Importing this package loads only the TensorFlow-free spaces; the networks
(`network`, with `model`, `standalone`) load when first built, by name
(`SearchSpace.network`). Few names are exported because the
isolation test forbids them anywhere else in the package.
"""

from tf_oneshot.search_spaces.spos_quant.space import (
    BIT_PAIRS,
    SposQuantResNet18Space,
    SposQuantResNet34Space,
    SposQuantSpace,
)

__all__ = ["BIT_PAIRS", "SposQuantResNet18Space", "SposQuantResNet34Space", "SposQuantSpace"]
