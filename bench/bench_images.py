"""How fast reconciler.images.prepare() turns camera-sized JPEGs into upload-sized ones.

Generates photo-like 6000x4000 JPEGs (gradients under Gaussian noise, quality 90, with EXIF
and GPS as a phone writes them), so the entropy decoding that dominates a real decode costs what
it would on a real photo. They are cached in a temp folder between runs.

Three ways through each file, interleaved in this process, median milliseconds per image:
- naive: Image.open().convert("RGB").resize((648, 432), LANCZOS), saved as JPEG;
- floor: Image.open(); draft("RGB", (648, 432)); load() -- the cheapest decode there is;
- prepare: the real pipeline.
Targets: naive/prepare >= 3.5 and prepare/floor <= 1.3. Then a child process runs prepare()
over every file and reports its peak RSS (target < 150 MB).

The memory budget: four 63-megapixel RGBA PNGs (9000x7000, cached too) prepared on four
threads, as the executor does at the default concurrency, in two fresh child processes: one
with the shared decode budget (images.DECODE_BUDGET) as shipped, one with it made unlimited.
Target: the budgeted peak RSS under 800 MB; the ratio to the unbudgeted peak is printed.

Face framing (crop = "face"): 6000x4000 JPEGs of the astronaut portrait in tests/data,
upscaled so her face is about a fifth of the height, placed at a different offset in each,
under sensor-like noise (cached too). Three ways through each, interleaved: naive (as above,
no crop), prepare with crop = "none" and prepare with crop = "face". Targets: face framing
adds at most 60 ms per image at the median (face - none), a face-framed prepare is still at
least 2.5x faster than naive, and a child process preparing all of them with crop = "face"
peaks under 200 MB RSS.

    python bench/bench_images.py [--count 40] [--memory-only] [--face-only]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from reconciler.images import prepare

SIZE = (6000, 4000)
TARGET = (648, 432)
QUALITY = 90
SPEEDUP_TARGET = 3.5
FLOOR_TARGET = 1.3
RSS_TARGET_MB = 150

BIG_PNG_SIZE = (9000, 7000)  # 63 megapixels, just under images.MAX_PIXELS
BIG_PNG_COUNT = 4
BIG_PNG_WORKERS = 4  # the default concurrency
BUDGET_RSS_TARGET_MB = 800


def photo_like(index: int) -> Image.Image:
    """Smooth gradients (sky, skin, walls) under sensor-like noise, seeded; each index differs."""
    width, height = SIZE
    ramp = Image.linear_gradient("L")
    bands = [
        ramp.rotate(angle, resample=Image.Resampling.BILINEAR).resize(SIZE)
        for angle in (index * 37 % 360, index * 73 % 360 + 90, index * 11 % 360 + 180)
    ]
    rng = random.Random(index)
    noise = [Image.frombytes("L", SIZE, rng.randbytes(width * height)) for _ in bands]
    return Image.merge("RGB", [Image.blend(b, n, 0.25) for b, n in zip(bands, noise, strict=True)])


def phone_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "BenchPhone"  # Make
    exif[0x0112] = 1  # Orientation
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 22.0, 12.0)
    gps[3], gps[4] = "E", (4.0, 53.0, 24.0)
    return exif.tobytes()


def corpus(count: int, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"photo-{index:03d}.jpg"
        if not path.exists():
            partial = path.with_suffix(".part")
            photo_like(index).save(partial, "JPEG", quality=QUALITY, exif=phone_exif())
            partial.replace(path)
        paths.append(path)
    return paths


def naive(path: Path) -> None:
    with Image.open(path) as im:
        small = im.convert("RGB").resize(TARGET, Image.Resampling.LANCZOS)
        small.save(io.BytesIO(), "JPEG", quality=QUALITY)


def floor(path: Path) -> None:
    with Image.open(path) as im:
        im.draft("RGB", TARGET)
        im.load()


def ours(path: Path) -> None:
    prepare(path)


def median_ms(runs: dict[str, Callable[[Path], None]], paths: list[Path]) -> dict[str, float]:
    """Median time per image for each way, run image by image in rotating order, so that load
    from other processes on a shared machine falls on all of them alike."""
    names = list(runs)
    for run in runs.values():
        run(paths[0])  # warm the code paths and the page cache
    times: dict[str, list[float]] = {name: [] for name in names}
    for index, path in enumerate(paths):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            runs[name](path)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def child_peak_rss_mb(paths: list[Path], crop: str | None = None) -> float:
    """Peak RSS (VmHWM) of a fresh process preparing every file.

    Read from the child's own /proc/self/status: ru_maxrss of RUSAGE_CHILDREN would also
    count this parent's memory, which the kernel charges to the child from before its exec.
    """
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from reconciler.images import prepare\n"
        "crop = sys.argv[1] or None\n"
        "for name in sys.argv[2:]:\n"
        "    prepare(Path(name), crop=crop)\n"
        "status = Path('/proc/self/status').read_text()\n"
        "print(next(l.split()[1] for l in status.splitlines() if l.startswith('VmHWM')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, crop or "", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1]) / 1024


# Face framing.

ASTRONAUT = Path(__file__).parent.parent / "tests" / "data" / "astronaut.png"
FACE_PERSON_SIDE = 4000  # the portrait upscaled so the face is ~740 px, 18.5 % of 4000
FACE_OVERHEAD_TARGET_MS = 60
FACE_SPEEDUP_TARGET = 2.5
FACE_RSS_TARGET_MB = 200


def portrait_like(index: int) -> Image.Image:
    """The astronaut on a photo-like background, at an offset of its own, under noise."""
    with Image.open(ASTRONAUT) as im:
        person = im.convert("RGB").resize(
            (FACE_PERSON_SIDE, FACE_PERSON_SIDE), Image.Resampling.BICUBIC
        )
    canvas = photo_like(index)
    canvas.paste(person, (100 + index * 431 % (SIZE[0] - FACE_PERSON_SIDE - 200), 0))
    rng = random.Random(-1 - index)
    noise = Image.frombytes("RGB", SIZE, rng.randbytes(SIZE[0] * SIZE[1] * 3))
    return Image.blend(canvas, noise, 0.06)


def face_corpus(count: int, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"portrait-{index:03d}.jpg"
        if not path.exists():
            partial = path.with_suffix(".part")
            portrait_like(index).save(partial, "JPEG", quality=QUALITY, exif=phone_exif())
            partial.replace(path)
        paths.append(path)
    return paths


def ours_face(path: Path) -> None:
    prepare(path, crop="face")


def face_case(count: int, cache: Path) -> bool:
    started = time.perf_counter()
    paths = face_corpus(count, cache)
    found = sum(1 for p in paths if "no face found" not in prepare(p, crop="face").quality_notes)
    print(
        f"face: {len(paths)} portraits {SIZE[0]}x{SIZE[1]} q{QUALITY}, a face found in {found} "
        f"(ready in {time.perf_counter() - started:.1f} s)"
    )
    medians = median_ms({"naive": naive, "none": ours, "face": ours_face}, paths)
    naive_ms, none_ms, face_ms = medians["naive"], medians["none"], medians["face"]
    overhead, speedup = face_ms - none_ms, naive_ms / face_ms
    peak_mb = child_peak_rss_mb(paths, crop="face")
    checks = (
        overhead <= FACE_OVERHEAD_TARGET_MS,
        speedup >= FACE_SPEEDUP_TARGET,
        peak_mb < FACE_RSS_TARGET_MB,
        found == len(paths),
    )
    words = ["ok" if ok else "MISSED" for ok in checks]
    print(f"naive           (no crop):             {naive_ms:8.1f} ms/image (median)")
    print(f"prepare crop=none:                     {none_ms:8.1f} ms/image (median)")
    print(f"prepare crop=face:                     {face_ms:8.1f} ms/image (median)")
    print(f"face - none = {overhead:.1f} ms  (target <= {FACE_OVERHEAD_TARGET_MS}) {words[0]}")
    print(f"naive / face = {speedup:.2f}  (target >= {FACE_SPEEDUP_TARGET}) {words[1]}")
    print(
        f"peak RSS of a process framing all {len(paths)}: {peak_mb:.1f} MB  "
        f"(target < {FACE_RSS_TARGET_MB}) {words[2]}"
    )
    return all(checks)


def big_pngs(folder: Path) -> list[Path]:
    """Four 63 MP RGBA PNGs: smooth gradients (so they stay a few MB on disk) with alpha."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(BIG_PNG_COUNT):
        path = folder / f"big-{index}.png"
        if not path.exists():
            ramp = Image.linear_gradient("L").rotate(index * 40).resize(BIG_PNG_SIZE)
            flipped = ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            im = Image.merge(
                "RGBA", [ramp, flipped, ramp.transpose(Image.Transpose.ROTATE_180), flipped]
            )
            partial = path.with_suffix(".part")
            im.save(partial, "PNG", compress_level=1)
            partial.replace(path)
        paths.append(path)
    return paths


def child_peak_rss_threaded_mb(paths: list[Path], *, budgeted: bool) -> float:
    """Peak RSS (VmHWM) of a fresh process preparing `paths` on BIG_PNG_WORKERS threads."""
    code = (
        "import sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from pathlib import Path\n"
        "from reconciler import images\nfrom reconciler.images import _budget as images_budget\n"
        "if sys.argv[1] == 'unbudgeted':\n"
        "    images.DECODE_BUDGET = images_budget.MemoryBudget(2**62)\n"
        f"with ThreadPoolExecutor({BIG_PNG_WORKERS}) as pool:\n"
        "    list(pool.map(lambda name: images.prepare(Path(name)), sys.argv[2:]))\n"
        "status = Path('/proc/self/status').read_text()\n"
        "print(next(l.split()[1] for l in status.splitlines() if l.startswith('VmHWM')))\n"
    )
    mode = "budgeted" if budgeted else "unbudgeted"
    done = subprocess.run(
        [sys.executable, "-c", code, mode, *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1]) / 1024


def memory_budget_case(cache: Path) -> bool:
    started = time.perf_counter()
    paths = big_pngs(cache)
    width, height = BIG_PNG_SIZE
    print(
        f"memory: {len(paths)} RGBA PNGs {width}x{height} ({width * height / 1e6:.0f} MP) "
        f"on {BIG_PNG_WORKERS} threads (ready in {time.perf_counter() - started:.1f} s)"
    )
    unbudgeted = child_peak_rss_threaded_mb(paths, budgeted=False)
    budgeted = child_peak_rss_threaded_mb(paths, budgeted=True)
    met = budgeted < BUDGET_RSS_TARGET_MB
    print(f"peak RSS without the decode budget: {unbudgeted:8.1f} MB")
    print(
        f"peak RSS with the decode budget:    {budgeted:8.1f} MB  "
        f"(target < {BUDGET_RSS_TARGET_MB}) {'ok' if met else 'MISSED'}"
    )
    print(f"budgeted / unbudgeted = {budgeted / unbudgeted:.2f}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="number of images (default 40)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"photosync-bench-{SIZE[0]}x{SIZE[1]}-q{QUALITY}",
        help="where the generated JPEGs are kept between runs",
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="run only the memory-budget case"
    )
    parser.add_argument("--face-only", action="store_true", help="run only the face case")
    args = parser.parse_args()
    big_cache = Path(tempfile.gettempdir()) / "photosync-bench-big-png"
    face_cache = Path(tempfile.gettempdir()) / f"photosync-bench-face-{SIZE[0]}x{SIZE[1]}"
    if args.memory_only:
        return 0 if memory_budget_case(big_cache) else 1
    if args.face_only:
        return 0 if face_case(args.count, face_cache) else 1

    started = time.perf_counter()
    paths = corpus(args.count, args.cache)
    mean_mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
    print(
        f"corpus: {len(paths)} JPEGs {SIZE[0]}x{SIZE[1]} q{QUALITY}, mean {mean_mb:.1f} MB, "
        f"in {args.cache} (ready in {time.perf_counter() - started:.1f} s)"
    )

    medians = median_ms({"naive": naive, "floor": floor, "prepare": ours}, paths)
    naive_ms, floor_ms, ours_ms = medians["naive"], medians["floor"], medians["prepare"]
    speedup = naive_ms / ours_ms
    over_floor = ours_ms / floor_ms
    peak_mb = child_peak_rss_mb(paths)

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"naive   (open, convert, resize, save): {naive_ms:8.1f} ms/image (median)")
    print(f"floor   (draft decode only):           {floor_ms:8.1f} ms/image (median)")
    print(f"prepare (reconciler.images):           {ours_ms:8.1f} ms/image (median)")
    print(
        f"naive / prepare = {speedup:.2f}  (target >= {SPEEDUP_TARGET}) "
        f"{verdict(speedup >= SPEEDUP_TARGET)}"
    )
    print(
        f"prepare / floor = {over_floor:.2f}  (target <= {FLOOR_TARGET}) "
        f"{verdict(over_floor <= FLOOR_TARGET)}"
    )
    print(
        f"peak RSS of a process preparing all {len(paths)}: {peak_mb:.1f} MB  "
        f"(target < {RSS_TARGET_MB}) {verdict(peak_mb < RSS_TARGET_MB)}"
    )
    met = speedup >= SPEEDUP_TARGET and over_floor <= FLOOR_TARGET
    budget_met = memory_budget_case(big_cache)
    face_met = face_case(args.count, face_cache)
    return 0 if met and peak_mb < RSS_TARGET_MB and budget_met and face_met else 1


if __name__ == "__main__":
    sys.exit(main())
