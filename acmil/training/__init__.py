"""Training on feature files: Lightning module (``module``), data module (``data``), input checks
(``cohort``), splits, metrics, and the ``train`` / ``test`` / ``cv`` / ``predict`` commands.

Nothing is imported here, so ``acmil.training.splits`` stays light; import the modules you need.
"""
