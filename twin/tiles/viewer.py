"""``twin view``: a local web page showing a built model, its terrain and live entities.

:func:`create_viewer_app` serves, from one process and with no network access or
token needed:

    GET /                     the page (``twin/tiles/web/index.html`` + ``viewer.js``)
    GET /cesium/...           CesiumJS from ``node_modules/cesium`` (installed by set-up)
    GET /config.json          what the page loads: tilesets, terrain, frame, live URLs
    GET /model/...            the model folder (``twin build`` output); quantized-mesh
                              ``.terrain`` tiles go out with ``Content-Encoding: gzip``
    GET /history.czml         the store's entity history as CZML (the time slider)
    /sync/...                 the live sync API (WebSocket ``/sync/ws``) when a store
                              is given; the page gets a read-only token for it
    POST /__snapshot          only with ``snapshot=``: the page posts its canvas (PNG
                              data URL) once every tile is loaded (used by tests)

The page shows ``tiles/buildings`` over the quantized-mesh terrain (``terrain/``),
with the terrain mesh tileset as an alternative, building picking (the
EXT_structural_metadata properties) and a time slider over the CZML history. A
model built with ``--texture`` is shown as its photo-textured tiles
(``tiles/textured``: terrain and buildings in one, the globe hidden beneath them),
the untextured layers one click away.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from pathlib import Path

from fastapi import Request

from twin.errors import InputError, ParameterError

WEB = Path(__file__).parent / "web"


def cesium_dir() -> Path:
    """``node_modules/cesium/Build/Cesium`` (``$TWIN_NODE_MODULES`` overrides the folder
    holding ``node_modules``' packages)."""
    env = os.environ.get("TWIN_NODE_MODULES")
    roots = [Path(env)] if env else []
    roots += [Path(__file__).resolve().parents[2] / "node_modules", Path.cwd() / "node_modules"]
    for r in roots:
        d = r / "cesium" / "Build" / "Cesium"
        if (d / "Cesium.js").exists():
            return d
    raise InputError(
        "CesiumJS not found in node_modules/cesium: run `./dev setup` (or `npm install`) "
        "in the twin checkout, or point TWIN_NODE_MODULES at a node_modules folder"
    )


def _model_config(model: Path) -> dict:
    if not model.is_dir():
        raise InputError("the model folder does not exist", path=model)
    tiles = model / "tiles"
    cfg: dict = {"name": model.resolve().name}
    if (tiles / "buildings" / "tileset.json").exists():
        cfg["buildings"] = "model/tiles/buildings/tileset.json"
    if (tiles / "terrain" / "tileset.json").exists():
        cfg["terrain_mesh"] = "model/tiles/terrain/tileset.json"
    if (tiles / "textured" / "tileset.json").exists():
        cfg["textured"] = "model/tiles/textured/tileset.json"
    if "buildings" not in cfg and "terrain_mesh" not in cfg:
        if (tiles / "tileset.json").exists():
            cfg["buildings"] = "model/tiles/tileset.json"
        elif (model / "tileset.json").exists():
            cfg["buildings"] = "model/tileset.json"
        else:
            raise InputError("no tileset.json found (expected a `twin build` output)", path=model)
    if (model / "terrain" / "layer.json").exists():
        cfg["terrain"] = "model/terrain/"
    manifest = model / "manifest.json"
    if manifest.exists():
        try:
            frame = json.loads(manifest.read_text()).get("frame") or {}
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"unreadable manifest: {exc}", path=manifest) from exc
        m = frame.get("enu_to_ecef")
        if m:
            cfg["enu_to_ecef"] = [float(x) for row in m for x in row]
    return cfg


def create_viewer_app(
    model: str | os.PathLike,
    *,
    store=None,
    placer=None,
    snapshot: str | os.PathLike | None = None,
):
    """The FastAPI app of the viewer for the model folder ``model``.

    ``store``: a :class:`~twin.sync.store.Store` whose entities are shown live (and
    whose history feeds the time slider). ``snapshot``: a PNG path the page's canvas
    is written to once everything is loaded; ``app.state.snapshot_done`` (a
    :class:`threading.Event`) is set then.
    """
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    model = Path(model)
    cfg = _model_config(model)
    cesium = cesium_dir()
    from fastapi.middleware.gzip import GZipMiddleware

    app = FastAPI(title="twin viewer", docs_url=None, redoc_url=None)
    # tiles (meshopt-compressed GLB) and JSON go out gzip-compressed, as CDNs send them
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.state.snapshot_done = threading.Event()
    app.state.snapshot_error = None
    root = model.resolve()

    if store is not None:
        from twin.sync.server import create_app

        token = secrets.token_urlsafe(16)
        sync = create_app(store, placer, {token: {"name": "viewer", "scopes": {"read": True}}})
        app.mount("/sync", sync)
        cfg["live"] = f"sync/ws?token={token}"
        cfg["live_token"] = token
        cfg["czml"] = "history.czml"

        @app.get("/history.czml")
        def history():
            import tempfile

            from twin.sync.czml import export_czml

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "history.czml"
                export_czml(store, path)
                return JSONResponse(json.loads(path.read_text()))

    @app.get("/")
    def index():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/viewer.js")
    def viewer_js():
        return FileResponse(WEB / "viewer.js", media_type="text/javascript")

    @app.get("/config.json")
    def config():
        return JSONResponse(cfg)

    @app.get("/model/{path:path}")
    def model_file(path: str):
        f = (root / path).resolve()
        if root not in f.parents or not f.is_file():
            raise HTTPException(status_code=404, detail="not found")
        if f.suffix == ".terrain":  # quantized-mesh tiles are stored gzip-compressed
            return Response(
                f.read_bytes(),
                media_type="application/vnd.quantized-mesh",
                headers={"Content-Encoding": "gzip"},
            )
        return FileResponse(f)

    app.mount("/cesium", StaticFiles(directory=cesium), name="cesium")

    if snapshot is not None:
        out = Path(snapshot)

        @app.post("/__snapshot")
        async def take_snapshot(request: Request):
            body = (await request.body()).decode(errors="replace")
            if body.startswith("data:image/png;base64,"):
                out.write_bytes(base64.b64decode(body.split(",", 1)[1]))
            else:
                app.state.snapshot_error = body[:500]
            app.state.snapshot_done.set()
            return {"ok": True}

    return app


def serve_viewer(
    model: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    db: str | os.PathLike | None = None,
    snapshot: str | os.PathLike | None = None,
) -> None:
    """Run the viewer until interrupted (``twin view``)."""
    import uvicorn

    if not 0 < port < 65536:
        raise ParameterError(f"port must be 1..65535, got {port}")
    store = placer = None
    if db is not None:
        from twin.sync.placement import placer_from_folder
        from twin.sync.store import SQLiteStore

        if not Path(db).exists():
            raise InputError("the live store does not exist", path=db)
        store = SQLiteStore(db)
        try:
            placer = placer_from_folder(model)
        except Exception:  # a model without footprints/terrain still shows entities
            placer = None
    app = create_viewer_app(model, store=store, placer=placer, snapshot=snapshot)
    uvicorn.run(app, host=host, port=port, log_level="warning")


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--mute-audio",
    "--no-first-run",
)


def chromium_binary() -> str | None:
    """A Chromium/Chrome executable on PATH (``$TWIN_CHROMIUM`` overrides), or None."""
    import shutil

    env = os.environ.get("TWIN_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def snapshot_viewer(
    model: str | os.PathLike,
    png: str | os.PathLike,
    *,
    db: str | os.PathLike | None = None,
    size: tuple[int, int] = (960, 600),
    timeout: float = 180.0,
) -> Path:
    """Open the viewer of ``model`` in headless Chromium and save what it shows.

    The page posts its WebGL canvas once the tilesets and the terrain report every
    tile loaded (Chromium's own ``--screenshot`` comes out black under SwiftShader).
    Raises :class:`~twin.errors.TwinError` if Chromium is missing, the page reports
    an error or nothing arrives within ``timeout`` seconds.
    """
    import socket
    import subprocess
    import tempfile
    import time

    import uvicorn

    from twin.errors import TwinError

    browser = chromium_binary()
    if browser is None:
        raise TwinError("Chromium not found (Debian package `chromium`; ./dev setup installs it)")
    png = Path(png)
    store = None
    if db is not None:
        from twin.sync.store import SQLiteStore

        store = SQLiteStore(db)
    app = create_viewer_app(model, store=store, snapshot=png)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser,
            *CHROMIUM_FLAGS,
            f"--window-size={size[0]},{size[1]}",
            f"--user-data-dir={profile}",
            f"http://127.0.0.1:{port}/?snapshot=1",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not app.state.snapshot_done.wait(timeout):
                raise TwinError(f"the viewer did not finish loading within {timeout:.0f} s")
        finally:
            proc.kill()
            proc.wait()
            server.should_exit = True
            thread.join(timeout=10)
            if store is not None:
                store.close()
    if app.state.snapshot_error:
        raise TwinError(f"the viewer page failed: {app.state.snapshot_error}")
    return png
