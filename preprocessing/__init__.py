"""Slides -> tissue -> tiles at an exact resolution -> timm features in format-1 files (``acmil preprocess``).

Modules: ``slide`` (slide objects, MPP), ``tissue`` (segmentation), ``tiling`` (grids), ``encoders`` (timm),
``dataset`` (tile reading workers), ``extract`` (per-slide plan + batch driver), ``qc``, ``manifest``,
``discover``, ``parallel`` (several devices), ``cli``, ``convert`` (foreign feature files). Synthetic slides
are test and demo data: ``acmil.synthetic.slides``.
Heavy modules are not imported here, so ``import acmil.preprocessing`` stays cheap.
"""
