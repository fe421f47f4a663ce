"""ACMIL whole-slide image classification: features, training, analyses and serving.

Heavy libraries (Lightning, timm, FastAPI) are imported by the modules that need them, not here.
"""

__version__ = "0.2.0"
