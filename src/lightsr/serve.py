"""``lightsr serve``: a local web page over :class:`lightsr.Upscaler` and :func:`lightsr.figures.compare_figure`.

Two tabs. **Upscale**: drop one or more images, animated GIFs or short videos, pick a model (bundled weights,
published weights — downloaded on first use — and any checkpoint named on the command line), precision and tiling;
the page shows the result beside the input (a before/after slider and a zoomed crop, of a video's first frame) and
offers the full-resolution files, written by :meth:`lightsr.Upscaler.upscale_file` (images) and
:meth:`lightsr.Upscaler.upscale_video` (animations, videos: MP4, H.264, with the input's audio) exactly as
``lightsr upscale`` writes them. **Compare**: several models on one HR image (its bicubic downscale is their
input), with PSNR.

Nothing here loads, tiles or writes images by itself: it chooses files and calls the library. Uploads and outputs
live in one temporary folder, removed when the server stops; users pick from lists and upload files, they never
type a path. The same pixel limits and decode checks as the command line apply; a bad file is an error message in
the page and the server keeps serving. One job computes at a time, so two browser tabs cannot exhaust memory;
published weights are downloaded before a job waits for its turn (with their own deadline), so a slow or stalled
mirror holds up only the jobs that need those weights. Uploads are capped (by default at the size of an
uncompressed 16-bit RGBA image of ``max_pixels``); the port and the options are checked before the server starts.
Needs ``pip install "lightsr[web]"`` (Gradio).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightsr.errors import LightSRError, UsageError
from lightsr.formats import (
    ANIMATED_FORMATS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    FORMATS,
    VIDEO_EXTENSIONS,
)

__all__ = ["ModelEntry", "WebApp", "build_app", "check_listen", "default_upload_limit", "model_entries", "start"]

# Preview images shown in the page are at most this many pixels on their long side (the download is full size).
PREVIEW_SIDE = 1600
# Upscalers kept loaded (model × precision × tiling); older ones are dropped.
_CACHE = 3
# An upload may hold this many bytes per allowed pixel (an uncompressed 16-bit RGBA TIFF, the largest file an image
# of that many pixels needs), plus this much for headers and metadata (ICC profiles, EXIF).
_UPLOAD_BYTES_PER_PIXEL = 8
_UPLOAD_SLACK = 1 << 20


def default_upload_limit(max_pixels: int | None) -> int | None:
    """Bytes an uploaded file may have when ``max_pixels`` bounds its pixels (None: no limit either)."""
    return None if max_pixels is None else max_pixels * _UPLOAD_BYTES_PER_PIXEL + _UPLOAD_SLACK


def check_listen(host: str, port: int) -> None:
    """A one-line :class:`UsageError` now if ``host:port`` cannot be listened on (busy, no such address, a
    privileged port), instead of a traceback from the web server later."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host}: not an address of this computer ({getattr(e, 'strerror', None) or e})"
                         ) from None
    with socket.socket(family, kind, proto) as probe:
        if os.name != "nt":  # as the web server binds: a port left in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UsageError(f"--port {port}: already in use on {host}; stop the program using it or choose "
                                 f"another port (e.g. --port {port + 1 if port < 65535 else port - 1})") from None
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None


def _gradio() -> Any:
    # Nothing leaves this computer: no usage analytics (Gradio sends them unless told not to).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as e:
        raise LightSRError(f"lightsr serve needs Gradio: pip install \"lightsr[web]\" ({e})") from None
    return gr


@dataclass(frozen=True)
class ModelEntry:
    """One choice in the model list: what :func:`lightsr.sources.load_network` gets."""

    label: str
    name: str | None  # a network (bundled weights at ``scale``)
    weights: str | None  # a checkpoint file, or published weights by name
    scale: int | None


def model_entries(checkpoints: Sequence[str | os.PathLike] = ()) -> list[ModelEntry]:
    """Bundled weights of every network and scale, published weights, then the given checkpoint files."""
    from lightsr.bundled import bundled_names, bundled_weights, default_upscale_model, intended_input
    from lightsr.hub import published

    out = []
    default = default_upscale_model(4)
    for name in sorted(bundled_names(), key=lambda n: n != default):
        for scale, path in sorted(bundled_weights(name).items(), reverse=True):
            tag = " (default)" if name == default and scale == 4 else ""
            out.append(ModelEntry(f"{name} ×{scale}, bundled{tag}: for {intended_input(path)}", name, None, scale))
    for key, (spec, entry) in sorted(published().items()):
        out.append(ModelEntry(f"{key}: {spec.name} ×{entry.scale}, published (downloaded on first use)", None, key,
                              entry.scale))
    for path in checkpoints:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"--weights {path}: no such file")
        out.append(ModelEntry(f"{p.name} (checkpoint)", None, str(p.resolve()), None))
    return out


def _preview(path: Path, size: tuple[int, int] | None = None) -> Any:
    """An 8-bit RGB(A) PIL image of a file, fitted within :data:`PREVIEW_SIDE` (or resized to ``size``)."""
    from PIL import Image

    from lightsr.imageio import load_image, to_uint8

    data = load_image(path, max_pixels=None)
    px = to_uint8(data.pixels)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[px.shape[2]]
    im = Image.fromarray(px[..., 0] if px.shape[2] == 1 else px, mode).convert("RGBA" if mode in ("LA", "RGBA")
                                                                                else "RGB")
    if size is not None:
        im = im.resize(size, Image.Resampling.BICUBIC)
    if max(im.size) > PREVIEW_SIDE:
        im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    return im


def _first_frame(path: Path) -> Path:
    """A video's first frame as a PNG beside it (what the previews show of a video)."""
    from PIL import Image

    from lightsr.video import VideoOptions, VideoReader

    with VideoReader(path, VideoOptions(stop=1), max_pixels=None) as reader:
        picture = next(iter(reader))
    out = path.with_name(f".{path.name}.first.png")
    Image.fromarray(picture.pixels if picture.pixels.dtype.itemsize == 1 else (picture.pixels >> 8).astype("uint8")
                    ).save(out)
    return out


def _frames(path: Path) -> int:
    """Frames an animation or a video holds (a video's stated or estimated count; 0 when unknown)."""
    from lightsr.animation import probe

    if path.suffix.lower() in VIDEO_EXTENSIONS:
        from lightsr.video import probe as probe_video

        return probe_video(path).frames or 0
    info = probe(path)
    return info.n_frames if info is not None else 1


def _zoom(before: Any, after: Any, side: int = 128, zoom: int = 3) -> Any:
    """Side by side, nearest-neighbour ×``zoom``: the square of ``after`` where it differs most from ``before``."""
    import numpy as np
    from PIL import Image

    from lightsr.figures import pick_crop

    a = np.asarray(before.convert("RGB"))
    b = np.asarray(after.convert("RGB"))
    x, y, w, h = pick_crop(b, a, min(side, *a.shape[:2]))
    tiles = [Image.fromarray(img[y:y + h, x:x + w]).resize((w * zoom, h * zoom), Image.Resampling.NEAREST)
             for img in (a, b)]
    out = Image.new("RGB", (2 * w * zoom + 8, h * zoom), "white")
    out.paste(tiles[0], (0, 0))
    out.paste(tiles[1], (w * zoom + 8, 0))
    return out


class WebApp:
    """The page's actions, independent of Gradio (tests call them directly too)."""

    def __init__(self, entries: Sequence[ModelEntry], workdir: str | os.PathLike, device: str = "auto",
                 threads: int | None = None, max_memory: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
                 download_timeout: float | None = None, max_frames: int | None = DEFAULT_MAX_FRAMES) -> None:
        from lightsr.device import resolve_device
        from lightsr.download import deadline_seconds
        from lightsr.tiling import parse_memory

        if not entries:
            raise UsageError("no models to serve")
        resolve_device(device)  # the options' one-line errors now, not in the page at the first job
        if max_memory is not None:
            parse_memory(max_memory)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise UsageError(f"--threads {threads}: expected a positive integer")
        self.download_timeout = deadline_seconds(download_timeout)
        self.entries = {e.label: e for e in entries}
        self.workdir = Path(workdir)
        self.device, self.threads, self.max_memory = device, threads, max_memory
        self.max_pixels, self.max_output_pixels = max_pixels, max_output_pixels
        self.max_frames = max_frames
        self._upscalers: OrderedDict[tuple, Any] = OrderedDict()
        self._nets: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # the two caches above
        self._loading: dict[str, threading.Lock] = {}  # one load (and download) per model choice at a time
        self._running = threading.Lock()  # one job computes at a time

    @property
    def labels(self) -> list[str]:
        return list(self.entries)

    def network(self, label: str) -> Any:
        """The network of a model choice (loaded once; the last few are kept).

        Published weights are downloaded here, outside the lock that lets one job compute at a time, within the
        app's download deadline: a stalled mirror holds up only the jobs that need those weights."""
        from lightsr.download import download_timeout
        from lightsr.sources import load_network

        if label not in self.entries:
            raise UsageError(f"unknown model {label!r}")
        with self._lock:
            if label in self._nets:
                self._nets.move_to_end(label)
                return self._nets[label]
            loading = self._loading.setdefault(label, threading.Lock())
        with loading:
            with self._lock:
                net = self._nets.get(label)
            if net is None:
                e = self.entries[label]
                with download_timeout(self.download_timeout):
                    net = load_network(e.weights or e.name, e.scale, option="")
            with self._lock:
                self._nets[label] = net
                self._nets.move_to_end(label)
                while len(self._nets) > _CACHE:
                    self._nets.popitem(last=False)
        return net

    def upscaler(self, label: str, precision: str = "auto", tile: int | None = None, on_progress: Any = None) -> Any:
        """The :class:`lightsr.Upscaler` for a model choice (built once, kept for the next request)."""
        return self._upscaler(label, self.network(label), precision, tile, on_progress)

    def _upscaler(self, label: str, net: Any, precision: str, tile: int | None, on_progress: Any = None) -> Any:
        from lightsr.upscaler import Upscaler

        key = (label, precision, tile)
        with self._lock:
            up = self._upscalers.pop(key, None)
            if up is None:
                up = Upscaler(net, tile=tile, device=self.device, precision=precision, max_memory=self.max_memory,
                              threads=self.threads, max_output_pixels=self.max_output_pixels)
            self._upscalers[key] = up
            while len(self._upscalers) > _CACHE:
                self._upscalers.popitem(last=False)
        up.on_progress = on_progress
        return up

    @contextlib.contextmanager
    def _turn(self, on_progress: Callable[[float, str], None] | None = None) -> Iterator[None]:
        """This job's turn to compute (one at a time: memory); the page says so while it waits."""
        if not self._running.acquire(blocking=False):
            if on_progress is not None:
                on_progress(0.0, "waiting for the job before this one")
            self._running.acquire()
        try:
            yield
        finally:
            self._running.release()

    def _job_dir(self) -> Path:
        d = self.workdir / "outputs" / uuid.uuid4().hex[:12]
        d.mkdir(parents=True)
        return d

    def upscale(self, files: Sequence[str | os.PathLike], label: str, precision: str = "auto",
                tile: int | None = None, on_progress: Any = None) -> tuple[list[Path], tuple[Any, Any] | None, Any]:
        """Upscale uploaded files: ``(output files, (before, after) previews of the first, its zoomed crop)``.

        Images keep their format (PNG for formats lightsr cannot write), animations theirs (GIF, WebP, PNG), videos
        become MP4 (H.264, their audio copied); outputs are named like ``lightsr upscale`` names them in a folder
        (``<name>_x<scale>.<ext>``). Animations and videos of more than ``max_frames`` frames are refused before
        any work."""
        if not files:
            raise UsageError("add at least one image or video")
        for f in files:
            if self.max_frames is not None and Path(f).suffix.lower() in (*VIDEO_EXTENSIONS, *ANIMATED_FORMATS):
                n = _frames(Path(f))
                if n > self.max_frames:
                    raise UsageError(f"{f}: {n} frames; the page upscales up to {self.max_frames} (the command line "
                                     "takes any length: lightsr upscale)")
        net = self.network(label)
        with self._turn(on_progress):
            return self._upscale(files, label, net, precision, tile, on_progress)

    def _upscale(self, files: Sequence[str | os.PathLike], label: str, net: Any, precision: str, tile: int | None,
                 on_progress: Any) -> tuple[list[Path], tuple[Any, Any] | None, Any]:
        from lightsr.pipeline import kind_of

        up = self._upscaler(label, net, precision, tile)
        out_dir = self._job_dir()
        outputs = []
        for i, f in enumerate(files):
            src = Path(f)
            kind = kind_of(src)
            ext = {"video": ".mp4", "animation": src.suffix.lower()}.get(
                kind, src.suffix.lower() if src.suffix.lower() in FORMATS else ".png")
            dst = out_dir / f"{src.stem}_x{up.output_scale:g}{ext}"
            if dst.exists():  # two uploads of one name: keep both
                dst = out_dir / f"{src.stem}_{i}_x{up.output_scale:g}{ext}"

            def report(done: int, total: int, what: str, i: int = i, name: str = src.name) -> None:
                if on_progress is not None:
                    on_progress((i + done / max(total, 1)) / len(files), f"{name}: {what} {done}/{total}")

            try:
                if kind == "image":
                    up.on_progress = report
                    up.upscale_file(src, dst, max_pixels=self.max_pixels)
                else:
                    up.upscale_video(src, dst, max_pixels=self.max_pixels,
                                     on_frames=lambda done, total, r=report: r(done, total, "frames"))
            finally:
                up.on_progress = None
            outputs.append(dst)
        first_out, first_in = outputs[0], Path(files[0])
        if first_out.suffix.lower() in VIDEO_EXTENSIONS:
            first_out, first_in = _first_frame(first_out), _first_frame(first_in)
        after = _preview(first_out)
        before = _preview(first_in, size=after.size)
        return outputs, (before, after), _zoom(before, after)

    def compare(self, image: str | os.PathLike, labels: Sequence[str], scale: int = 4) -> tuple[Path, list[str]]:
        """``lightsr compare`` on an HR image: the figure and one ``label: PSNR`` line per panel."""
        from lightsr.figures import compare_figure, read_rgb
        from lightsr.imageio import load_image

        if not labels:
            raise UsageError("choose at least one model")
        with self._turn():
            load_image(image, max_pixels=self.max_pixels)  # the same guards as an upscale, before any model loads
        models = []
        for label in labels:
            net = self.network(label)
            if net.scale != scale:
                raise UsageError(f"{label} is ×{net.scale}; choose models of ×{scale} (or change the scale)")
            models.append((label.split(",")[0].split(" (")[0], net))
        with self._turn():
            out = self._job_dir() / "compare.png"
            res = compare_figure(read_rgb(image), models, out, scale=scale, dpi=80)
        return res.path, [f"{p.title}: {p.psnr:.2f} dB" for p in res.panels if p.psnr is not None]


def _for_page(e: BaseException, uploads: Sequence[str]) -> str:
    """The one-line error for the page, naming uploads by their file names (not the server's folders)."""
    if not isinstance(e, LightSRError):
        return "out of memory: try tiling with a smaller tile size"
    msg = str(e)
    for f in uploads:
        msg = msg.replace(str(Path(f)), Path(f).name)
    return msg


def build_app(app: WebApp) -> Any:
    """The Gradio page for ``app``; errors reach the page as messages, the server keeps running."""
    gr = _gradio()
    from lightsr.runtimes.int8 import available as int8_available

    def run_upscale(files: list[str] | None, label: str, precision: str, tiling: str, tile: float,
                    progress: Any = gr.Progress()) -> tuple[Any, Any, list[str]]:  # noqa: B008 (Gradio's way)
        try:
            outputs, pair, crop = app.upscale(files or [], label, precision,
                                              None if tiling == "auto" else 0 if tiling == "off" else int(tile),
                                              on_progress=lambda f, desc: progress(f, desc=desc))
        except (LightSRError, MemoryError) as e:
            raise gr.Error(_for_page(e, files or [])) from None
        return pair, crop, [str(p) for p in outputs]

    def run_compare(image: str | None, labels: list[str], scale: float) -> tuple[str, str]:
        try:
            if not image:
                raise UsageError("add an image")
            path, lines = app.compare(image, labels or [], int(scale))
        except (LightSRError, MemoryError) as e:
            raise gr.Error(_for_page(e, [image] if image else [])) from None
        return str(path), "\n".join(lines)

    with gr.Blocks(title="lightsr") as demo:
        gr.Markdown("# lightsr — lightweight super-resolution\nImages stay on this computer; outputs are removed "
                    "when the server stops.")
        with gr.Tab("Upscale"):
            with gr.Row():
                with gr.Column():
                    files = gr.File(label="Images, animations, short videos", file_count="multiple",
                                    type="filepath", file_types=[*FORMATS, *ANIMATED_FORMATS, *VIDEO_EXTENSIONS])
                    model = gr.Dropdown(app.labels, value=app.labels[0], label="Model")
                    precision = gr.Radio(["auto", "fp32", "bf16", *(["int8"] if int8_available() else [])],
                                         value="auto", label="Precision",
                                         info="auto: bf16 where this CPU/GPU computes it natively, else fp32"
                                              + ("; int8: OpenVINO on the CPU, faster, within 0.05 dB (built on "
                                                 "first use, about a minute)" if int8_available() else ""))
                    with gr.Row():
                        tiling = gr.Radio(["auto", "off", "size"], value="auto", label="Tiling")
                        tile = gr.Number(value=256, precision=0, minimum=16, label="Tile size (input pixels)")
                    go = gr.Button("Upscale", variant="primary", elem_id="upscale-button")
                with gr.Column():
                    slider = gr.ImageSlider(label="Before / after (first image)", type="pil")
                    crop = gr.Image(label="Zoomed crop: bicubic | model", type="pil")
                    downloads = gr.File(label="Full-resolution outputs", file_count="multiple")
            # No queue limit here: WebApp runs one job's computation at a time itself, after the job's weights are
            # loaded (a download must not hold up the jobs of other models).
            go.click(run_upscale, [files, model, precision, tiling, tile], [slider, crop, downloads],
                     api_name="upscale", concurrency_limit=None)
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column():
                    image = gr.File(label="HR image (the models get its bicubic downscale)", type="filepath",
                                    file_types=list(FORMATS))
                    chosen = gr.CheckboxGroup(app.labels, value=[app.labels[0]], label="Models")
                    scale = gr.Radio([2, 3, 4], value=4, label="Scale")
                    go2 = gr.Button("Compare", variant="primary", elem_id="compare-button")
                with gr.Column():
                    figure = gr.Image(label="Crops", type="filepath")
                    scores = gr.Textbox(label="PSNR (Y) against the HR image", lines=4)
            go2.click(run_compare, [image, chosen, scale], [figure, scores], api_name="compare",
                      concurrency_limit=None)
    demo.queue(default_concurrency_limit=1)
    return demo


class Server:
    """A running app: its URL, and :meth:`close` to stop it and remove its files."""

    def __init__(self, demo: Any, workdir: Path, url: str, previous_temp: str | None = None) -> None:
        self.demo, self.workdir, self.url = demo, workdir, url
        self._previous_temp = previous_temp

    def close(self) -> None:
        try:
            self.demo.close()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            _restore_temp(self.workdir, self._previous_temp)


_TEMP = "GRADIO_TEMP_DIR"


def _restore_temp(workdir: Path, previous: str | None) -> None:
    """Give back the upload folder setting this server took (unless another server has taken it since)."""
    if os.environ.get(_TEMP) == str(workdir / "uploads"):
        if previous is None:
            os.environ.pop(_TEMP, None)
        else:
            os.environ[_TEMP] = previous


def start(checkpoints: Sequence[str] = (), host: str = "127.0.0.1", port: int = 7860, block: bool = True,
          max_upload_size: int | str | None = "auto", on_start: Callable[[str], None] | None = None,
          **app_options: Any) -> Server:
    """Start the page on ``host:port``; ``block`` serves until interrupted, then cleans up.

    ``max_upload_size``: bytes an uploaded file may have (``"auto"``: :func:`default_upload_limit` of the
    ``max_pixels`` option; None: no limit). The address, the port and the options are checked first: a problem
    is a one-line :class:`UsageError` before anything starts. ``on_start(url)`` is called once the page serves.
    """
    if max_upload_size == "auto":
        max_upload_size = default_upload_limit(app_options.get("max_pixels", DEFAULT_MAX_PIXELS))
    elif max_upload_size is not None and (not isinstance(max_upload_size, int) or max_upload_size < 1):
        raise UsageError(f"--max-upload-size {max_upload_size!r}: expected a size in bytes ≥ 1, or no limit")
    check_listen(host, port)
    entries = model_entries(checkpoints)
    workdir = Path(tempfile.mkdtemp(prefix="lightsr-serve-"))
    previous = os.environ.get(_TEMP)
    try:
        app = WebApp(entries, workdir, **app_options)  # checks the options
        # Gradio keeps uploads in its cache folder (read when a file arrives): put it inside ours, so that stopping
        # removes everything.
        os.environ[_TEMP] = str(workdir / "uploads")
        demo = build_app(app)
        try:
            demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, show_error=True, quiet=True,
                        allowed_paths=[str(workdir / "outputs")], inbrowser=False, max_file_size=max_upload_size)
        except OSError as e:  # the port was taken between the check and now
            raise UsageError(f"--port {port}: cannot start the server ({' '.join(str(e).split())[:160]})") from None
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        _restore_temp(workdir, previous)
        raise
    server = Server(demo, workdir, f"http://{host}:{port}/", previous)
    if on_start is not None:
        on_start(server.url)
    if block:
        try:
            demo.block_thread()
        finally:
            server.close()
    return server
