"""Measure the time and peak memory to make one protected, watermarked copy, against peer tools.

Usage: ``python bench/pdf_copy.py [--runs 3] [--pages 2 20 200 2000]`` from the repository root.

It generates its inputs in a temporary folder: text reports of the given page counts (48 lines of text per
A4 page inside one ``q ... Q`` pair), and a 10-page report of 12-megapixel JPEG photos (about 58 MiB,
above the portal's 30 MB upload limit, so only the pipeline functions accept it). Every method runs
``--runs`` times per input, each run in a fresh child process, round-robin so that load from other jobs
on the machine falls on all methods alike. The table gives medians.

- portal: ``sanitize`` + ``prepare_copy`` (budgets, active-content walk, content check, watermark with
  the embedded DejaVu subset, marker, AES-256 R6, verification of the saved files)
- floor: pikepdf open + save with AES-256 R6, nothing else
- qpdf: ``qpdf --overlay wm.pdf --repeat=1 -- --encrypt u o 256 -- in out`` (the Debian qpdf CLI)
- pypdf: ``merge_page`` of the stamp page on every page, ``compress_content_streams`` on every page,
  then ``encrypt(algorithm="AES-256")``. Without ``compress_content_streams``, pypdf 7.1.1 writes every
  page without the stamp when the writer is encrypted: the merged content is kept as parsed operations,
  and the encrypted write uses the stale stream data. The benchmark verifies every copy, so that run
  fails verification (``--pypdf-plain`` shows it).

The stamp page ``wm.pdf`` carries the portal's own watermark (the same text and embedded font, drawn for
an A4 page), so all three tools draw the same glyphs.

The table also gives "share" time: ``prepare_copy`` alone, the job that runs each time a copy is shared,
measured inside the portal's child, with its ratios to the same peers' work time.

Timing: "work" is measured inside the child around the job alone: imports and the portal's per-process
warm-up (``pipeline.warm_up``, which the worker pool runs once per worker before its first job) happen
before the clock starts, as in a warm worker. For the qpdf CLI, starting the qpdf process is part of the
job. "wall" is the whole child process, with interpreter start-up and imports. Peak MiB is the child's
maximum resident set (``wait4``), including qpdf's process for the CLI method.

Verification runs outside the timing. Every copy must open with its user password ("u", or the access
code for the portal's copy) and not without it, and must use AES-256 (R6, AESV3). Every copy but the
floor's must also carry the recipient's name on every page, found by pdfium's text extraction.

The inputs are benchmark dummies, so passwords on the qpdf command line are harmless here.
"""

import argparse
import datetime
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_PAGES = (2, 20, 200, 2000)
PHOTO_PAGES = 10
PHOTO_SIZE = (4000, 3000)
METHODS = ("portal", "floor", "qpdf", "pypdf")
RUN_TIMEOUT_SECONDS = 900
RECIPIENT = "Zoë Łukasiewicz"
REFERENCE = "S-7K3M9Q"
ISSUED_ON = datetime.date(2025, 3, 14)
# Benchmark dummies, not secrets: the copies are thrown away with the temporary folder.
PORTAL_PASSWORD = "7K3M-9QXA-PLEH"  # noqa: S105
PEER_PASSWORD = "u"  # noqa: S105


def make_text_report(pages: int, path: Path) -> None:
    import pikepdf

    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    for number in range(pages):
        # Like the output of word processors, the page saves and restores the graphics state, so the
        # portal's content check has q and Q operators to count.
        lines = ["q", "0 0 0 rg"]
        lines += [
            f"BT /F1 11 Tf 72 {760 - 14 * row} Td (Progress note {number + 1}.{row}: wound healing "
            f"well, no signs of infection, dressing changed.) Tj ET"
            for row in range(48)
        ]
        lines.append("Q")
        page = pdf.add_blank_page(page_size=(595, 842))
        page.obj.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
        page.obj.Contents = pdf.make_stream("\n".join(lines).encode())
    pdf.save(path, compress_streams=True)


def make_photo_report(path: Path) -> None:
    import pikepdf
    from PIL import Image

    pdf = pikepdf.new()
    for number in range(PHOTO_PAGES):
        # A smooth gradient with noise compresses like a clinical photo (a few MB as JPEG).
        base = Image.linear_gradient("L").resize(PHOTO_SIZE).convert("RGB")
        noise = Image.effect_noise(PHOTO_SIZE, 40 + number).convert("RGB")
        photo = Image.blend(base, noise, 0.5)
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)

        image = pikepdf.Stream(pdf, buffer.getvalue())
        image.Type, image.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
        image.Width, image.Height = PHOTO_SIZE
        image.ColorSpace, image.BitsPerComponent = pikepdf.Name.DeviceRGB, 8
        image.Filter = pikepdf.Name.DCTDecode
        page = pdf.add_blank_page(page_size=(842, 595))
        page.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        page.obj.Contents = pdf.make_stream(b"q 800 0 0 600 21 -2 cm /Im0 Do Q")
    pdf.save(path)


def make_stamp(path: Path) -> None:
    """Write a one-page A4 PDF that carries the portal's watermark for the benchmark recipient."""
    import pikepdf

    from portal.pdf import fonts, watermark
    from portal.pdf.pipeline import watermark_text

    text = watermark_text(RECIPIENT, REFERENCE, ISSUED_ON)
    font = fonts.subset_for(text.diagonal + text.footer)

    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(595, 842))
    shared = watermark.shared_resources(pdf, fonts.embed(pdf, font))
    names = watermark.add_resources(pdf, page.obj, shared)
    geometry = watermark.page_geometry(page.obj, 1)
    page.obj.Contents = pdf.make_stream(watermark.watermark_content(geometry, text, font, names))
    pdf.save(path)


def prepare(method: str) -> Callable[[Path, Path, Path], None]:
    """Import what ``method`` needs and return its job; runs in the child before the clock starts."""
    if method == "portal":
        from portal.pdf import Budgets, prepare_copy, sanitize
        from portal.pdf.pipeline import CopyRequest, warm_up

        warm_up()
        budgets = Budgets(max_pages=5000)

        def portal_job(source: Path, stamp: Path, output: Path) -> None:
            stored = sanitize(source.read_bytes(), budgets)
            request = CopyRequest(
                [stored.pdf], RECIPIENT, REFERENCE, ISSUED_ON, os.urandom(16), PORTAL_PASSWORD
            )
            started = time.perf_counter()
            copy = prepare_copy(request, budgets)
            # The parent reads this line: the share-time job alone, without the upload-time sanitising.
            print(f"share-seconds {time.perf_counter() - started:.4f}", flush=True)
            output.write_bytes(copy)

        return portal_job

    if method == "floor":
        import pikepdf

        def floor_job(source: Path, stamp: Path, output: Path) -> None:
            with pikepdf.open(source) as pdf:
                encryption = pikepdf.Encryption(owner="o" * 64, user=PEER_PASSWORD, R=6)
                pdf.save(output, encryption=encryption)

        return floor_job

    if method == "qpdf":

        def qpdf_job(source: Path, stamp: Path, output: Path) -> None:
            command = ["/usr/bin/qpdf", "--overlay", str(stamp), "--repeat=1", "--"]
            command += ["--encrypt", PEER_PASSWORD, "o", "256", "--", str(source), str(output)]
            subprocess.run(command, check=True, timeout=RUN_TIMEOUT_SECONDS)

        return qpdf_job

    if method in ("pypdf", "pypdf-plain"):
        from pypdf import PdfReader, PdfWriter

        def pypdf_job(source: Path, stamp: Path, output: Path) -> None:
            stamp_page = PdfReader(stamp).pages[0]
            writer = PdfWriter(clone_from=PdfReader(source))
            for page in writer.pages:
                page.merge_page(stamp_page)
                if method == "pypdf":
                    page.compress_content_streams()
            writer.encrypt(PEER_PASSWORD, "o", algorithm="AES-256")
            with output.open("wb") as handle:
                writer.write(handle)

        return pypdf_job

    raise ValueError(f"unknown method {method!r}")


def run_method(method: str, source: Path, stamp: Path, output: Path) -> None:
    """Make one copy of ``source`` with ``method`` (runs inside the measured child process)."""
    job = prepare(method)
    started = time.perf_counter()
    job(source, stamp, output)
    # The parent reads this line: work time without interpreter start-up, imports and warm-up.
    print(f"work-seconds {time.perf_counter() - started:.4f}", flush=True)


def measure(method: str, source: Path, stamp: Path, output: Path) -> tuple[float, float, float, float]:
    """Run one method in a child process; return wall, work and share-time seconds and peak RSS in MiB.

    Share-time seconds are those of ``prepare_copy`` alone for the portal, and the work seconds for the
    other methods, which have no upload-time step.
    """
    started = time.perf_counter()
    command = [sys.executable, __file__, "--run", method, str(source), str(stamp), str(output)]
    child = subprocess.Popen(
        command,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = started + RUN_TIMEOUT_SECONDS
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            child.kill()
            child.wait()
            return float("nan"), float("nan"), float("nan"), float("nan")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    assert child.stdout is not None
    report = child.stdout.read()
    child.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0 or "work-seconds" not in report:
        return float("nan"), float("nan"), float("nan"), float("nan")
    work = float(report.split("work-seconds")[1].split()[0])
    share = float(report.split("share-seconds")[1].split()[0]) if "share-seconds" in report else work
    return elapsed, work, share, usage.ru_maxrss / 1024


def verify(method: str, copy: Path) -> str:
    """Check the copy's encryption and watermark; return "ok" or what is wrong."""
    import pikepdf
    import pypdfium2
    from pikepdf.models.encryption import EncryptionMethod

    password = PORTAL_PASSWORD if method == "portal" else PEER_PASSWORD
    try:
        with pikepdf.open(copy, password=password) as pdf:
            info = pdf.encryption
            if info.R != 6 or info.stream_method != EncryptionMethod.aesv3 or info.bits != 256:
                return f"weak encryption R{info.R}"
            page_count = len(pdf.pages)
    except pikepdf.PasswordError:
        return "password rejected"
    try:
        pikepdf.open(copy).close()
        return "opens without password"
    except pikepdf.PasswordError:
        pass
    if method == "floor":
        return "ok"

    document = pypdfium2.PdfDocument(str(copy), password=password)
    stamped = 0
    for index in range(len(document)):
        page = document[index]
        textpage = page.get_textpage()
        if RECIPIENT in textpage.get_text_range():
            stamped += 1
        textpage.close()
        page.close()
    document.close()
    return "ok" if stamped == page_count else f"watermark on {stamped} of {page_count} pages"


def make_inputs(workdir: Path, pages: list[int]) -> None:
    """Write the stamp and every input report into ``workdir`` (run in a child process)."""
    make_stamp(workdir / "wm.pdf")
    for count in pages:
        make_text_report(count, workdir / f"text-{count}.pdf")
    make_photo_report(workdir / "photos-10.pdf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per method and input (1 to 9)")
    parser.add_argument("--pages", type=int, nargs="+", default=list(DEFAULT_PAGES), help="text report sizes")
    parser.add_argument("--pypdf-plain", action="store_true", help="also run pypdf without compression")
    arguments = parser.parse_args()
    runs = max(1, min(arguments.runs, 9))
    methods = [*METHODS, "pypdf-plain"] if arguments.pypdf_plain else list(METHODS)

    # The parent imports no PDF library: a child's peak RSS would start at the parent's.
    qpdf_version = subprocess.run(["/usr/bin/qpdf", "--version"], capture_output=True, text=True, check=True)
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("pikepdf", "pypdf", "pypdfium2"))
    print(f"# {versions}, {qpdf_version.stdout.splitlines()[0]} (CLI),")
    print(f"# {os.cpu_count()} CPUs, {runs} runs per method and input, medians")
    print(f"# load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        # Inputs are made in a child so the parent stays small: a forked child's peak RSS starts at ours.
        make = [sys.executable, __file__, "--make", str(workdir), *map(str, arguments.pages)]
        subprocess.run(make, check=True, cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
        stamp = workdir / "wm.pdf"
        inputs = [(f"text, {count} pages", workdir / f"text-{count}.pdf") for count in arguments.pages]
        inputs.append((f"photos, {PHOTO_PAGES} pages of 12 MP", workdir / "photos-10.pdf"))

        header = " | ".join(f"{method} wall / work s, MiB" for method in methods)
        shares = "share s: portal | share/floor | qpdf/share | pypdf/share"
        print(f"| input | size | {header} | portal/floor | qpdf/portal | pypdf/portal | {shares} | checks |")
        print("|---|---|" + "---|" * len(methods) + "---|---|---|---|---|---|---|---|")
        for label, path in inputs:
            samples: dict[str, list[tuple[float, float, float, float]]] = {method: [] for method in methods}
            failures: dict[str, str] = {}
            for _ in range(runs):
                for method in methods:
                    output = workdir / f"out-{method}.pdf"
                    output.unlink(missing_ok=True)
                    samples[method].append(measure(method, path, stamp, output))
                    outcome = _verify_in_child(method, output) if output.exists() else "no output"
                    if outcome != "ok":
                        failures[method] = outcome
            print(_row(label, path, samples, failures), flush=True)

    print(f"# load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


def _verify_in_child(method: str, copy: Path) -> str:
    command = [sys.executable, __file__, "--verify", method, str(copy)]
    result = subprocess.run(
        command,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    return result.stdout.strip() or f"verification failed (exit code {result.returncode})"


def _row(
    label: str,
    path: Path,
    samples: dict[str, list[tuple[float, float, float, float]]],
    failures: dict[str, str],
) -> str:
    medians = {
        method: tuple(statistics.median(values) for values in zip(*runs, strict=True))
        for method, runs in samples.items()
    }
    cells = [f"{wall:.2f} / {work:.3f}, {peak:.0f}" for wall, work, _, peak in medians.values()]
    portal = medians["portal"][1]
    ratios = [
        f"{portal / medians['floor'][1]:.1f}x",
        f"{medians['qpdf'][1] / portal:.2f}x",
        f"{medians['pypdf'][1] / portal:.1f}x",
    ]
    # The share-time job alone: prepare_copy, against the same peers (which have no upload step).
    share = medians["portal"][2]
    shares = [
        f"{share:.3f}",
        f"{share / medians['floor'][1]:.1f}x",
        f"{medians['qpdf'][1] / share:.2f}x",
        f"{medians['pypdf'][1] / share:.1f}x",
    ]
    checks = "all ok" if not failures else "; ".join(f"{name}: {why}" for name, why in failures.items())
    size = path.stat().st_size / 2**20
    return f"| {label} | {size:.1f} MiB | " + " | ".join(cells + ratios + shares) + f" | {checks} |"


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--make":
        make_inputs(Path(sys.argv[2]), [int(value) for value in sys.argv[3:]])
    elif len(sys.argv) == 4 and sys.argv[1] == "--verify":
        print(verify(sys.argv[2], Path(sys.argv[3])))
    elif len(sys.argv) == 6 and sys.argv[1] == "--run":
        run_method(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
