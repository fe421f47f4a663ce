"""Generated test and demo data, with a planted signal whose truth is known.

- ``slides``: synthetic H&E-like pyramidal TIFF slides with planted tumour regions and their masks
  (``python -m acmil.synthetic.slides``), for the preprocessing, the service's slide jobs and the demo;
- ``features``: cohorts of format-1 feature files with a planted instance-level signal, for training,
  evaluation and the service without slides.

Nothing is imported here (``slides`` needs OpenCV and tifffile, ``features`` h5py): import the module you need.
Both import only the core's leaf modules (``acmil.geometry``, ``acmil.features``, ``acmil.atomic``), never
training or preprocessing code.
"""
