"""How networks are trained: the one-shot model, its children, and what a run needs around them.

Infrastructure: `config` (the typed run configuration), `data` (TFDS and the
embedded digits), `distribute` (the strategy factory), `preemption`
(SIGTERM), `strategy_loop` (the one module calling `strategy.run`), `tasks`
(single-replica steps), `optimizers` (SGD, its schedules), `samplers` (which
paths each ghost batch trains) and `model_dir` (a run's directory). Jobs:
`trainer` (the one-shot model), and on `child` (one child trained at a time,
stand-alone or masked): `retrain` (chosen children from scratch),
`groundtruth` (every child of a small space), `finetune` (children from the
shared weights).
"""
