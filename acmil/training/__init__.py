"""Training on feature files: Lightning module (``module``), data module (``data``), input checks
(``cohort``), splits, metrics, and the ``train`` / ``test`` / ``cv`` / ``predict`` commands.

Nothing is imported here, so ``acmil.training.synthetic_features`` and ``acmil.training.splits`` stay
light; import the modules you need.
"""
