"""``litefer moodplayer``: music that follows your facial expression."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from litefer.cli._common import console, fail


def register(app: typer.Typer) -> None:
    @app.command("moodplayer")
    def moodplayer_cmd(
        music: Path = typer.Option(..., "--music", help="Music folder (searched recursively)."),
        map_path: Path = typer.Option(..., "--map", help="moods.yaml: mood -> {folder|tags|files}; "
                                                         "see configs/moods.example.yaml."),
        camera: Optional[int] = typer.Option(None, help="Camera index (default 0 when no --video)."),
        video: Optional[Path] = typer.Option(None, help="Watch a video file instead of a camera."),
        window: float = typer.Option(3.0, min=0.1, help="Smoothing window, seconds."),
        smoothing: str = typer.Option("majority", help="majority (vote of top labels) or mean (of probabilities)."),
        hold: Optional[float] = typer.Option(None, min=0.0, help="Least seconds between two mood switches "
                                                                 "(default: the window)."),
        min_confidence: float = typer.Option(0.0, min=0.0, max=1.0, help="Switch only on a mood this sure."),
        fps: float = typer.Option(4.0, min=0.1, max=60.0, help="Frames analysed per second."),
        max_seconds: Optional[float] = typer.Option(None, min=0.0, help="Stop after this many seconds."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Play nothing; print the decisions only."),
        player: str = typer.Option("auto", help="auto, pygame, simpleaudio, ffplay, afplay, mpv, paplay, xdg-open."),
        model: str = typer.Option("default", help="Bundled model name or checkpoint path."),
        backend: str = typer.Option("torch", help="torch or onnx."),
        detector: str = typer.Option("auto", help="Face detector name, 'auto', or 'none'."),
        seed: Optional[int] = typer.Option(None, help="Seed of the shuffle (for repeatable runs)."),
    ) -> None:
        """Watch the face, smooth its expression over a window, play music for the mood.

        Each decision is printed as a JSON line: {"t", "event", "reason", "mood",
        "confidence", "track", "playlist", "previous"}.
        """
        from litefer.apps import moodplayer as mp

        if camera is not None and video is not None:
            raise fail("give --camera or --video, not both")
        if smoothing not in mp.SMOOTHING_MODES:
            raise fail(f"--smoothing must be one of {', '.join(mp.SMOOTHING_MODES)}, not {smoothing!r}")
        if backend not in ("torch", "onnx"):
            raise fail(f"--backend must be torch or onnx, not {backend!r}")
        if not music.is_dir():
            raise fail(f"--music {music}: no such folder")
        try:
            playlists = mp.PlaylistMap.load(map_path, music)
        except mp.MoodMapError as exc:
            raise fail(f"invalid mood map: {exc}")
        try:
            out = mp.DryRunPlayer() if dry_run else mp.make_player(player)
        except mp.PlayerError as exc:
            raise fail(str(exc))
        try:
            from litefer.deploy.recognizer import Recognizer
            rec = Recognizer.from_pretrained(model, detector=None if detector.lower() == "none" else detector,
                                             backend=backend)
        except Exception as exc:
            raise fail(f"cannot load model {model!r}: {exc}")
        frames = mp.video_frames(video, fps) if video is not None else mp.camera_frames(camera or 0, fps)
        loop = mp.MoodPlayer(rec, playlists, smoother=mp.MoodSmoother(window, smoothing), player=out,
                             chooser=mp.TrackChooser(seed), hold=hold, min_confidence=min_confidence)
        console.print(f"mood player: {len(playlists.moods)} mood playlist(s), window {window:g} s "
                      f"({smoothing}), player {getattr(out, 'name', type(out).__name__)}; Ctrl-C stops",
                      highlight=False)
        try:
            loop.run(frames, max_seconds=max_seconds)
        except mp.FrameSourceError as exc:
            raise fail(str(exc))
        except KeyboardInterrupt:
            out.stop()
        console.print(f"{loop.frames} frame(s) analysed, {len(loop.decisions)} decision(s)", highlight=False)
