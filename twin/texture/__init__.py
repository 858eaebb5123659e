"""twin.texture: paint meshes with georeferenced photos.

Per-face view selection (visibility by depth buffer, gradient-magnitude data term,
Potts MRF solved by alpha expansion), global and local seam levelling, a packed
texture atlas with bleeding margins, baking in Numba, and textured GLB / OBJ+MTL
output with the georeference alongside.
"""

from twin.texture.mapping import TexturedMesh, TextureParams, texture_files, texture_mesh
from twin.texture.render import psnr, render_textured, seam_jumps, ssim
from twin.texture.views import View, read_views

__all__ = [
    "TextureParams",
    "TexturedMesh",
    "View",
    "psnr",
    "read_views",
    "render_textured",
    "seam_jumps",
    "ssim",
    "texture_files",
    "texture_mesh",
]
