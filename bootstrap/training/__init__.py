"""The training side: what the training process imports, and the only place that imports torch.

``Checkpointer`` (``checkpoint``), loop mode (``loop``) and the entry point of ``run.callable``
(``python -m bootstrap.training.child``). Behind the Checkpointer, one job each: ``rng_state``,
``weights_only`` (what restore can load), ``staging`` (async-save buffers), ``serialization``
(the file's bytes), ``diskwrite`` (to the disk). The parent process orchestrates and never
imports ``checkpoint`` or ``loop``: torch costs seconds to import.
"""
