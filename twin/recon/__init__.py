"""twin.recon: oblique photos to georeferenced cameras and a dense coloured point cloud.

* :mod:`twin.recon.images`: ingest (EXIF/XMP GPS, focal length, gimbal angles; unusable
  images reported with reasons).
* :mod:`twin.recon.sfm`: pycolmap SIFT, GPS/view-direction pair selection, incremental
  mapping with a global-mapper fallback, robust georeferencing to GPS (and GCPs).
* :mod:`twin.recon.mvs`: our Numba dense matcher (multi-normal plane sweep, PatchMatch).
* :mod:`twin.recon.fuse`: geometric-consistency fusion to LAS/LAZ in the survey CRS.
* :mod:`twin.recon.evaluate`: ETH3D-style accuracy/completeness/F1 against a truth mesh.
* :func:`twin.recon.run.reconstruct`: all of it, resumable (``twin recon``).
"""
