"""The checkpoint mirror: scratch -> persist while the training runs, and back on a new VM.

``thread`` runs the passes in the background, ``sync`` is one pass, ``restore`` reads the
mirror back, ``files`` knows what a checkpoint file is, ``faults`` plays a failing Drive.
"""
