"""The image files lightsr reads and writes, and its size guards: constants only, no imports, so that the
command-line parsers (``--help``) can read them without loading numpy or Pillow."""

# Input pixels above which an image is refused unless the caller raises the limit: a decompression-bomb
# guard (a few kB of PNG can claim 50,000 × 50,000 pixels). 40 MP is a large camera frame; its ×4 result
# (640 MP) already needs ~2 GB as 8-bit RGB.
DEFAULT_MAX_PIXELS = 40_000_000
# Output pixels above which an upscale is refused before it runs (``--outscale 1000`` on a small image would
# otherwise try to allocate tens of GB): the ×4 result of the largest image the input limit lets through.
DEFAULT_MAX_OUTPUT_PIXELS = 16 * DEFAULT_MAX_PIXELS

# Frames of an animation or a video the web page upscales (longer ones are for the command line): 20 s at 30 fps.
DEFAULT_MAX_FRAMES = 600

# File extensions read when a folder is given, and the formats they map to.
INPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".webp", ".tif", ".tiff", ".bmp")
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
           ".tiff": "TIFF", ".bmp": "BMP"}
# Formats that store 16 bits per channel / an alpha channel.
HIGH_BIT_DEPTH_FORMATS = {"PNG", "TIFF"}
ALPHA_FORMATS = {"PNG", "TIFF", "WEBP", "BMP"}

# Animated images: files of these formats may hold an animation, upscaled frame by frame into an animated file of
# one of them (GIF is written only for animated inputs).
ANIMATED_FORMATS = {".gif": "GIF", ".webp": "WEBP", ".png": "PNG", ".apng": "PNG"}
# Video files (read with PyAV, by extension), and the containers written: extension → FFmpeg's muxer.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                    ".wmv", ".flv", ".3gp", ".ogv")
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
# What `lightsr upscale` takes from folders and globs: images, animations and videos.
UPSCALE_EXTENSIONS = (*INPUT_EXTENSIONS, ".gif", ".apng", *VIDEO_EXTENSIONS)
