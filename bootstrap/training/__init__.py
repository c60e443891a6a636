"""The training side: what the training process imports, and the only place that imports torch.

``Checkpointer`` (``checkpoint``), loop mode (``loop``) and the entry point of ``run.callable``
(``python -m bootstrap.training.child``). The parent process orchestrates and never imports
``checkpoint`` or ``loop``: torch costs seconds to import.
"""
