"""twin: digital-twin city models from survey data, kept light enough to stream,
with the live state of the city drawn onto them.

Stages (one sub-package each, data flowing one way): :mod:`twin.points`,
:mod:`twin.recon`, :mod:`twin.terrain`, :mod:`twin.mesh`, :mod:`twin.texture`,
:mod:`twin.tiles`, :mod:`twin.sync`; :mod:`twin.synth` makes synthetic surveys with
exact ground truth; :mod:`twin.crs` holds coordinate frames.
"""

from importlib.metadata import PackageNotFoundError, version

from twin.errors import CRSError, InputError, OutputError, ParameterError, TwinError

try:
    __version__ = version("twin")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "CRSError",
    "InputError",
    "OutputError",
    "ParameterError",
    "TwinError",
    "__version__",
]
