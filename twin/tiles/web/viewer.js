// twin viewer: the model's 3D Tiles on its quantized-mesh terrain, live entities over
// a WebSocket, building picking and a time slider over the entity history.
// Served by `twin view`; needs no network and no access token.
"use strict";

const params = new URLSearchParams(window.location.search);
const snapshot = params.has("snapshot");
const statusBox = document.getElementById("status");
const say = (msg) => { statusBox.textContent = msg; };

async function main() {
  const config = await (await fetch("config.json")).json();
  document.getElementById("title").textContent = "twin · " + (config.name || "model");

  const terrainProvider = config.terrain
    ? await Cesium.CesiumTerrainProvider.fromUrl(config.terrain, { requestVertexNormals: true })
    : new Cesium.EllipsoidTerrainProvider();
  const viewer = new Cesium.Viewer("cesium", {
    baseLayer: false, baseLayerPicker: false, geocoder: false, homeButton: true,
    sceneModePicker: false, navigationHelpButton: false, fullscreenButton: false,
    animation: !snapshot, timeline: !snapshot, infoBox: false, selectionIndicator: true,
    terrainProvider,
    contextOptions: { webgl: { preserveDrawingBuffer: true } },
  });
  const scene = viewer.scene;
  scene.globe.baseColor = Cesium.Color.fromCssColorString("#5d6b4f");
  // a fixed light from the south-east, 50 degrees up, shades the relief and the walls
  if (config.enu_to_ecef) {
    const m = Cesium.Matrix4.fromRowMajorArray(config.enu_to_ecef);
    const rot = Cesium.Matrix4.getMatrix3(m, new Cesium.Matrix3());
    const enu = Cesium.Cartesian3.normalize(new Cesium.Cartesian3(-0.45, 0.45, -0.77), new Cesium.Cartesian3());
    const dir = Cesium.Matrix3.multiplyByVector(rot, enu, new Cesium.Cartesian3());
    scene.light = new Cesium.DirectionalLight({ direction: dir, intensity: 2.2 });
    scene.globe.enableLighting = true;
    scene.globe.dynamicAtmosphereLighting = false;
  }
  scene.globe.depthTestAgainstTerrain = true;
  scene.skyAtmosphere.show = false;
  scene.fog.enabled = false;
  if (Cesium.defined(viewer.cesiumWidget.creditContainer)) {
    viewer.cesiumWidget.creditContainer.style.display = "none";
  }

  const load = async (url) => {
    const ts = await Cesium.Cesium3DTileset.fromUrl(url, { maximumScreenSpaceError: 8 });
    scene.primitives.add(ts);
    return ts;
  };
  const buildings = config.buildings ? await load(config.buildings) : null;
  const terrainMesh = config.terrain_mesh ? await load(config.terrain_mesh) : null;
  // the photo-textured model holds terrain and buildings: shown alone when there is one
  const textured = config.textured ? await load(config.textured) : null;
  if (terrainMesh) terrainMesh.show = !config.terrain && !textured;
  if (textured && buildings) buildings.show = false;
  scene.globe.show = !textured;
  const check = (id, on) => { document.getElementById(id).checked = on; };
  check("show-terrain-mesh", terrainMesh ? terrainMesh.show : false);
  check("show-globe", !!config.terrain && !textured);
  check("show-textured", !!textured);
  check("show-buildings", buildings ? buildings.show : false);
  const main = textured || terrainMesh || buildings;

  // look at the whole city from the south-south-west, 35 degrees down
  const home = () => {
    if (!main) return;
    const bs = main.boundingSphere;
    viewer.camera.viewBoundingSphere(bs, new Cesium.HeadingPitchRange(
      Cesium.Math.toRadians(20), Cesium.Math.toRadians(-35), bs.radius * 1.7));
    viewer.camera.lookAtTransform(Cesium.Matrix4.IDENTITY);
  };
  home();
  viewer.homeButton.viewModel.command.beforeExecute.addEventListener((e) => { e.cancel = true; home(); });

  const toggle = (id, fn) => document.getElementById(id).addEventListener("change", (e) => fn(e.target.checked));
  toggle("show-buildings", (on) => { if (buildings) buildings.show = on; });
  toggle("show-textured", (on) => {
    if (!textured) return;
    textured.show = on;
    scene.globe.show = !on && !!config.terrain;
    check("show-globe", scene.globe.show);
  });
  toggle("show-terrain-mesh", (on) => { if (terrainMesh) terrainMesh.show = on; });
  toggle("show-globe", (on) => {
    scene.globe.show = on;
    if (on && terrainMesh) { terrainMesh.show = false; document.getElementById("show-terrain-mesh").checked = false; }
  });

  // building picking: show the feature's properties (EXT_structural_metadata)
  const picked = document.getElementById("picked");
  const handler = new Cesium.ScreenSpaceEventHandler(scene.canvas);
  handler.setInputAction((click) => {
    const f = scene.pick(click.position);
    if (f instanceof Cesium.Cesium3DTileFeature) {
      const rows = f.getPropertyIds().map((k) => `<tr><td>${k}</td><td>${f.getProperty(k)}</td></tr>`);
      picked.innerHTML = `<table>${rows.join("")}</table>`;
    } else if (Cesium.defined(f) && f.id instanceof Cesium.Entity) {
      const e = f.id;
      picked.innerHTML = `<table><tr><td>entity</td><td>${e.id}</td></tr>` +
        `<tr><td>type</td><td>${e.properties && e.properties.type ? e.properties.type.getValue() : ""}</td></tr></table>`;
    } else {
      picked.innerHTML = "";
    }
  }, Cesium.ScreenSpaceEventType.LEFT_CLICK);

  // live entities: WebSocket deltas from the sync store
  const live = new Cesium.CustomDataSource("live");
  viewer.dataSources.add(live);
  const enuToEcef = config.enu_to_ecef ? Cesium.Matrix4.fromRowMajorArray(config.enu_to_ecef) : null;
  const colors = { person: Cesium.Color.ORANGE, vehicle: Cesium.Color.DODGERBLUE,
                   incident: Cesium.Color.RED, asset: Cesium.Color.YELLOW, sensor: Cesium.Color.CYAN };
  const place = (d) => {
    if (d.enu && enuToEcef) {
      return Cesium.Matrix4.multiplyByPoint(enuToEcef, new Cesium.Cartesian3(d.enu[0], d.enu[1], d.enu[2] + 1.0), new Cesium.Cartesian3());
    }
    if (d.position) return Cesium.Cartesian3.fromDegrees(d.position.lon, d.position.lat, (d.position.alt || 0) + 1.0);
    return null;
  };
  let liveCount = 0;
  const show = (d) => {
    if (!d || !d.id) return;
    const pos = place(d);
    if (!pos) return;
    let e = live.entities.getById(d.id);
    if (!e) {
      e = live.entities.add({ id: d.id, point: { pixelSize: 7, color: colors[d.type] || Cesium.Color.WHITE,
        outlineColor: Cesium.Color.BLACK, outlineWidth: 1, disableDepthTestDistance: Number.POSITIVE_INFINITY },
        properties: { type: d.type } });
      liveCount += 1;
    }
    e.position = pos;
  };
  if (config.live) {
    // current state first, then every change after the store's cursor at that moment
    const auth = { headers: { Authorization: "Bearer " + config.live_token } };
    const health = await (await fetch("sync/health", auth)).json();
    const now = await (await fetch("sync/entities?limit=100000", auth)).json();
    now.entities.forEach(show);
    const ws = new WebSocket(`${config.live}&since=${health.cursor}`);
    ws.onmessage = (msg) => {
      let data;
      try { data = JSON.parse(msg.data); } catch (e) { return; }
      (data.deltas || []).forEach(show);
    };
    toggle("show-live", (on) => { live.show = on; });
  }

  // history: CZML of the stored tracks drives the clock and the timeline
  let history = null;
  toggle("show-history", async (on) => {
    if (on && !history && config.czml) {
      history = await Cesium.CzmlDataSource.load(config.czml);
      viewer.dataSources.add(history);
      viewer.clock.shouldAnimate = true;
    } else if (history) {
      history.show = on;
    }
  });

  // report loading state; in snapshot mode post the canvas once everything is in
  let sent = false;
  const started = performance.now();
  const shownDone = (ts) => !ts || !ts.show || ts.tilesLoaded;
  const tilesDone = () => shownDone(buildings) && shownDone(terrainMesh) && shownDone(textured) &&
    (!scene.globe.show || scene.globe.tilesLoaded);
  // with a live store, also wait (up to 10 s) for the first entities to arrive
  const done = () => tilesDone() && (!config.live || liveCount > 0 || performance.now() - started > 10000);
  scene.postRender.addEventListener(() => {
    say(`${done() ? "loaded" : "loading…"}${config.live ? ` · ${liveCount} live entities` : ""}`);
    if (snapshot && !sent && done()) {
      sent = true;
      setTimeout(() => {
        scene.render();
        const png = scene.canvas.toDataURL("image/png");
        fetch("__snapshot", { method: "POST", body: png });
      }, 500);
    }
  });
}

main().catch((err) => {
  say("error: " + err);
  if (snapshot) fetch("__snapshot", { method: "POST", body: "error: " + err });
});
