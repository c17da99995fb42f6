"""The image files lightsr reads and writes, and its size guards: constants only, no imports, so that the
command-line parsers (``--help``) can read them without loading numpy or Pillow."""

# Input pixels above which an image is refused unless the caller raises the limit: a decompression-bomb
# guard (a few kB of PNG can claim 50,000 × 50,000 pixels). 40 MP is a large camera frame; its ×4 result
# (640 MP) already needs ~2 GB as 8-bit RGB.
DEFAULT_MAX_PIXELS = 40_000_000
# Output pixels above which an upscale is refused before it runs (``--outscale 1000`` on a small image would
# otherwise try to allocate tens of GB): the ×4 result of the largest image the input limit lets through.
DEFAULT_MAX_OUTPUT_PIXELS = 16 * DEFAULT_MAX_PIXELS

# File extensions read when a folder is given, and the formats they map to.
INPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".webp", ".tif", ".tiff", ".bmp")
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
           ".tiff": "TIFF", ".bmp": "BMP"}
# Formats that store 16 bits per channel / an alpha channel.
HIGH_BIT_DEPTH_FORMATS = {"PNG", "TIFF"}
ALPHA_FORMATS = {"PNG", "TIFF", "WEBP", "BMP"}
