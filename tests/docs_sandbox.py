"""The world the documentation's commands run in (tests/test_docs.py): a folder that looks like the repository's
root, with small example files, and a warm ``lightsr``.

* **Files**: the names the docs use (``photo.jpg``, ``shots/``, ``scans/*.tif``, ``HASN_x4.pth``, ``clip.mp4``,
  ``anim.gif``, …) are small images cut from the research data (the video and the animation are generated), and
  the shared copies of the published checkpoints; ``configs/`` holds the shipped configs shrunk to two iterations
  on tiny patches (same networks, data folders, teachers and warm starts); ``../shared`` is a tiny copy of the
  research data's layout (two crops per benchmark set with their MATLAB-exact LR images, three per training
  folder); published weights come from a local mirror (``LIGHTSR_HUB_MIRROR``).
* **``lightsr``** on ``PATH`` is a client of a fork server: a Python process that imported torch and lightsr once
  forks a child per command, which runs ``lightsr.cli.main`` with the client's arguments, working directory,
  environment and standard streams (passed over a Unix socket), and exits with its status. A command costs its
  own work, not the 2–4 s of importing torch. Python blocks run in such a child too.
* **``pip``** on ``PATH`` installs nothing: it checks that every extra a ``pip install .[extra]`` or
  ``lightsr[extra]`` names exists in ``pyproject.toml`` (the test environment has them all) and refuses any other
  install, which a block that needs it must mark as not run.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETS = {"Set5": ("baby", "bird"), "Set14": ("barbara", "bridge"), "B100": None}  # None: the first two
HR_CROP = 48  # a multiple of 2, 3 and 4: LR images at every scale without a remainder
TRAIN_CROP = 64

# ------------------------------------------------------------------------------------------- fork server

# The client: standard library only, started with -SE (no site-packages, no PYTHON* variables): ~20 ms.
CLIENT = r'''
import json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ["LIGHTSR_DOCS_SERVER"])
msg = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
socket.send_fds(s, [struct.pack("!I", len(msg)) + msg], [0, 1, 2])
data = b""
while len(data) < 4:
    chunk = s.recv(4 - len(data))
    if not chunk:
        sys.exit(255)
    data += chunk
sys.exit(struct.unpack("!i", data)[0])
'''

PIP = r'''
import re, sys
from pathlib import Path
args = sys.argv[1:]
section = Path("pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
extras_known = set(re.findall(r"^([a-z]+) = \[", section, re.M))
if args[:1] != ["install"]:
    sys.exit("pip (docs test): only 'pip install' of lightsr's extras runs here; mark the block as not-run")
specs = [a for a in args[1:] if a != "-e"]
for spec in specs:
    m = re.fullmatch(r"(?:\.|lightsr)(?:\[([a-z,]+)\])?", spec)
    if not m:
        sys.exit(f"pip (docs test): {spec!r} is not lightsr or one of its extras; mark the block as not-run")
    unknown = set((m[1] or "").split(",")) - {""} - extras_known
    if unknown:
        sys.exit(f"pip (docs test): no extra {', '.join(sorted(unknown))} in pyproject.toml")
print(f"pip (docs test): {' '.join(specs)}: extras known, nothing installed")
'''


def _serve(sock_path: str) -> None:
    """The server's loop (in its own process): one command at a time, each in a forked child."""
    # Everything heavy is imported here once, before the first fork: the children start with it.
    import lightsr.cli
    import lightsr.commands.eval
    import lightsr.commands.train
    import lightsr.commands.upscale
    import lightsr.evaluate
    import lightsr.hub
    import lightsr.train.trainer
    import lightsr.upscaler  # noqa: F401

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        try:
            _handle(conn)
        except Exception:  # a broken request must not stop the server
            traceback.print_exc()
        finally:
            conn.close()


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    (size,) = struct.unpack("!I", data[:4])
    body = data[4:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("client went away")
        body += chunk
    return json.loads(body), list(fds)


def _handle(conn: socket.socket) -> None:
    req, fds = _recv_request(conn)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: the command, then exit with its status
        code = 1
        try:
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            sys.argv = ["lightsr", *req["argv"]]
            code = _run(req["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)
    for fd in fds:
        os.close(fd)
    # Wait for the child; if the client goes away (killed on a timeout), so does the child.
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        readable, _, _ = select.select([conn], [], [], 0.02)
        if readable and not conn.recv(1, socket.MSG_PEEK):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
    conn.sendall(struct.pack("!i", code if code >= 0 else 128 - code))


def _run(argv: list[str]) -> int:
    if argv[:1] == ["--docs-python"]:  # a Python block of the docs, as a script
        import runpy

        runpy.run_path(argv[1], run_name="__main__")
        return 0
    from lightsr.cli import main

    return main(argv)


@contextmanager
def fork_server(folder: Path) -> Iterator[Path]:
    """Start the server (a child process of the test) and yield the folder of its client executables."""
    import subprocess

    # A Unix socket's path has at most ~100 characters: a short folder of its own, not the test's temporary one.
    sock_dir = Path(tempfile.mkdtemp(prefix="lsr-", dir="/tmp" if os.path.isdir("/tmp") else None))
    sock = sock_dir / "s"
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", f"import docs_sandbox; docs_sandbox._serve({str(sock)!r})"],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"the docs fork server did not start (exit status {proc.poll()})")
        (folder / "socket").write_text(str(sock))
        _script(bin_dir / "lightsr", CLIENT)
        _script(bin_dir / "pip", PIP)
        for name in ("python", "python3"):  # a script, not a link: a venv's python finds its venv by its own path
            path = bin_dir / name
            path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
            path.chmod(0o755)
        yield bin_dir
    finally:
        proc.kill()
        proc.wait(timeout=30)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _script(path: Path, code: str) -> None:
    path.write_text(f"#!{sys.executable} -SE\n{code}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# ------------------------------------------------------------------------------------------- the files


def _crop(img, side: int):  # a centred square (or the largest that fits)
    h, w = img.shape[:2]
    side = min(side, h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return img[y:y + side, x:x + side]


def make_shared(shared: Path, dst: Path) -> None:
    """A tiny copy of the research data's layout, cut from the real data in ``shared``."""
    import numpy as np
    from PIL import Image

    from lightsr.resize import imresize

    for name, wanted in SETS.items():
        hr_dir = shared / "data" / "benchmark" / name / "HR"
        files = sorted(hr_dir.glob("*.png"))
        picked = [hr_dir / f"{w}.png" for w in wanted] if wanted else files[:2]
        for f in picked:
            hr = _crop(np.asarray(Image.open(f)), HR_CROP)
            out = dst / "data" / "benchmark" / name
            (out / "HR").mkdir(parents=True, exist_ok=True)
            Image.fromarray(hr).save(out / "HR" / f.name)
            for k in (2, 3, 4):
                (out / "LR_bicubic" / f"X{k}").mkdir(parents=True, exist_ok=True)
                lr = imresize(hr, 1 / k)
                Image.fromarray(lr).save(out / "LR_bicubic" / f"X{k}" / f"{f.stem}x{k}.png")
    for folder in sorted((shared / "data" / "train").iterdir()):
        if not folder.is_dir():
            continue
        out = dst / "data" / "train" / folder.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.glob("*.png"))[:3]:
            img = np.asarray(Image.open(f).convert("RGB"))
            Image.fromarray(_crop(img, TRAIN_CROP)).save(out / f.name)
    (dst / "weights").mkdir(parents=True, exist_ok=True)
    for f in sorted((shared / "weights").iterdir()):
        (dst / "weights" / f.name).symlink_to(f.resolve())


def make_files(root: Path, shared: Path) -> None:
    """The example files the docs name, in the folder that plays the repository's root."""
    import numpy as np
    from PIL import Image

    def photo(name: str, w: int, h: int) -> np.ndarray:
        img = np.asarray(Image.open(shared / "data" / "benchmark" / "Set14" / "HR" / f"{name}.png").convert("RGB"))
        return img[:h, :w].copy()

    rgb = photo("barbara", 40, 32)
    Image.fromarray(rgb).save(root / "photo.jpg", quality=80)
    Image.fromarray(rgb).save(root / "photo.png")
    Image.fromarray(photo("baboon", 36, 28)).save(root / "render.png")
    Image.fromarray(photo("comic", 32, 32)).save(root / "in.png")
    alpha = np.zeros((32, 40), np.uint8)
    alpha[4:28, 6:34] = 255
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(root / "logo.png")
    for rel, name in (("shots/a.png", "lenna"), ("shots/b.jpg", "pepper"), ("shots/trip/c.png", "zebra")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(name, 32, 24)).save(root / rel)
    (root / "scans").mkdir()
    gray16 = (photo("monarch", 40, 30)[..., 1].astype(np.uint16) * 257)
    Image.fromarray(gray16).save(root / "scans" / "page1.tif")
    Image.fromarray(photo("ppt3", 40, 30)).save(root / "scans" / "page2.tif")
    # compare's crop in the docs (320,250,100,100) needs an image of skimage's coffee.png size (600×400).
    big = Image.fromarray(photo("barbara", 150, 100)).resize((600, 400), Image.Resampling.BICUBIC)
    big.save(root / "coffee.png")
    (root / "HASN_x4.pth").symlink_to((shared / "weights" / "HASN_x4_official.pth").resolve())
    # A two-second video with sound and an animated GIF, for the docs' video and animation commands.
    from media import frames_rgba, make_video, save_animation

    make_video(root / "clip.mp4", n=50, w=32, h=24)
    save_animation(root / "anim.gif", frames_rgba(6, h=24, w=32), [80] * 6, loop=0)


def shrink_config(raw: dict) -> dict:
    """A shipped config reduced to two iterations on tiny patches: the same network, scale, data folders,
    degradations, teacher and warm start, so that the command runs as written in seconds."""
    scale = int((raw.get("model") or {}).get("scale", 4))
    t = raw.setdefault("train", {}) or {}
    raw["train"] = t
    t.update(max_iters=2, batch_size=2, threads=1, compile=False)
    s = t.get("scheduler") or {}
    if s:
        s.pop("warmup_start_factor", None)
        if "warmup_iters" in s:
            s["warmup_iters"] = 0
        if s.get("milestones"):
            s["milestones"] = [1]
    d = raw.setdefault("data", {}) or {}
    raw["data"] = d
    d.update(patch_size=8 * scale, repeat=1, num_workers=0)
    d.pop("prefetch_factor", None)
    v = raw.setdefault("val", {}) or {}
    raw["val"] = v
    if v.get("every", 1):
        v["every"] = 2
    raw["log"] = dict(raw.get("log") or {}, every=1)
    raw["checkpoint"] = dict(raw.get("checkpoint") or {}, every=2)
    return raw


def make_repo(root: Path, shared: Path, tiny_shared: Path) -> None:
    """The folder that plays the repository's root: copies of what commands read or write beside, the example
    files, shrunk configs; read-only parts of the repository (src, training) linked."""
    import yaml

    root.mkdir(parents=True)
    for name in ("examples", "scripts", "benchmarks"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for name in ("src", "training"):
        (root / name).symlink_to(REPO / name)
    (root / "docs" / "img").mkdir(parents=True)
    for f in sorted((REPO / "configs").rglob("*.yaml")):
        dst = root / "configs" / f.relative_to(REPO / "configs")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(yaml.safe_dump(shrink_config(yaml.safe_load(f.read_text()) or {}), sort_keys=False))
    # The DIV2K recipes' folders (datasets/DIV2K/DIV2K_train_HR, datasets/benchmark).
    div2k = root / "datasets" / "DIV2K" / "DIV2K_train_HR"
    div2k.mkdir(parents=True)
    for f in sorted((tiny_shared / "data" / "train" / "T91").glob("*.png")):
        shutil.copy(f, div2k / f.name)
    (root / "datasets" / "benchmark").symlink_to(tiny_shared / "data" / "benchmark")
    make_files(root, shared)


@contextmanager
def weights_mirror(folder: Path, shared: Path) -> Iterator[str]:
    """A local HTTP mirror of the published checkpoints (the shared copies under their original file names)."""
    import urllib.parse

    from lightsr.hub import published

    copies = {"hasn_x4_official": "HASN_x4_official.pth",
              "elan_light_x4_friedricelab": "ELAN-light_x4_FriedRiceLab.pth"}
    folder.mkdir(parents=True)
    for name, (_spec, entry) in published().items():
        if name in copies:
            (folder / Path(urllib.parse.urlparse(entry.url).path).name).symlink_to(
                (shared / "weights" / copies[name]).resolve())

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
