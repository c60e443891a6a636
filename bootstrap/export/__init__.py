"""Run a recipe somewhere else: a task file for a cloud or cluster scheduler (``--export``).

``portable`` says whether a recipe can run on a machine that is not this one; each exporter
(``skypilot``) turns the recipe and the person's choices into that scheduler's task, as plain
data. None of them imports the scheduler itself: it is not a dependency of the tool.
"""
