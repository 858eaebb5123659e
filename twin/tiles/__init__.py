"""twin.tiles: glTF 2.0 / GLB writing, 3D Tiles 1.1 tilesets, validation, previews."""

from twin.tiles.cityjson import validate_cityjson, write_cityjson
from twin.tiles.gltf import GltfMesh, read_glb, write_glb
from twin.tiles.implicit import read_implicit, write_implicit
from twin.tiles.preview import render_preview
from twin.tiles.tileset import TileContent, write_tileset
from twin.tiles.validate import validate_glb, validate_tileset

__all__ = [
    "GltfMesh",
    "TileContent",
    "read_glb",
    "read_implicit",
    "render_preview",
    "validate_cityjson",
    "validate_glb",
    "validate_tileset",
    "write_cityjson",
    "write_glb",
    "write_implicit",
    "write_tileset",
]
