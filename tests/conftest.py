"""Fixtures shared across test modules: a tiny trained one-shot model_dir (trained once per session per worker) for the search, CLI, tuner, NAO and latency tests."""

import pytest

from tf_oneshot.training import distribute, trainer
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.model_dir import ModelDir

# Every test process runs the graph optimizer as the commands do (--graph_optimizer=auto: on),
# whichever test happens to call get_strategy first.
distribute.set_graph_optimizer("auto")

# F=4, 2 cells, 2 stacks on the embedded 8x8 digits: seconds to train and trace.
TINY = TrainConfig(
    dataset="digits", filters=4, num_cells=2, num_stacks=2, batch_size=32, ghost_batch_size=16,
    train_steps=2, checkpoint_every=2, log_every=2, eval_batches=1,
)


@pytest.fixture(scope="session")
def oneshot_model_dir(tmp_path_factory):
    # A fixed path: every module that asks shares one training per session (per xdist worker).
    path = str(tmp_path_factory.getbasetemp() / "search_oneshot_model")
    model_dir = ModelDir.read(path)
    if model_dir is None or model_dir.latest_checkpoint() is None:
        trainer.train(TINY, path, log=lambda s: None)
    return path
