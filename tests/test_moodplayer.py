"""Mood player: smoothing, the mood map, track choice, the decision loop, the CLI on a real video."""
from __future__ import annotations

import json
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from litefer.apps.moodplayer import (DryRunPlayer, MoodMapError, MoodPlayer, MoodSmoother, PlayerError,
                                     PlaylistMap, SubprocessPlayer, TrackChooser, system_player,
                                     track_duration, video_frames)
from litefer.labels import CANONICAL

from conftest import EXAMPLE_LABEL, real_photo, require_bundled_model

REPO = Path(__file__).resolve().parents[1]
LABELS7 = list(CANONICAL[:7])


def probs_for(label: str, p: float = 0.7) -> dict[str, float]:
    rest = (1.0 - p) / (len(LABELS7) - 1)
    return {k: (p if k == label else rest) for k in LABELS7}


def write_wav(path: Path, seconds: float, rate: int = 8000, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    tone = (0.3 * 32767 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone.tobytes())
    return path


@pytest.fixture
def music(tmp_path) -> Path:
    root = tmp_path / "music"
    for i in range(3):
        write_wav(root / "upbeat" / f"sunny_{i}.wav", 30.0, freq=440 + 40 * i)
    for i in range(2):
        write_wav(root / "calm" / f"rain-piano_{i}.wav", 30.0, freq=220 + 20 * i)
    write_wav(root / "focus" / "deep_work.wav", 30.0)
    write_wav(root / "misc" / "ambient dance mix.wav", 30.0)
    (root / "calm" / "notes.txt").write_text("not music")
    return root


def write_map(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "moods.yaml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------ smoothing


def test_smoother_majority_and_window():
    s = MoodSmoother(window=1.0, mode="majority")
    assert s.mood() is None
    for i in range(4):
        s.update(i * 0.25, probs_for("happy"))
    assert s.mood() == ("happy", 1.0)
    s.update(1.0, probs_for("sad"))  # t=0 falls out of the 1 s window
    assert len(s) == 4
    label, conf = s.mood()
    assert label == "happy" and conf == pytest.approx(3 / 4)
    s.update(1.25, probs_for("sad"))
    s.update(1.5, probs_for("sad"))
    assert s.mood()[0] == "sad"
    # frames without a face count for time but not for votes
    for t in (2.0, 2.25, 2.5):
        s.update(t, None)
    assert s.mood() is None
    with pytest.raises(ValueError):
        s.update(0.5, None)


def test_smoother_mean_differs_from_majority():
    # two weak 'happy' frames against one very sure 'sad' frame
    frames = [probs_for("happy", 0.4), probs_for("happy", 0.4), probs_for("sad", 0.99)]
    maj, mean = MoodSmoother(5, "majority"), MoodSmoother(5, "mean")
    for i, p in enumerate(frames):
        maj.update(i, p)
        mean.update(i, p)
    assert maj.mood() == ("happy", pytest.approx(2 / 3))
    label, conf = mean.mood()
    assert label == "sad" and 0.33 < conf < 0.5
    with pytest.raises(ValueError):
        MoodSmoother(3, "median")
    with pytest.raises(ValueError):
        MoodSmoother(0)


# ------------------------------------------------------------------ the mood map


def test_playlist_map_folders_tags_files_default(tmp_path, music):
    m = PlaylistMap.load(write_map(tmp_path, (
        "happiness: {folder: upbeat}\n"          # an alias of happy
        "sad: {folder: calm}\n"
        "angry: {tags: [piano, ambient]}\n"
        "surprise: {files: [focus/deep_work.wav], folder: [upbeat]}\n"
        "neutral: focus\n"                        # shorthand for {folder: focus}
        "default: {tags: dance}\n")), music)
    names = lambda mood: sorted(m.relative(t) for t in m.tracks(mood))  # noqa: E731
    assert names("happy") == [f"upbeat/sunny_{i}.wav" for i in range(3)]
    assert names("sad") == ["calm/rain-piano_0.wav", "calm/rain-piano_1.wav"]  # notes.txt skipped
    assert names("angry") == ["calm/rain-piano_0.wav", "calm/rain-piano_1.wav", "misc/ambient dance mix.wav"]
    assert names("surprise")[0] == "focus/deep_work.wav" and len(names("surprise")) == 4
    assert names("neutral") == ["focus/deep_work.wav"]
    assert names("fear") == ["misc/ambient dance mix.wav"]  # from default
    assert m.playlist_name("fear") == "default" and m.playlist_name("sad") == "sad"
    assert set(m.moods) == {"happy", "sad", "angry", "surprise", "neutral"}


@pytest.mark.parametrize("text, line, words", [
    ("happy: {folder: upbeat}\nsleepy: {folder: calm}\n", 2, ["sleepy", "unknown mood"]),
    ("happy: {folder: upbeat}\nsad:\n  folder: calm\n  volume: 3\n", 3, ["sad", "volume"]),
    ("happy: {folder: nowhere}\n", 1, ["happy", "nowhere", "not found"]),
    ("happy: {folder: upbeat}\nhappy: {folder: calm}\n", 2, ["happy", "twice", "line 1"]),
    ("sad: {tags: [polka]}\n", 1, ["sad", "no audio files", "polka"]),
    ("sad: {files: [calm/notes.txt]}\n", 1, ["not an audio file"]),
    ("sad: {}\n", 1, ["at least one of"]),
    ("sad: [calm]\n", 1, ["expected a mapping"]),
    ("happy: {folder: upbeat\nsad: x\n", 2, ["not valid YAML"]),
    ("- happy\n- sad\n", 1, ["must be a mapping"]),
])
def test_playlist_map_errors_name_key_and_line(tmp_path, music, text, line, words):
    path = write_map(tmp_path, text)
    with pytest.raises(MoodMapError) as e:
        PlaylistMap.load(path, music)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}:"), msg
    assert e.value.line == line
    for w in words:
        assert w in msg, msg


def test_playlist_map_empty_and_missing(tmp_path, music):
    with pytest.raises(MoodMapError, match="empty"):
        PlaylistMap.load(write_map(tmp_path, "# nothing\n"), music)
    with pytest.raises(MoodMapError, match="no such mood map"):
        PlaylistMap.load(tmp_path / "absent.yaml", music)
    with pytest.raises(MoodMapError, match="music folder"):
        PlaylistMap.load(write_map(tmp_path, "happy: upbeat\n"), tmp_path / "no-music")


def test_example_config_is_valid(music):
    m = PlaylistMap.load(REPO / "configs" / "moods.example.yaml", music)
    assert {"happy", "sad", "neutral", "angry"} <= set(m.moods)
    assert all(m.tracks(mood) for mood in CANONICAL)  # default covers the rest


# ------------------------------------------------------------------ choosing tracks


def test_chooser_never_repeats_immediately_and_covers_all():
    tracks = [Path(f"t{i}.wav") for i in range(4)]
    c = TrackChooser(seed=1)
    picks = [c.choose("happy", tracks) for _ in range(200)]
    assert all(a != b for a, b in zip(picks, picks[1:]))
    for k in range(0, 200, 4):  # each round of four plays every track once
        assert sorted(picks[k:k + 4]) == sorted(tracks)
    # switching playlists that share a track still avoids an immediate repeat
    c2 = TrackChooser(seed=3)
    shared = [Path("a.wav"), Path("b.wav")]
    for i in range(50):
        prev = c2.last
        assert c2.choose("p" if i % 2 else "q", shared) != prev
    assert TrackChooser().choose("one", [Path("only.wav")]) == Path("only.wav")
    with pytest.raises(ValueError):
        TrackChooser().choose("none", [])


# ------------------------------------------------------------------ the decision loop


class SequenceRecognizer:
    """Fake recognizer: the expression of each frame comes from a schedule over frame numbers."""

    class Face:
        def __init__(self, label, box):
            self.box, self.label, self.probs = box, label, probs_for(label)
            self.score = self.probs[label]

    def __init__(self, schedule):
        self.schedule = list(schedule)  # labels, or None for "no face"
        self.i = 0

    def __call__(self, image):
        assert isinstance(image, np.ndarray)
        label = self.schedule[self.i]
        self.i += 1
        if label is None:
            return []
        # a small background face with another expression must not win over the big one
        return [self.Face("angry", [0, 0, 5, 5]), self.Face(label, [10, 10, 60, 70])]


def run_schedule(playlists, schedule, fps=4.0, window=2.0, **kw):
    rec = SequenceRecognizer(schedule)
    printed = []
    player = DryRunPlayer()
    loop = MoodPlayer(rec, playlists, smoother=MoodSmoother(window, kw.pop("mode", "majority")),
                      player=player, chooser=TrackChooser(0), emit=printed.append, **kw)
    frame = np.zeros((8, 8, 3), np.uint8)
    decisions = loop.run(((i / fps, frame) for i in range(len(schedule))))
    assert decisions == printed
    return decisions, player


def test_switches_when_mood_changes(tmp_path, music):
    m = PlaylistMap.load(write_map(tmp_path, "happy: upbeat\nsad: calm\n"), music)
    schedule = ["happy"] * 24 + ["sad"] * 24 + [None] * 4 + ["happy"] * 24  # 4 fps
    decisions, player = run_schedule(m, schedule)
    plays = [d for d in decisions if d["event"] == "play"]
    assert [(d["reason"], d["mood"]) for d in plays] == [
        ("start", "happy"), ("mood-change", "sad"), ("mood-change", "happy")]
    assert plays[0]["t"] == pytest.approx(2.0)  # one full window first
    # sad starts at t=6 s; a 2 s majority flips once more than half of the window is sad
    assert 6.5 <= plays[1]["t"] <= 8.0
    assert plays[1]["previous"] == "happy" and plays[1]["playlist"] == "sad"
    assert plays[1]["track"].startswith("calm/") and plays[0]["track"].startswith("upbeat/")
    assert plays[2]["track"].startswith("upbeat/") and plays[2]["track"] != plays[0]["track"]
    assert [p.name for p in player.played] == [Path(d["track"]).name for d in plays]
    for d in decisions:
        json.dumps(d)  # JSON-ready


def test_hold_and_flicker(tmp_path, music):
    m = PlaylistMap.load(write_map(tmp_path, "happy: upbeat\nsad: calm\n"), music)
    # one-frame flickers of 'sad' never outvote 'happy'
    flicker = (["happy"] * 3 + ["sad"]) * 12
    decisions, _ = run_schedule(m, flicker)
    assert [d["mood"] for d in decisions] == ["happy"]
    # with a long hold, a real change waits until the hold has passed
    schedule = ["happy"] * 12 + ["sad"] * 40
    decisions, _ = run_schedule(m, schedule, hold=6.0)
    assert [d["mood"] for d in decisions] == ["happy", "sad"]
    assert decisions[1]["t"] >= decisions[0]["t"] + 6.0


def test_track_end_plays_next_without_repeat(tmp_path):
    root = tmp_path / "music"
    for i in range(3):
        write_wav(root / "upbeat" / f"short_{i}.wav", 1.5)
    m = PlaylistMap.load(write_map(tmp_path, "happy: upbeat\n"), root)
    assert track_duration(root / "upbeat" / "short_0.wav") == pytest.approx(1.5)
    decisions, _ = run_schedule(m, ["happy"] * 40, window=1.0)
    assert [d["reason"] for d in decisions][:2] == ["start", "track-end"]
    assert len(decisions) >= 5
    gaps = [b["t"] - a["t"] for a, b in zip(decisions, decisions[1:])]
    assert all(1.5 <= g <= 1.76 for g in gaps), gaps
    tracks = [d["track"] for d in decisions]
    assert all(a != b for a, b in zip(tracks, tracks[1:]))


def test_mood_without_playlist_keeps_music(tmp_path, music):
    m = PlaylistMap.load(write_map(tmp_path, "happy: upbeat\n"), music)
    decisions, player = run_schedule(m, ["happy"] * 16 + ["surprise"] * 24)
    assert [(d["event"], d["mood"]) for d in decisions] == [("play", "happy"), ("no-playlist", "surprise")]
    assert len(player.played) == 1


def test_mean_smoothing_in_loop(tmp_path, music):
    m = PlaylistMap.load(write_map(tmp_path, "happy: upbeat\nsad: calm\n"), music)
    decisions, _ = run_schedule(m, ["sad"] * 12 + ["happy"] * 20, mode="mean")
    assert [d["mood"] for d in decisions] == ["sad", "happy"]
    assert 0.5 < decisions[0]["confidence"] <= 0.7 + 1e-6


# ------------------------------------------------------------------ players


def test_subprocess_player_tracks_its_process(tmp_path):
    sleeper = SubprocessPlayer([sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))"],
                               name="sleeper")
    assert sleeper.busy() is False
    sleeper.play(Path("0.3"))
    assert sleeper.busy() is True
    t0 = time.monotonic()
    while sleeper.busy() and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert sleeper.busy() is False
    sleeper.play(Path("30"))  # a long "track", stopped early
    assert sleeper.busy() is True
    sleeper.stop()
    assert sleeper.busy() is False


def test_system_player_choice():
    have = {"ffplay": None, "afplay": None, "paplay": "/usr/bin/paplay", "xdg-open": "/usr/bin/xdg-open"}
    p = system_player(which=lambda exe: have.get(exe))
    assert p.name == "paplay" and p.argv == ["/usr/bin/paplay"] and not p.detaches
    p = system_player(which=lambda exe: have.get(exe), prefer="xdg-open")
    assert p.name == "xdg-open" and p.detaches
    assert system_player(which=lambda exe: None) is None
    from litefer.apps.moodplayer import make_player
    with pytest.raises(PlayerError, match="unknown player"):
        make_player("winamp")
    with pytest.raises(PlayerError, match="no way to play audio"):
        make_player("ffplay", which=lambda exe: None)


# ------------------------------------------------------------------ real video, real model


def make_video(path: Path, photo: Path, seconds: float = 3.0, fps: int = 8) -> Path:
    """An MJPG video of the real photo drifting slowly (so frames differ)."""
    import cv2
    img = cv2.imread(str(photo))
    assert img is not None, photo
    scale = 320 / max(img.shape[:2])
    img = cv2.resize(img, (round(img.shape[1] * scale) // 2 * 2, round(img.shape[0] * scale) // 2 * 2))
    h, w = img.shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert out.isOpened()
    for i in range(int(seconds * fps)):
        shift = np.float32([[1, 0, i % 5 - 2], [0, 1, 0]])
        out.write(cv2.warpAffine(img, shift, (w, h), borderMode=cv2.BORDER_REPLICATE))
    out.release()
    return path


def test_video_frames_sampling(tmp_path):
    video = make_video(tmp_path / "face.avi", real_photo(), seconds=2.0, fps=8)
    frames = list(video_frames(video, sample_fps=2.0))
    assert [round(t, 3) for t, _ in frames] == [0.0, 0.5, 1.0, 1.5]
    assert frames[0][1].ndim == 3 and frames[0][1].shape[2] == 3
    from litefer.apps.moodplayer import FrameSourceError
    with pytest.raises(FrameSourceError):
        list(video_frames(tmp_path / "none.avi"))
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    with pytest.raises(FrameSourceError):
        list(video_frames(tmp_path / "bad.avi"))


# ------------------------------------------------------------------ the CLI


def flat(text: str) -> str:
    """Text without whitespace (rich wraps long error lines)."""
    return "".join(text.split())


def test_cli_reports_map_errors_and_bad_options(tmp_path, music):
    from typer.testing import CliRunner
    from litefer.cli import app
    bad = write_map(tmp_path, "happy: {folder: upbeat}\ngrumpy: {folder: calm}\n")
    r = CliRunner().invoke(app, ["moodplayer", "--music", str(music), "--map", str(bad), "--dry-run",
                                 "--video", "x.avi"])
    assert r.exit_code == 2 and flat(f"{bad}:2") in flat(r.output) and "grumpy" in flat(r.output)
    r = CliRunner().invoke(app, ["moodplayer", "--music", str(music), "--map", str(bad), "--camera", "0",
                                 "--video", "x.avi"])
    assert r.exit_code == 2 and "notboth" in flat(r.output)
    r = CliRunner().invoke(app, ["moodplayer", "--music", str(tmp_path / "nope"), "--map", str(bad)])
    assert r.exit_code == 2 and flat("no such folder") in flat(r.output)
    r = CliRunner().invoke(app, ["moodplayer", "--music", str(music), "--map", str(bad), "--smoothing", "median"])
    assert r.exit_code == 2 and "majority" in flat(r.output)


def test_cli_dry_run_on_a_real_video(tmp_path, music):
    """The real Recognizer on a video made from a real photo: decisions printed as JSON lines."""
    require_bundled_model()
    from typer.testing import CliRunner
    from litefer.cli import app
    video = make_video(tmp_path / "face.avi", real_photo(), seconds=3.0, fps=8)
    moods = write_map(tmp_path, "sad: calm\ndefault: upbeat\n")
    r = CliRunner().invoke(app, ["moodplayer", "--music", str(music), "--map", str(moods), "--video", str(video),
                                 "--window", "1", "--fps", "2", "--dry-run", "--seed", "0"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert lines, r.output
    first = lines[0]
    assert first["event"] == "play" and first["reason"] == "start" and first["t"] == pytest.approx(1.0)
    assert first["mood"] == EXAMPLE_LABEL and 0.5 < first["confidence"] <= 1     # the smiling astronaut
    assert first["track"].startswith("upbeat/") and (music / first["track"]).is_file()
    # one still face, one mood: no switching afterwards
    assert all(d["mood"] == first["mood"] for d in lines)


@pytest.mark.realdata
def test_cli_switches_playlist_when_a_real_face_changes_expression(tmp_path, music):
    """A clip of a real happy face, then a real surprised face (FER+ PrivateTest faces
    that >= 90 % of annotators agreed on, composed at test time, never stored): the
    player starts the happy playlist and switches to the surprise one."""
    require_bundled_model()
    import cv2
    from conftest import require_dataset
    require_dataset("ferplus")
    from typer.testing import CliRunner
    from litefer.cli import app
    from litefer.data import load_dataset
    d = load_dataset("ferplus", split="privatetest", label_mode="probability", num_classes=8)

    def still(label: str) -> np.ndarray:
        i = int(np.where(d.targets[:, d.labels.index(label)] >= 0.9)[0][0])
        frame = np.full((240, 240), 128, np.uint8)
        frame[40:200, 40:200] = cv2.resize(d.images[i], (160, 160), interpolation=cv2.INTER_CUBIC)
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)

    path, fps = tmp_path / "faces.avi", 4
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (240, 240))
    for label in ("happy", "surprise"):
        for _ in range(4 * fps):                                   # 4 s each
            out.write(still(label))
    out.release()
    moods = write_map(tmp_path, "happy: upbeat\nsurprise: calm\ndefault: focus\n")
    r = CliRunner().invoke(app, ["moodplayer", "--music", str(music), "--map", str(moods), "--video", str(path),
                                 "--window", "1", "--fps", "2", "--dry-run", "--seed", "0"])
    assert r.exit_code == 0, r.output
    plays = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    plays = [p for p in plays if p["event"] == "play"]
    assert [p["mood"] for p in plays] == ["happy", "surprise"], plays
    assert plays[0]["track"].startswith("upbeat/") and plays[1]["track"].startswith("calm/")
    assert plays[1]["reason"] == "mood-change" and 4.0 <= plays[1]["t"] <= 6.5


def test_cli_onnx_backend_max_seconds_and_min_confidence(tmp_path, music, bundled_onnx):
    """The real model exported to ONNX drives the player: the smiling astronaut starts the
    happy playlist; --max-seconds stops at that much video time; --min-confidence above what
    the model reaches keeps the player silent."""
    from typer.testing import CliRunner
    from litefer.cli import app
    video = make_video(tmp_path / "face.avi", real_photo(), seconds=3.0, fps=8)
    moods = write_map(tmp_path, "happy: upbeat\ndefault: calm\n")
    base = ["moodplayer", "--music", str(music), "--map", str(moods), "--video", str(video), "--window", "0.5",
            "--fps", "2", "--smoothing", "mean", "--dry-run", "--seed", "0", "--model", str(bundled_onnx),
            "--backend", "onnx", "--max-seconds", "1"]

    def decisions(r):
        return [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]

    r = CliRunner().invoke(app, base)
    assert r.exit_code == 0, r.output
    (first, *_) = decisions(r)
    assert first["event"] == "play" and first["mood"] == EXAMPLE_LABEL and first["track"].startswith("upbeat/")
    assert "3frame(s)analysed" in flat(r.output)          # t = 0, 0.5 and 1.0 s of the 3 s video
    conf = first["confidence"]
    assert 0.5 < conf < 1.0
    r = CliRunner().invoke(app, [*base, "--min-confidence", f"{(conf + 1) / 2:.6f}"])
    assert r.exit_code == 0, r.output
    assert [d for d in decisions(r) if d["event"] == "play"] == []
    assert "3frame(s)analysed" in flat(r.output)
