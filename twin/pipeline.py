"""``twin build``: run the stages on a survey, with lineage and incremental rebuilds.

Stages (each a function of its inputs and parameters only)::

    terrain     dem.tif                     -> terrain mesh (local ENU)
    buildings   footprints.gpkg + dem.tif   -> LoD1/LoD2 building solids (local ENU)
    export      meshes                      -> model.glb, tiles/ (3D Tiles 1.1), preview.png

A stage's key is the SHA-256 of its input files' hashes, its parameters and the twin
version; its arrays are cached in ``OUT/.cache`` and reused when the key has not
changed. ``manifest.json`` records every input (path, SHA-256, CRS), every parameter,
the library versions, every stage (built or reused, seconds) and every output with
its SHA-256: each product can be traced to its sources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from twin import __version__
from twin.crs import LocalFrame, crs_label
from twin.errors import InputError, OutputError, ParameterError
from twin.fileio import atomic_path, sha256_file, write_json
from twin.progress import Progress, ensure

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildParams:
    lod: int = 2  # building level of detail (1: flat roofs, 2: roof types)
    terrain_max_error: float = 0.25  # TIN vertical error bound (m); 0 = regular grid
    terrain_step: int = 2  # grid step in DEM pixels (when terrain_max_error == 0)
    default_height: float = 10.0  # building height where the footprints have none (m)
    tile_max_faces: int = 8000  # faces per 3D Tiles content (quadtree LOD)
    # "footprints": solids from footprint attributes (height, roof type);
    # "lidar": LoD2 roofs fitted to the LiDAR's building points inside each footprint
    buildings_from: str = "footprints"
    seat_buildings: bool = True  # footprint rings in the terrain TIN, flat at each base
    texture: bool = False  # paint model.glb with the survey's photos (textured/)
    tile_implicit: bool = False  # 3D Tiles 1.1 implicit quadtrees (subtrees) for big cities
    tile_compression: str = "meshopt"  # tile GLBs: "meshopt" | "draco" | "none"

    def to_dict(self) -> dict:
        return asdict(self)


def library_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "twin": __version__}
    for name in (
        "numpy",
        "numba",
        "pyproj",
        "rasterio",
        "geopandas",
        "shapely",
        "trimesh",
        "open3d",
        "laspy",
        "lazrs",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    try:
        import pyproj
        import rasterio

        out["PROJ"] = pyproj.proj_version_str
        out["GDAL"] = rasterio.__gdal_version__
    except ImportError:  # pragma: no cover
        pass
    return out


class _Cache:
    """Per-stage array cache in ``OUT/.cache``, keyed by a hash of inputs + parameters."""

    def __init__(self, root: Path, force: bool) -> None:
        self.root = root / ".cache"
        self.force = force

    @staticmethod
    def key(stage: str, inputs: dict, params: dict) -> str:
        blob = json.dumps(
            {"stage": stage, "inputs": inputs, "params": params, "twin": __version__},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def load(self, stage: str, key: str) -> dict | None:
        p = self.root / f"{stage}.npz"
        k = self.root / f"{stage}.key"
        if self.force or not p.exists() or not k.exists() or k.read_text() != key:
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {name: z[name] for name in z.files}
        except (OSError, ValueError):
            return None

    def save(self, stage: str, key: str, arrays: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.root / f"{stage}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        (self.root / f"{stage}.key").write_text(key)


def _resolve_inputs(survey, dem, footprints) -> tuple[Path, Path | None]:
    survey = Path(survey)
    base = survey if survey.is_dir() else survey.parent
    dem_path = Path(dem) if dem else base / "dem.tif"
    if not dem_path.exists():
        raise InputError("no DEM found (give --dem)", path=dem_path)
    if not dem_path.is_file():
        raise InputError("the DEM is not a file", path=dem_path)
    fp_path = Path(footprints) if footprints else base / "footprints.gpkg"
    if not fp_path.exists():
        if footprints:
            raise InputError("footprint file not found", path=fp_path)
        fp_path = None
    elif not fp_path.is_file():
        raise InputError("the footprints are not a file", path=fp_path)
    return dem_path, fp_path


def _frame_for(dem) -> LocalFrame:
    """The local ENU frame of a build: anchored at the DEM's centre, on the ellipsoid."""
    h, w = dem.heights.shape
    t = dem.transform
    cx = t.c + t.a * w / 2.0 + t.b * h / 2.0
    cy = t.f + t.d * w / 2.0 + t.e * h / 2.0
    return LocalFrame.at(cx, cy, 0.0, dem.crs)


_GROUND_RGB = np.array([[0.45, 0.55, 0.35], [0.62, 0.58, 0.45]])  # low green -> high tan
_WALL_RGB = np.array([0.86, 0.84, 0.80])
_ROOF_RGB = {"flat": (0.55, 0.55, 0.58), "gable": (0.66, 0.30, 0.22), "hip": (0.50, 0.28, 0.25)}


def _terrain_colors(z: np.ndarray) -> np.ndarray:
    t = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
    return (_GROUND_RGB[0] + t[:, None] * (_GROUND_RGB[1] - _GROUND_RGB[0])).astype(np.float32)


def build(
    survey: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dem: str | os.PathLike | None = None,
    footprints: str | os.PathLike | None = None,
    lidar: str | os.PathLike | None = None,
    params: BuildParams | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Build a georeferenced model from a survey folder (or explicit ``dem``/``footprints``).

    Writes ``model.glb``, ``tiles/tileset.json`` (+ GLB contents), ``preview.png`` and
    ``manifest.json`` into ``out_dir``; returns the manifest. Memory grows with the
    DEM size (divided by ``terrain_step²``) and the number of footprint vertices.
    """
    params = params or BuildParams()
    from twin.tiles.gltf import COMPRESSIONS

    if params.tile_compression not in COMPRESSIONS:
        raise ParameterError(
            f"tile_compression must be one of {COMPRESSIONS}, got {params.tile_compression!r}"
        )
    if params.buildings_from not in ("footprints", "lidar"):
        raise ParameterError(
            f"buildings_from must be 'footprints' or 'lidar', got {params.buildings_from!r}"
        )
    dem_path, fp_path = _resolve_inputs(survey, dem, footprints)
    lidar_path = None
    if params.buildings_from == "lidar":
        base = Path(survey) if Path(survey).is_dir() else Path(survey).parent
        lidar_path = Path(lidar) if lidar else base / "lidar.laz"
        if not lidar_path.is_file():
            raise InputError(
                "no LiDAR file for buildings from points (give --lidar)", path=lidar_path
            )

    from twin.mesh.buildings import building_meshes, merge_meshes
    from twin.mesh.footprints import read_footprints
    from twin.terrain.dem import read_dem

    progress = ensure(progress)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError("the output exists and is not a folder", path=out)
    out.mkdir(parents=True, exist_ok=True)
    # The manifest is written last: while a build runs (or after it failed) there is
    # none, so a half-updated folder never looks complete.
    (out / MANIFEST).unlink(missing_ok=True)
    cache = _Cache(out, force)
    t_start = time.perf_counter()
    stages: dict[str, dict] = {}

    inputs = [
        {
            "role": "dem",
            "path": str(dem_path),
            "sha256": sha256_file(dem_path),
            "bytes": dem_path.stat().st_size,
        }
    ]
    if fp_path is not None:
        inputs.append(
            {
                "role": "footprints",
                "path": str(fp_path),
                "sha256": sha256_file(fp_path),
                "bytes": fp_path.stat().st_size,
            }
        )
    if lidar_path is not None:
        inputs.append(
            {
                "role": "lidar",
                "path": str(lidar_path),
                "sha256": sha256_file(lidar_path),
                "bytes": lidar_path.stat().st_size,
            }
        )
    hashes = {i["role"]: i["sha256"] for i in inputs}

    dem_obj = read_dem(dem_path)
    frame = _frame_for(dem_obj)
    inputs[0]["crs"] = crs_label(dem_obj.crs)

    fp = read_footprints(fp_path) if fp_path is not None else None
    seat = fp is not None and params.seat_buildings and params.terrain_max_error > 0

    # --- terrain (buildings seated: footprint rings are TIN edges, flat at the base)
    tparams = {"terrain_max_error": params.terrain_max_error}
    tkeys = {"dem": hashes["dem"]}
    if params.terrain_max_error <= 0:
        tparams["terrain_step"] = params.terrain_step
    if seat:
        tparams["seat_buildings"] = True
        tkeys["footprints"] = hashes["footprints"]
    key = cache.key("terrain", tkeys, tparams)
    t0 = time.perf_counter()
    with progress.step("terrain mesh"):
        arrays = cache.load("terrain", key)
        status = "reused"
        if arrays is None:
            arrays = _terrain_mesh(dem_obj, frame, params, fp if seat else None)
            cache.save("terrain", key, arrays)
            status = "built"
    if seat:  # the buildings stand on the bases the terrain was flattened to
        fp = fp.copy()
        fp["base_height"] = arrays["base_heights"]
    stages["terrain"] = {
        "status": status,
        "key": key,
        "seconds": time.perf_counter() - t0,
        "triangles": int(len(arrays["faces"])),
        "max_error_reached": float(arrays["max_error_reached"]),
        "dem_samples": int(dem_obj.valid.sum()),
    }
    terrain_v, terrain_f = arrays["vertices"], arrays["faces"]

    # --- buildings
    bld = None
    building_attrs: list[dict] = []
    if fp is not None:
        inputs[1]["crs"] = crs_label(fp.crs)
        inputs[1]["features"] = int(len(fp))
        bparams = {"lod": params.lod, "default_height": params.default_height}
        bkeys = {"dem": hashes["dem"], "footprints": hashes["footprints"]}
        if seat:
            bparams["bases"] = "seated terrain"
        if lidar_path is not None:
            bparams["buildings_from"] = "lidar"
            bkeys["lidar"] = hashes["lidar"]
        key = cache.key("buildings", bkeys, bparams)
        t0 = time.perf_counter()
        with progress.step(f"LoD{params.lod} buildings ({len(fp)} footprints)"):
            arrays = cache.load("buildings", key)
            status = "reused"
            if arrays is None:
                if lidar_path is not None:
                    from twin.mesh.roofs import buildings_from_points

                    res = buildings_from_points(lidar_path, fp, dem_obj, frame)
                    meshes = res.buildings
                    for bid, why in res.skipped:
                        log.warning("building %s skipped: %s", bid, why)
                else:
                    meshes = building_meshes(
                        fp, dem_obj, frame, lod=params.lod, default_height=params.default_height
                    )
                merged = merge_meshes(meshes)
                attrs = json.dumps([m.attributes for m in meshes], default=str)
                arrays = {
                    "vertices": merged.vertices,
                    "faces": merged.faces,
                    "face_kind": merged.face_kind,
                    "feature_id": merged.feature_id,
                    "attributes": np.frombuffer(attrs.encode(), dtype=np.uint8),
                }
                cache.save("buildings", key, arrays)
                status = "built"
        bld = arrays
        building_attrs = json.loads(bytes(arrays["attributes"]).decode())
        stages["buildings"] = {
            "status": status,
            "key": key,
            "seconds": time.perf_counter() - t0,
            "buildings": len(building_attrs),
            "triangles": int(len(arrays["faces"])),
        }

    # --- export (always rewritten: cheap, and the outputs are what the manifest hashes)
    t0 = time.perf_counter()
    with progress.step("GLB, 3D Tiles and preview"):
        outputs, tiles = _export(out, frame, terrain_v, terrain_f, bld, building_attrs, params)
        if bld is not None and len(bld["faces"]):
            outputs.append(_cityjson(out, frame, bld, building_attrs, dem_obj.crs))
    if params.texture:
        t1 = time.perf_counter()
        outputs.append(_texture(out, Path(survey), progress))
        stages["texture"] = {"status": "built", "seconds": time.perf_counter() - t1}
        with progress.step("textured 3D Tiles"):
            contents, tiles["textured"] = _textured_tiles(out, frame, params, bld, building_attrs)
        outputs = [o for o in outputs if o != out / "tiles" / "tileset.json"]
        outputs += [*contents, out / "tiles" / "tileset.json"]
    t1 = time.perf_counter()
    with progress.step("quantized-mesh terrain"):
        outputs.append(_terrain_tiles(out, dem_obj, params))
    stages["terrain_tiles"] = {"status": "built", "seconds": time.perf_counter() - t1}
    stages["export"] = {
        "status": "built",
        "seconds": time.perf_counter() - t0,
        "tiles": {
            name: {
                "count": s["tiles"],
                "levels": s["levels"],
                "root_error": s["root_error"],
                "geometric_error_by_level": s["geometric_error_by_level"],
                "bytes": s["bytes"],
                "kept": len(s["kept"]),
                "changed": sorted(s["written"] + s["removed"]),
            }
            for name, s in tiles.items()
        },
    }

    manifest = {
        "twin": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "twin build",
        "inputs": inputs,
        "frame": frame.to_dict(),
        "crs": {
            "source": crs_label(dem_obj.crs),
            "output": "EPSG:4978 (ECEF) via the root "
            "transform; content in local ENU metres, glTF y-up",
        },
        "heights": "ellipsoidal unless the source CRS says otherwise",
        "parameters": params.to_dict(),
        "libraries": library_versions(),
        "stages": stages,
        "counts": {
            "terrain_triangles": int(len(terrain_f)),
            "building_triangles": int(len(bld["faces"])) if bld is not None else 0,
            "buildings_modelled": len(building_attrs),
        },
        "outputs": [
            {"path": str(p.relative_to(out)), "sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in outputs
        ],
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _terrain_mesh(dem, frame: LocalFrame, params: BuildParams, footprints=None) -> dict:
    """The terrain surface in ENU: an error-bounded TIN of the DEM (every valid DEM
    sample within ``terrain_max_error`` of it), or a regular grid when that is 0.

    With ``footprints``, buildings are seated: each footprint's base is its
    ``base_height`` attribute where given, else the lowest terrain under it; its
    rings are TIN edges and the terrain inside is flat at the base, so walls meet the
    ground with no gap and no house floats (the bound then holds outside the
    footprints). ``base_heights`` (metres, one per footprint) come back too."""
    from twin.crs import unit_factors
    from twin.terrain.gridmesh import dem_to_mesh
    from twin.terrain.tin import tin

    if params.terrain_max_error <= 0:
        v, f = dem_to_mesh(dem, frame, step=params.terrain_step)
        return {"vertices": v, "faces": f, "max_error_reached": np.float64(np.nan)}
    # the bound is in metres; the DEM's heights are in its CRS's vertical unit
    z_unit = unit_factors(dem.crs)[1]
    tile = 129 if dem.heights.size > 1_000_000 else None
    if footprints is None:
        v, f, reached = tin(
            dem.heights,
            params.terrain_max_error / z_unit,
            transform=dem.transform,
            mask=dem.valid,
            tile_size=tile,
        )
        extra = {}
    else:
        from twin.terrain.seating import footprint_base_heights, seated_tin

        fpd = footprints.to_crs(dem.crs)
        base = np.full(len(fpd), np.nan)
        if "base_height" in fpd.columns:
            base = fpd["base_height"].to_numpy(float) / z_unit
        miss = ~np.isfinite(base)
        if miss.any():
            base[miss] = footprint_base_heights(fpd[miss], dem, stat="min")
        v, f, reached, base = seated_tin(
            dem, fpd, params.terrain_max_error / z_unit, mask=dem.valid,
            base_heights=base, tile_size=tile,
        )  # fmt: skip
        extra = {"base_heights": np.asarray(base, np.float64) * z_unit}
    enu = frame.from_crs(v, dem.crs)
    return {"vertices": enu, "faces": f, "max_error_reached": np.float64(reached * z_unit), **extra}


def _texture(out: Path, survey: Path, progress) -> Path:
    """``OUT/textured``: model.glb painted with the survey's photos (view selection,
    seam levelling, atlas) as GLB and OBJ+MTL with ``georef.json``."""
    from twin.texture import texture_files

    base = survey if survey.is_dir() else survey.parent
    images, cameras = base / "images", base / "cameras.json"
    if not images.is_dir() or not cameras.is_file():
        raise InputError("texturing needs the survey's images/ and cameras.json", path=base)
    texture_files(out / "model.glb", images, cameras, out / "textured", overwrite=True,
                  progress=progress)  # fmt: skip
    return out / "textured" / "model.glb"


def _terrain_tiles(out: Path, dem, params: BuildParams) -> Path:
    """``OUT/terrain``: the DEM as quantized-mesh-1.0 tiles (what CesiumJS streams as
    its globe; ``twin view`` shows the buildings tileset on it)."""
    from twin.terrain.tiling import write_terrain_tiles

    # outside the DEM the globe continues at the DEM's lowest height, not at 0 (a cliff)
    fill = float(np.nanmin(np.where(dem.valid, dem.heights, np.nan)))
    write_terrain_tiles(
        dem, out / "terrain", max_error=max(params.terrain_max_error, 0.1), fill_height=fill
    )
    return out / "terrain" / "layer.json"


def _export(
    out: Path, frame: LocalFrame, terrain_v, terrain_f, bld, building_attrs, params: BuildParams
) -> list[Path]:
    from twin.tiles.gltf import GltfMesh, write_glb
    from twin.tiles.lod import write_lod_tileset, write_tileset_of_tilesets
    from twin.tiles.obj import write_obj
    from twin.tiles.preview import render_preview

    lod = _lod_params(params)
    meshes = [
        GltfMesh(
            name="terrain",
            positions=terrain_v,
            indices=terrain_f,
            colors=_terrain_colors(terrain_v[:, 2]),
        )
    ]
    if bld is not None and len(bld["faces"]):
        meshes.append(_building_gltf(bld, building_attrs))

    model = out / "model.glb"
    # model.glb is in the local ENU frame (glTF y-up); its extras say where that is.
    write_glb(model, meshes, extras={"frame": frame.to_dict(), "generator": "twin build"})
    obj = write_obj(out / "model.obj", meshes, frame)  # the same, for desktop tools
    # tiles/<layer>/ is one quadtree LOD tileset per layer; tiles/tileset.json joins them
    tiles = out / "tiles"
    if tiles.exists() and not (tiles / "tileset.json").exists():
        shutil.rmtree(tiles)  # not ours (or half-written): start afresh
    tiles.mkdir(exist_ok=True)
    # written again last: until then the folder does not look complete
    (tiles / "tileset.json").unlink(missing_ok=True)
    keep = {m.name for m in meshes} | {"tileset.json"} | ({"textured"} if params.texture else set())
    for old in tiles.iterdir():  # an earlier single-level layout or a removed layer
        if old.name not in keep:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    summaries = {}
    for m in meshes:
        layer = _welded_layer(m)
        summaries[m.name] = write_lod_tileset(
            tiles / m.name,
            [layer],
            frame,
            params=lod,
            cache_dir=out / ".cache" / "tiles" / m.name,
            overwrite=True,
        )
    write_tileset_of_tilesets(tiles, [f"{m.name}/tileset.json" for m in meshes], frame)
    preview = out / "preview.png"
    render_preview(meshes, preview)
    contents = [
        tiles / name / u
        for name, s in summaries.items()
        for u in [*s["written"], *s["kept"], "tileset.json"]
    ]
    return [model, obj, *sorted(contents), tiles / "tileset.json", preview], summaries


def _lod_params(params: BuildParams):
    from twin.tiles.lod import LodParams

    return LodParams(
        max_faces=params.tile_max_faces,
        implicit=params.tile_implicit,
        compression=params.tile_compression,
    )


def _textured_tiles(out: Path, frame: LocalFrame, params: BuildParams, bld, building_attrs):
    """``OUT/tiles/textured``: the photo-textured model (``OUT/textured/model.glb``,
    one mesh per atlas page) as a quadtree LOD tileset, each page a layer: leaves
    carry their crop of the page, parents are simplified with the UV seams kept and
    their images downsampled per level (see :func:`twin.tiles.lod.write_lod_tileset`).
    It replaces the untextured terrain and buildings in ``tiles/tileset.json``
    (their own tilesets stay beside it). Faces of a building carry its feature id
    (found by the face's centroid) and the building property table, with one more
    row, ``ground``, for the terrain, so a click on the textured model finds the
    building. Returns the tile files and the summary.
    Memory: the textured model and its decoded pages (3 bytes per texel)."""
    import io

    from PIL import Image, UnidentifiedImageError

    from twin.tiles.gltf import gltf_to_enu, read_glb
    from twin.tiles.lod import Layer, write_lod_tileset, write_tileset_of_tilesets

    src = out / "textured" / "model.glb"
    layers = []
    for i, prim in enumerate(read_glb(src)):
        if prim.get("texture") is None or prim.get("texcoords") is None:
            raise InputError(f"mesh {i} of the textured model has no texture", path=src)
        try:
            with Image.open(io.BytesIO(prim["texture"])) as im:
                page = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"the texture of mesh {i} cannot be read: {exc}", path=src) from None
        v = gltf_to_enu(np.asarray(prim["positions"], np.float64))
        f = np.asarray(prim["indices"], np.int64)
        uv = np.asarray(prim["texcoords"], np.float64)
        fids = table = None
        if bld is not None and len(bld["faces"]):
            v, f, uv, fids = _building_ids(v, f, uv, bld, len(building_attrs))
            table = _building_table([*building_attrs, {"building_id": "ground"}])
        name = prim.get("name") or f"page{i}"
        layers.append(
            Layer(name, v, f, texcoords=uv, texture=page, feature_ids=fids, features=table)
        )
    tiles = out / "tiles"
    summary = write_lod_tileset(
        tiles / "textured",
        layers,
        frame,
        params=_lod_params(params),
        cache_dir=out / ".cache" / "tiles" / "textured",
        overwrite=True,
    )
    write_tileset_of_tilesets(tiles, ["textured/tileset.json"], frame)
    contents = [tiles / "textured" / u for u in [*summary["written"], *summary["kept"]]]
    return [*sorted(contents), tiles / "textured" / "tileset.json"], summary


def _building_ids(v, f, uv, bld: dict, n_buildings: int):
    """Per-vertex building ids of a textured mesh: each face takes the id of the
    building face with the same centroid (within 1 cm; ``n_buildings`` = ground), and
    vertices shared by faces of different ids are split."""
    from scipy.spatial import cKDTree

    bc = bld["vertices"][bld["faces"]].mean(axis=1)
    d, near = cKDTree(bc).query(v[f].mean(axis=1), distance_upper_bound=0.01)
    ids = np.asarray(bld["feature_id"], np.int64)[np.minimum(near, len(bc) - 1)]
    face_id = np.where(np.isfinite(d), ids, n_buildings)
    key = np.repeat(face_id, 3) * len(v) + f.reshape(-1)
    uniq, inv = np.unique(key, return_inverse=True)
    src = uniq % len(v)
    return v[src], inv.reshape(-1, 3), uv[src], uniq // len(v)


def _cityjson(out: Path, frame: LocalFrame, bld: dict, attrs: list[dict], crs) -> Path:
    """``model.city.json``: the buildings as CityJSON 2.0 solids (roof/wall/ground
    semantics, attributes) in the survey CRS."""
    from twin.mesh.buildings import BuildingMesh
    from twin.tiles.cityjson import write_cityjson

    fid = bld["feature_id"]
    order = np.argsort(fid, kind="stable")
    bounds = np.searchsorted(fid[order], np.arange(len(attrs) + 1))
    buildings = []
    for i, a in enumerate(attrs):
        rows = order[bounds[i] : bounds[i + 1]]
        if len(rows) == 0:
            continue
        f = bld["faces"][rows]
        used, inv = np.unique(f, return_inverse=True)
        buildings.append(
            BuildingMesh(
                id=str(a.get("building_id", i)),
                vertices=bld["vertices"][used],
                faces=inv.reshape(-1, 3).astype(np.uint32),
                face_kind=bld["face_kind"][rows],
                attributes=dict(a),
            )
        )
    path = out / "model.city.json"
    write_cityjson(buildings, path, crs=crs, frame=frame, title="twin build")
    return path


def _welded_layer(m):
    """A tiles layer of a GLB mesh with vertices shared where position, colour and
    feature id agree (flat-shaded walls keep their own colour; no normals: viewers
    shade flat), which is what makes tile contents compress well."""
    from twin.mesh.weld import weld
    from twin.tiles.lod import Layer

    cols = [np.asarray(a, np.float64).reshape(len(m.positions), -1)
            for a in (m.colors, m.feature_ids) if a is not None]  # fmt: skip
    attrs = np.hstack(cols) if cols else None
    welded = weld(m.positions, m.indices, attributes=attrs)
    v, f = welded
    a = welded.attributes
    colors = fids = None
    if m.colors is not None:
        colors = a[:, : np.asarray(m.colors).reshape(len(m.positions), -1).shape[1]]
    if m.feature_ids is not None:
        fids = np.rint(a[:, -1]).astype(np.int64)
    return Layer(m.name, v, f, colors=colors, feature_ids=fids, features=m.features)


def _building_gltf(bld: dict, attrs: list[dict]):
    from twin.tiles.gltf import GltfMesh

    faces = bld["faces"]
    kind = bld["face_kind"]
    fid = bld["feature_id"]
    # Flat-shaded colours: unshare vertices so walls and roofs keep their own colour.
    v = bld["vertices"][faces.reshape(-1)]
    f = np.arange(len(v), dtype=np.uint32).reshape(-1, 3)
    roof_types = [a.get("roof_type", "flat") for a in attrs]
    face_rgb = np.tile(_WALL_RGB, (len(faces), 1))
    is_roof = kind == 1
    if is_roof.any():
        face_rgb[is_roof] = [_ROOF_RGB.get(roof_types[i], _ROOF_RGB["flat"]) for i in fid[is_roof]]
    colors = np.repeat(face_rgb, 3, axis=0).astype(np.float32)
    feature = np.repeat(fid, 3).astype(np.float32)
    return GltfMesh(
        name="buildings",
        positions=v,
        indices=f,
        colors=colors,
        feature_ids=feature,
        features=_building_table(attrs),
    )


_BUILDING_COLUMNS = (
    "building_id",
    "height",
    "eave_height",
    "base_height",
    "floors",
    "roof_type",
    "shape",
    "usage",
    "lod",
    "base_source",
)


def _building_table(attrs: list[dict]):
    """Per-building attributes for EXT_structural_metadata: a click finds the building."""
    from twin.tiles.gltf import PropertyTable

    columns = [c for c in _BUILDING_COLUMNS if any(c in a for a in attrs)]
    return PropertyTable(
        class_name="building",
        description="A building: heights in metres (base ellipsoidal), LoD1/LoD2 solid",
        properties={c: [a.get(c) for a in attrs] for c in columns},
    )


def update(
    model_dir: str | os.PathLike,
    *,
    dem: str | os.PathLike | None = None,
    footprints: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> dict:
    """Bring a built model up to date after some of its inputs changed.

    The inputs and parameters recorded in ``model_dir/manifest.json`` are used again,
    with ``dem`` / ``footprints`` replacing theirs when given (e.g. a new survey of a
    few blocks). Unchanged stages are reused and only the tiles whose content
    changed, with their ancestors, are rewritten; the new manifest lists them per
    layer (``stages.export.tiles.<layer>.changed``). Returns the new manifest.
    """
    out = Path(model_dir)
    path = out / MANIFEST
    if not path.exists():
        raise InputError("no manifest.json: not a built model (run `twin build` first)", path=out)
    try:
        manifest = json.loads(path.read_text())
        roles = {i["role"]: i["path"] for i in manifest["inputs"]}
        known = {f.name for f in BuildParams.__dataclass_fields__.values()}
        params = BuildParams(**{k: v for k, v in manifest["parameters"].items() if k in known})
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable manifest: {exc}", path=path) from exc
    dem = dem or roles["dem"]
    footprints = footprints or roles.get("footprints")
    lidar = roles.get("lidar")
    return build(
        dem, out, dem=dem, footprints=footprints, lidar=lidar, params=params, progress=progress
    )
