"""twin.synth: synthetic city surveys with exact ground truth (the project's oracle).

:func:`generate` writes a complete survey (DEM, footprints, truth mesh, LiDAR, oblique
photos with cameras, entity events); see :mod:`twin.synth.survey`. This package
imports only :mod:`twin.crs` (and small shared helpers) and third-party libraries,
never the stages it is used to check.
"""

from twin.synth.params import PRESETS, SurveySpec
from twin.synth.survey import generate, read_survey

__all__ = ["PRESETS", "SurveySpec", "generate", "read_survey"]
