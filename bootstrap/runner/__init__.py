"""Running a recipe: the setup steps in order, then the training, supervised.

Named ``runner`` rather than ``run`` so that the package never shadows the public
``bootstrap.run`` function.
"""
