"""Mood player: music that follows the listener's facial expression.

As in the A-MobileNet paper's application: a camera (or a video file) watches the
user, the recognizer labels each sampled frame, the expression is smoothed over a
window of a few seconds, and the smoothed mood picks a playlist.

The pieces are testable without a camera or speakers:

- :class:`MoodSmoother` — majority vote or mean probability over the last ``window`` seconds.
- :class:`PlaylistMap` — ``moods.yaml`` (mood → folder / tags / files under a music
  folder), validated with errors that name the key and the line.
- :class:`TrackChooser` — shuffled tracks per mood, never the same track twice in a row.
- :class:`MoodPlayer` — ``run(frames, clock)`` turns frames into play decisions
  (dicts, printed as JSON lines by ``litefer moodplayer``).
- Players: :class:`DryRunPlayer`, :class:`SubprocessPlayer` (ffplay, afplay, paplay,
  aplay, xdg-open), and optional ``pygame`` / ``simpleaudio`` when installed.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import wave
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from litefer.labels import CANONICAL, UnknownLabelError, canonical

AUDIO_EXTENSIONS = frozenset({".mp3", ".wav", ".ogg", ".oga", ".flac", ".m4a", ".aac", ".opus",
                              ".wma", ".aif", ".aiff", ".mid", ".midi"})
SMOOTHING_MODES = ("majority", "mean")
DEFAULT_KEY = "default"
ENTRY_KEYS = ("folder", "tags", "files")


# =========================================================================== smoothing


class MoodSmoother:
    """The dominant expression over the last ``window`` seconds.

    ``update(t, probs)`` adds one observation (``probs``: label → probability, or
    ``None`` for a frame without a face); ``mood()`` answers ``(label, confidence)``
    or ``None`` when the window holds no face:

    - ``"majority"``: each frame votes for its top label; confidence = share of votes
      (ties go to the higher mean probability, then to the latest);
    - ``"mean"``: probabilities are averaged; confidence = the winner's mean probability.
    """

    def __init__(self, window: float = 3.0, mode: str = "majority"):
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        if mode not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {', '.join(SMOOTHING_MODES)}, got {mode!r}")
        self.window = float(window)
        self.mode = mode
        self._obs: deque[tuple[float, Optional[dict[str, float]]]] = deque()

    def reset(self) -> None:
        self._obs.clear()

    def update(self, t: float, probs: Optional[dict[str, float]]) -> None:
        if self._obs and t < self._obs[-1][0]:
            raise ValueError(f"time went backwards: {t} after {self._obs[-1][0]}")
        self._obs.append((float(t), None if probs is None else {str(k): float(v) for k, v in probs.items()}))
        while self._obs and self._obs[0][0] <= t - self.window:
            self._obs.popleft()

    @property
    def faces(self) -> list[dict[str, float]]:
        return [p for _, p in self._obs if p]

    def __len__(self) -> int:
        return len(self._obs)

    def mood(self) -> Optional[tuple[str, float]]:
        faces = self.faces
        if not faces:
            return None
        names = sorted({k for p in faces for k in p})
        mean = {k: sum(p.get(k, 0.0) for p in faces) / len(faces) for k in names}
        if self.mode == "mean":
            best = max(names, key=lambda k: (mean[k], -names.index(k)))
            return best, mean[best]
        tops = [max(p, key=p.get) for p in faces]
        votes = Counter(tops)
        last = {k: i for i, k in enumerate(tops)}
        best = max(votes, key=lambda k: (votes[k], round(mean.get(k, 0.0), 9), last[k]))
        return best, votes[best] / len(faces)


# =========================================================================== moods.yaml


class MoodMapError(ValueError):
    """An invalid mood map; the message names the file, the line and the key."""

    def __init__(self, message: str, path: Optional[str] = None, line: Optional[int] = None,
                 key: Optional[str] = None):
        where = ":".join(str(x) for x in (path, line) if x is not None)
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.line, self.key = path, line, key


def _tokens(rel: Path) -> set[str]:
    """Tags of a track: its folder names and the words of its file name, lower case."""
    out = {p.lower() for p in rel.parts[:-1]}
    out |= {w for w in re.split(r"[^0-9a-z]+", rel.stem.lower()) if w}
    return out


def scan_music(music_dir: Path) -> list[Path]:
    """Audio files under ``music_dir`` (recursive, sorted, hidden files skipped)."""
    found = []
    for root, dirs, files in os.walk(music_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_EXTENSIONS:
                found.append(Path(root) / f)
    return found


class PlaylistMap:
    """Which tracks to play for each mood.

    ``moods.yaml`` maps expressions (canonical names or their aliases, or ``default``
    for every mood not listed) to an entry with one or more of:

    - ``folder``: a folder (or list of folders) under the music folder, searched recursively;
    - ``tags``: words matched against the tracks' folder names and file-name words;
    - ``files``: explicit files under the music folder.
    """

    def __init__(self, playlists: dict[str, list[Path]], music_dir: Path):
        self.playlists = {k: list(v) for k, v in playlists.items()}
        self.music_dir = Path(music_dir)

    @property
    def moods(self) -> list[str]:
        return [m for m in self.playlists if m != DEFAULT_KEY]

    def tracks(self, mood: str) -> list[Path]:
        """The tracks for ``mood``, else the ``default`` ones, else []."""
        return self.playlists.get(mood) or self.playlists.get(DEFAULT_KEY) or []

    def playlist_name(self, mood: str) -> Optional[str]:
        if self.playlists.get(mood):
            return mood
        return DEFAULT_KEY if self.playlists.get(DEFAULT_KEY) else None

    def relative(self, track: Path) -> str:
        try:
            return Path(track).relative_to(self.music_dir).as_posix()
        except ValueError:
            return str(track)

    @classmethod
    def load(cls, map_path: str | Path, music_dir: str | Path) -> "PlaylistMap":
        map_path = Path(map_path)
        if not map_path.is_file():
            raise MoodMapError("no such mood map file", path=str(map_path))
        try:
            text = map_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MoodMapError(f"cannot read the mood map ({exc})", path=str(map_path)) from None
        return cls.from_yaml(text, music_dir, source=str(map_path))

    @classmethod
    def from_yaml(cls, text: str, music_dir: str | Path, source: str = "<moods>") -> "PlaylistMap":
        import yaml

        music_dir = Path(music_dir)
        if not music_dir.is_dir():
            raise MoodMapError(f"music folder {music_dir} does not exist")

        def err(msg: str, node: Any = None, key: Optional[str] = None) -> MoodMapError:
            line = node.start_mark.line + 1 if node is not None else None
            return MoodMapError(msg if key is None else f"{key}: {msg}", path=source, line=line, key=key)

        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            raise MoodMapError(f"not valid YAML: {problem}", path=source,
                               line=mark.line + 1 if mark is not None else None) from None
        if root is None:
            raise err("the mood map is empty; map moods to music, e.g. 'happy: {folder: upbeat}'")
        if not isinstance(root, yaml.MappingNode):
            raise err("the mood map must be a mapping of mood -> {folder|tags|files}", root)

        library = scan_music(music_dir)
        playlists: dict[str, list[Path]] = {}
        lines: dict[str, int] = {}
        for knode, vnode in root.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise err("mood names must be plain words", knode)
            raw_key = str(knode.value)
            if raw_key.strip().lower() == DEFAULT_KEY:
                mood = DEFAULT_KEY
            else:
                try:
                    mood = canonical(raw_key)
                except UnknownLabelError:
                    raise err(f"unknown mood {raw_key!r}; use one of {', '.join(CANONICAL)} or "
                              f"'{DEFAULT_KEY}'", knode, raw_key) from None
            if mood in lines:
                raise err(f"mood {mood!r} is given twice (first on line {lines[mood]})", knode, raw_key)
            lines[mood] = knode.start_mark.line + 1
            playlists[mood] = cls._entry(vnode, raw_key, music_dir, library, err)
        return cls(playlists, music_dir)

    @staticmethod
    def _entry(node: Any, key: str, music_dir: Path, library: list[Path], err: Callable) -> list[Path]:
        import yaml

        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str") and node.value:
            spec: dict[str, Any] = {"folder": node.value}  # shorthand: `happy: upbeat`
        elif isinstance(node, yaml.MappingNode):
            spec = yaml.safe_load(yaml.serialize(node)) or {}
        else:
            raise err("expected a mapping such as {folder: upbeat} or {tags: [calm, piano]}", node, key)
        unknown = [k for k in spec if k not in ENTRY_KEYS]
        if unknown:
            raise err(f"unknown field(s) {', '.join(map(str, unknown))}; allowed: {', '.join(ENTRY_KEYS)}",
                      node, key)
        if not any(k in spec for k in ENTRY_KEYS):
            raise err(f"give at least one of {', '.join(ENTRY_KEYS)}", node, key)

        def strings(field: str) -> list[str]:
            v = spec.get(field)
            if v is None:
                return []
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
                raise err(f"'{field}' must be a non-empty string or list of strings", node, key)
            return [x.strip() for x in v]

        music_root = music_dir.resolve()
        tracks: list[Path] = []
        for folder in strings("folder"):
            d = (music_dir / folder)
            if not d.is_dir():
                raise err(f"folder {folder!r} not found under {music_dir}", node, key)
            rd = d.resolve()
            tracks += [p for p in library if p.resolve().is_relative_to(rd)] if rd.is_relative_to(music_root) \
                else scan_music(d)
        tags = [t.lower() for t in strings("tags")]
        if tags:
            tracks += [p for p in library if _tokens(p.relative_to(music_dir)) & set(tags)]
        for f in strings("files"):
            p = music_dir / f
            if not p.is_file():
                raise err(f"file {f!r} not found under {music_dir}", node, key)
            if p.suffix.lower() not in AUDIO_EXTENSIONS:
                raise err(f"file {f!r} is not an audio file ({', '.join(sorted(AUDIO_EXTENSIONS))})", node, key)
            tracks.append(p)
        unique = list(dict.fromkeys(tracks))
        if not unique:
            what = " and ".join(f"{k} {spec[k]!r}" for k in ENTRY_KEYS if k in spec)
            raise err(f"no audio files match {what} under {music_dir}", node, key)
        return unique


# =========================================================================== choosing


class TrackChooser:
    """Shuffled play order per playlist; never the same track twice in a row."""

    def __init__(self, seed: Optional[int] = None):
        self.rng = random.Random(seed)
        self._bags: dict[str, list[Path]] = {}
        self.last: Optional[Path] = None

    def choose(self, name: str, tracks: Sequence[Path]) -> Path:
        if not tracks:
            raise ValueError(f"playlist {name!r} is empty")
        bag = [t for t in self._bags.get(name, []) if t in tracks]
        if not bag:
            bag = list(tracks)
            self.rng.shuffle(bag)
        if len(tracks) > 1 and bag[-1] == self.last:
            if len(bag) > 1:
                bag[-1], bag[0] = bag[0], bag[-1]
            else:  # the only track left in the bag is the one just played: start a new round
                bag = [t for t in tracks if t != self.last]
                self.rng.shuffle(bag)
        track = bag.pop()
        self._bags[name] = bag
        self.last = track
        return track


# =========================================================================== players


def track_duration(path: str | Path) -> Optional[float]:
    """Length in seconds of a WAV file; None for other formats or unreadable files."""
    if Path(path).suffix.lower() != ".wav":
        return None
    try:
        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            return w.getnframes() / rate if rate else None
    except (wave.Error, OSError, EOFError):
        return None


class DryRunPlayer:
    """Plays nothing; ``busy()`` answers None (unknown), so track ends follow WAV lengths."""

    name = "dry-run"

    def __init__(self):
        self.played: list[Path] = []

    def play(self, path: Path) -> None:
        self.played.append(Path(path))

    def stop(self) -> None:
        pass

    def busy(self) -> Optional[bool]:
        return None


class SubprocessPlayer:
    """Hands each file to a system player command (``argv + [file]``)."""

    def __init__(self, argv: Sequence[str], name: Optional[str] = None, detaches: bool = False):
        self.argv = list(argv)
        self.name = name or Path(self.argv[0]).name
        self.detaches = detaches  # xdg-open/open return at once: the end of the track is unknown
        self._proc: Optional[subprocess.Popen] = None

    def play(self, path: Path) -> None:
        self.stop()
        self._proc = subprocess.Popen([*self.argv, str(path)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        p, self._proc = self._proc, None
        if p is not None and p.poll() is None and not self.detaches:
            p.terminate()
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def busy(self) -> Optional[bool]:
        if self._proc is None:
            return False
        if self.detaches:
            return None
        return self._proc.poll() is None


class PygamePlayer:  # pragma: no cover - needs pygame and an audio device
    name = "pygame"

    def __init__(self):
        import pygame
        self._music = pygame.mixer.music
        pygame.mixer.init()

    def play(self, path: Path) -> None:
        self._music.load(str(path))
        self._music.play()

    def stop(self) -> None:
        self._music.stop()

    def busy(self) -> Optional[bool]:
        return bool(self._music.get_busy())


class SimpleaudioPlayer:  # pragma: no cover - needs simpleaudio and an audio device
    """WAV only: other formats go to ``fallback``."""

    name = "simpleaudio"

    def __init__(self, fallback: Any = None):
        import simpleaudio
        self._sa = simpleaudio
        self._obj = None
        self._fallback = fallback
        self._current: Any = None

    def play(self, path: Path) -> None:
        self.stop()
        if Path(path).suffix.lower() == ".wav":
            self._obj = self._sa.WaveObject.from_wave_file(str(path)).play()
            self._current = self
        elif self._fallback is not None:
            self._fallback.play(path)
            self._current = self._fallback
        else:
            raise PlayerError(f"simpleaudio plays only WAV files, not {path}")

    def stop(self) -> None:
        if self._obj is not None:
            self._obj.stop()
            self._obj = None
        if self._fallback is not None:
            self._fallback.stop()

    def busy(self) -> Optional[bool]:
        if self._current is self:
            return self._obj is not None and self._obj.is_playing()
        return self._current.busy() if self._current is not None else False


class PlayerError(RuntimeError):
    pass


#: system players, in order of preference: (name, argv, detaches)
SYSTEM_PLAYERS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("ffplay", ("ffplay", "-nodisp", "-autoexit", "-loglevel", "error"), False),
    ("afplay", ("afplay",), False),
    ("mpv", ("mpv", "--no-video", "--really-quiet"), False),
    ("paplay", ("paplay",), False),
    ("xdg-open", ("xdg-open",), True),
    ("open", ("open",), True),
)
PLAYER_CHOICES = ("auto", "pygame", "simpleaudio", *(n for n, _, _ in SYSTEM_PLAYERS))


def system_player(which: Callable[[str], Optional[str]] = shutil.which, prefer: str = "auto") -> Optional[SubprocessPlayer]:
    for name, argv, detaches in SYSTEM_PLAYERS:
        if prefer not in ("auto", name):
            continue
        exe = which(argv[0])
        if exe and not (name == "open" and sys.platform != "darwin"):
            return SubprocessPlayer([exe, *argv[1:]], name=name, detaches=detaches)
    return None


def make_player(prefer: str = "auto", which: Callable[[str], Optional[str]] = shutil.which) -> Any:
    """A player: pygame or simpleaudio if installed (and chosen), else a system player command."""
    if prefer not in PLAYER_CHOICES:
        raise PlayerError(f"unknown player {prefer!r}; choose from {', '.join(PLAYER_CHOICES)}")
    if prefer in ("auto", "pygame"):
        try:
            return PygamePlayer()
        except Exception as exc:  # not installed, or no audio device
            if prefer == "pygame":
                raise PlayerError(f"pygame cannot play here: {exc}") from None
    if prefer in ("auto", "simpleaudio"):
        try:
            return SimpleaudioPlayer(fallback=system_player(which))
        except Exception as exc:
            if prefer == "simpleaudio":
                raise PlayerError(f"simpleaudio cannot play here: {exc}") from None
    player = system_player(which, prefer)
    if player is None:
        raise PlayerError("no way to play audio here: install pygame or simpleaudio (pip), or ffplay "
                          "(apt-get install ffmpeg), or run with --dry-run")
    return player


# =========================================================================== the player loop


@dataclass
class Decision:
    t: float
    event: str
    mood: Optional[str]
    confidence: Optional[float]
    reason: str
    track: Optional[str] = None
    playlist: Optional[str] = None
    previous: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        d = {"t": round(self.t, 3), "event": self.event, "reason": self.reason, "mood": self.mood,
             "confidence": None if self.confidence is None else round(self.confidence, 4)}
        for k in ("track", "playlist", "previous"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d


def print_json_line(decision: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(decision) + "\n")
    sys.stdout.flush()


from litefer.vision.video import largest_face  # noqa: E402  (shared with `litefer predict`)


def _probs(face: Any) -> Optional[dict[str, float]]:
    if face is None:
        return None
    p = face.probs if hasattr(face, "probs") else face["probs"]
    return {str(k): float(v) for k, v in dict(p).items()}


class MoodPlayer:
    """Frames in, play decisions out.

    Rules: nothing is decided before one full ``window`` of frames; the first mood
    starts a track; a different smoothed mood switches playlist once the current
    one has played for at least ``hold`` seconds (default: the window) and the mood's
    confidence reaches ``min_confidence``; when a track ends the next one comes from
    the current mood's playlist. Moods with no playlist (and no ``default``) keep the
    current music and are reported once as ``no-playlist``.
    """

    def __init__(self, recognizer: Callable[[np.ndarray], Sequence[Any]], playlists: PlaylistMap,
                 smoother: Optional[MoodSmoother] = None, player: Any = None,
                 chooser: Optional[TrackChooser] = None, hold: Optional[float] = None,
                 min_confidence: float = 0.0, emit: Optional[Callable[[dict], None]] = print_json_line):
        self.recognizer = recognizer
        self.playlists = playlists
        self.smoother = smoother if smoother is not None else MoodSmoother()
        self.player = player if player is not None else DryRunPlayer()
        self.chooser = chooser if chooser is not None else TrackChooser()
        self.hold = self.smoother.window if hold is None else float(hold)
        self.min_confidence = float(min_confidence)
        self.emit = emit
        self.decisions: list[dict[str, Any]] = []
        self.frames = 0
        self.current_mood: Optional[str] = None
        self.current_track: Optional[Path] = None
        self._t0: Optional[float] = None
        self._since: float = -math.inf
        self._track_end: Optional[float] = None
        self._reported_missing: Optional[str] = None

    # -- one frame
    def observe(self, t: float, frame: np.ndarray) -> list[dict[str, Any]]:
        faces = self.recognizer(frame)
        self.frames += 1
        return self.step(t, _probs(largest_face(list(faces))))

    def step(self, t: float, probs: Optional[dict[str, float]]) -> list[dict[str, Any]]:
        """Add one observation at time ``t`` and return the decisions it leads to."""
        if self._t0 is None:
            self._t0 = t
        self.smoother.update(t, probs)
        out: list[dict[str, Any]] = []
        if t - self._t0 < self.smoother.window - 1e-9:
            return out  # warming up: one full window first
        m = self.smoother.mood()
        ended = self._track_ended(t)
        if m is None:
            if ended and self.current_mood is not None:
                out += self._play(t, self.current_mood, None, "track-end")
            return out
        mood, conf = m
        if mood == self.current_mood:
            self._reported_missing = None
        if self.current_mood is None:
            if conf >= self.min_confidence:
                out += self._play(t, mood, conf, "start")
        elif mood != self.current_mood and conf >= self.min_confidence and t - self._since >= self.hold:
            out += self._play(t, mood, conf, "mood-change")
        elif ended:
            out += self._play(t, self.current_mood, conf if mood == self.current_mood else None, "track-end")
        return out

    def _track_ended(self, t: float) -> bool:
        if self.current_track is None:
            return False
        busy = self.player.busy()
        if busy is None:
            return self._track_end is not None and t >= self._track_end
        return not busy

    def _play(self, t: float, mood: str, conf: Optional[float], reason: str) -> list[dict[str, Any]]:
        name = self.playlists.playlist_name(mood)
        if name is None:
            if self._reported_missing == mood:
                return []
            self._reported_missing = mood
            return [self._record(Decision(t, "no-playlist", mood, conf, reason, previous=self.current_mood))]
        self._reported_missing = None
        track = self.chooser.choose(name, self.playlists.tracks(mood))
        previous = self.current_mood
        self.player.play(track)
        self.current_mood, self.current_track, self._since = mood, track, t
        dur = track_duration(track)
        self._track_end = t + dur if dur is not None else None
        return [self._record(Decision(t, "play", mood, conf, reason, track=self.playlists.relative(track),
                                      playlist=name, previous=previous))]

    def _record(self, d: Decision) -> dict[str, Any]:
        rec = d.to_dict()
        self.decisions.append(rec)
        if self.emit is not None:
            self.emit(rec)
        return rec

    # -- the loop
    def run(self, frames: Iterable[Any], clock: Optional[Callable[[], float]] = None,
            max_seconds: Optional[float] = None) -> list[dict[str, Any]]:
        """Consume ``frames`` — RGB arrays (timed by ``clock()``, default ``time.monotonic``)
        or ``(t, rgb)`` pairs — until they end or ``max_seconds`` of their time has passed.
        Returns every decision made (also passed to ``emit`` as they happen)."""
        clock = clock or time.monotonic
        start: Optional[float] = None
        try:
            for item in frames:
                if isinstance(item, tuple) and len(item) == 2:
                    t, frame = float(item[0]), item[1]
                else:
                    t, frame = float(clock()), item
                start = t if start is None else start
                if max_seconds is not None and t - start > max_seconds:
                    break
                self.observe(t, frame)
        finally:
            self.player.stop()
        return self.decisions


# =========================================================================== frame sources


# the frame sources are litefer.vision.video's (shared with `litefer predict`)
from litefer.vision.video import FrameSourceError  # noqa: E402


def video_frames(path: str | Path, sample_fps: float = 4.0) -> Iterator[tuple[float, np.ndarray]]:
    """``(t, rgb)`` from a video file, ``sample_fps`` frames per second of video time."""
    from litefer.vision.video import open_capture, read_frames
    cap, fps = open_capture(Path(path))
    try:
        got = 0
        for _, t, rgb, sampled in read_frames(cap, fps, sample_fps=sample_fps if sample_fps > 0 else None):
            if sampled:
                got += 1
                yield t, rgb
        if got == 0:
            raise FrameSourceError(f"video {path} has no readable frames")
    finally:
        cap.release()


def camera_frames(index: int = 0, sample_fps: float = 4.0,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[tuple[float, np.ndarray]]:  # pragma: no cover
    """``(t, rgb)`` from a camera, at most ``sample_fps`` frames per second (extra frames are dropped)."""
    from litefer.vision.video import open_capture, read_frames
    cap, _ = open_capture(int(index))
    try:
        for _, t, rgb, sampled in read_frames(cap, 25.0, sample_fps=sample_fps if sample_fps > 0 else None,
                                              clock=clock):
            if sampled:
                yield t, rgb
        raise FrameSourceError(f"camera {index} stopped delivering frames")
    finally:
        cap.release()
