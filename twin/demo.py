"""``twin demo``: the whole chain on embedded defaults, in a few minutes on 2 cores.

synthetic survey (small preset) -> model (terrain + LoD2 buildings, GLB + 3D Tiles)
-> the first minute of live entity events replayed into an embedded SQLite store.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from twin.errors import OutputError
from twin.progress import Progress, ensure

MARKER = ".twin-demo"


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError("exists and is not a folder", path=out)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise OutputError(
                "folder exists and was not made by `twin demo`; not touching it", path=out
            )
        for child in out.iterdir():
            if child.name != MARKER:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by twin demo; safe to delete\n")


def run_demo(
    out: str | os.PathLike = "twin-demo",
    *,
    seed: int = 0,
    replay_seconds: float = 60.0,
    progress: Progress | None = None,
) -> dict:
    """Run the demo into ``out`` and return a summary (paths, counts, sizes, timings)."""
    from twin.pipeline import build
    from twin.sync.placement import placer_from_folder
    from twin.sync.replay import replay
    from twin.sync.store import SQLiteStore
    from twin.synth.params import PRESETS
    from twin.synth.survey import generate

    progress = ensure(progress)
    out = Path(out)
    _prepare(out)
    t0 = time.perf_counter()
    survey_dir, model_dir, db = out / "survey", out / "model", out / "live.sqlite"

    survey = generate(survey_dir, PRESETS["small"].with_(seed=seed), progress=progress)
    manifest = build(survey_dir, model_dir, progress=progress)
    with progress.step(f"replay the first {replay_seconds:g} s of live events"):
        # entities are placed in the model's frame: building, floor and ENU position
        store = SQLiteStore(db, placer=placer_from_folder(model_dir))
        try:
            report = replay(survey_dir / "events.ndjson", store, until=replay_seconds)
            entities = store.count()
        finally:
            store.close()

    return {
        "out": str(out),
        "survey": str(survey_dir),
        "model": str(model_dir),
        "tileset": str(model_dir / "tiles" / "tileset.json"),
        "glb": str(model_dir / "model.glb"),
        "preview": str(model_dir / "preview.png"),
        "store": str(db),
        "counts": {**survey["counts"], **manifest.get("counts", {})},
        "replay": report.to_dict() if hasattr(report, "to_dict") else dict(vars(report)),
        "entities_in_store": entities,
        "sizes_mb": _sizes(model_dir, manifest["outputs"]),
        "timings_s": {k: round(v, 2) for k, v in progress.timings.items()},
        "total_s": round(time.perf_counter() - t0, 1),
    }


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="twin demo", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in summary["counts"].items():
        t.add_row(k.replace("_", " "), f"{v:,}")
    r = summary["replay"]
    t.add_row("events replayed", ", ".join(f"{k} {v}" for k, v in r.items() if isinstance(v, int)))
    t.add_row("entities live", f"{summary['entities_in_store']:,}")
    for k, v in summary["sizes_mb"].items():
        t.add_row(k, f"{v:.2f} MB")
    t.add_row("total time", f"{summary['total_s']:.1f} s")
    con.print(t)
    con.print("[bold]outputs[/bold]")
    for k in ("survey", "glb", "tileset", "preview", "store"):
        con.print(f"  {k:8s} {summary[k]}")
    con.print(
        f"[bold]look at it[/bold]  twin view {summary['model']}   (then open http://127.0.0.1:8000)"
    )


def _sizes(model_dir: Path, outputs: list[dict]) -> dict[str, float]:
    """MB per output the manifest lists; a folder (tiles/, terrain/) is one entry
    with every file under it on disk counted and summed."""
    out: dict[str, float] = {}
    for o in outputs:
        head, _, rest = o["path"].partition("/")
        if not rest:
            out[head] = out.get(head, 0.0) + o["bytes"] / 1e6
            continue
        files = [p for p in (model_dir / head).rglob("*") if p.is_file()]
        out[f"{head}/ ({len(files)} files)"] = sum(p.stat().st_size for p in files) / 1e6
    return {k: round(v, 3) for k, v in out.items()}
