"""Benchmark: time and peak memory to make one protected, watermarked copy, against peer tools.

Usage: ``python bench/pdf_copy.py`` from the repository root. It generates its inputs in a temporary
folder: text reports of 2, 20, 200 and 2000 pages, and a 10-page report of 12-megapixel photos. Each
method then runs in its own child process, whose wall time and peak RSS (``wait4``) are reported:

- portal: ``sanitize`` + ``prepare_copy`` (budgets, active-content walk, watermark, marker, AES-256 R6)
- floor: pikepdf open + save with AES-256 R6, nothing else
- qpdf: ``qpdf --overlay wm.pdf --repeat=1 -- --encrypt u o 256 -- in out``
- pypdf: ``merge_page`` of a watermark page on every page, then ``encrypt`` with AES-256

The inputs are benchmark dummies, so passwords on the qpdf command line are harmless here.
"""

import datetime
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
TEXT_PAGES = (2, 20, 200, 2000)
PHOTO_PAGES = 10
PHOTO_SIZE = (4000, 3000)
METHODS = ("portal", "floor", "qpdf", "pypdf")
RUN_TIMEOUT_SECONDS = 900


def make_text_report(pages: int, path: Path) -> None:
    import pikepdf

    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    for number in range(pages):
        lines = [
            f"BT /F1 11 Tf 72 {760 - 14 * row} Td (Progress note {number + 1}.{row}: wound healing "
            f"well, no signs of infection, dressing changed.) Tj ET"
            for row in range(48)
        ]
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


def make_overlay(path: Path) -> None:
    import pikepdf

    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(595, 842))
    font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
    )
    page.obj.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(WmF=font))
    page.obj.Contents = pdf.make_stream(
        b"q 0.85 0.05 0.55 rg BT /WmF 36 Tf 0.57 0.82 -0.82 0.57 120 150 Tm (Zoe Lukasiewicz 2025-03-14 S-7K3M9Q) Tj ET "
        b"BT /WmF 9 Tf 1 0 0 1 150 20 Tm (Personal copy for Zoe Lukasiewicz S-7K3M9Q) Tj ET Q"
    )
    pdf.save(path)


def run_method(method: str, source: Path, overlay: Path, output: Path) -> None:
    """Make one copy of ``source`` with ``method`` (runs inside the measured child process)."""
    started = time.monotonic()
    copy_with(method, source, overlay, output)
    # The parent reads this line: work time without interpreter start-up and imports.
    print(f"work-seconds {time.monotonic() - started:.3f}", flush=True)


def copy_with(method: str, source: Path, overlay: Path, output: Path) -> None:
    if method == "portal":
        from portal.pdf import Budgets, prepare_copy, sanitize
        from portal.pdf.pipeline import CopyRequest

        budgets = Budgets(max_pages=5000)
        stored = sanitize(source.read_bytes(), budgets)
        copy = prepare_copy(
            CopyRequest(
                [stored.pdf],
                "Zoë Łukasiewicz",
                "S-7K3M9Q",
                datetime.date(2025, 3, 14),
                os.urandom(16),
                "7K3M-9QXA-PLEH",
            ),
            budgets,
        )
        output.write_bytes(copy)
    elif method == "floor":
        import pikepdf

        with pikepdf.open(source) as pdf:
            pdf.save(output, encryption=pikepdf.Encryption(owner="o" * 64, user="u", R=6))
    elif method == "qpdf":
        subprocess.run(
            [
                "/usr/bin/qpdf",
                "--overlay",
                str(overlay),
                "--repeat=1",
                "--",
                "--encrypt",
                "u",
                "o",
                "256",
                "--",
                str(source),
                str(output),
            ],
            check=True,
        )
    elif method == "pypdf":
        from pypdf import PdfReader, PdfWriter

        stamp = PdfReader(overlay).pages[0]
        writer = PdfWriter(clone_from=PdfReader(source))
        for page in writer.pages:
            page.merge_page(stamp)
        writer.encrypt("u", "o", algorithm="AES-256")
        with output.open("wb") as handle:
            writer.write(handle)


def measure(method: str, source: Path, overlay: Path, output: Path) -> tuple[float, float, float]:
    """Run one method in a child process; return wall seconds, work seconds and peak RSS in MiB."""
    started = time.monotonic()
    command = [sys.executable, __file__, "--run", method, str(source), str(overlay), str(output)]
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
        if time.monotonic() > deadline:
            child.kill()
            return float("nan"), float("nan"), float("nan")
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    assert child.stdout is not None
    report = child.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0 or "work-seconds" not in report:
        return float("nan"), float("nan"), float("nan")
    work = float(report.split("work-seconds")[1].split()[0])
    return elapsed, work, usage.ru_maxrss / 1024


def make_inputs(workdir: Path) -> None:
    """Write the overlay and every input report into ``workdir`` (run in a child process)."""
    make_overlay(workdir / "wm.pdf")
    for pages in TEXT_PAGES:
        make_text_report(pages, workdir / f"text-{pages}.pdf")
    make_photo_report(workdir / "photos-10.pdf")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        # Inputs are made in a child so the parent stays small: a forked child's peak RSS starts at ours.
        subprocess.run([sys.executable, __file__, "--make", str(workdir)], check=True, cwd=REPOSITORY)
        overlay = workdir / "wm.pdf"
        inputs = [(f"text, {pages} pages", workdir / f"text-{pages}.pdf") for pages in TEXT_PAGES]
        inputs.append((f"photos, {PHOTO_PAGES} pages of 12 MP", workdir / "photos-10.pdf"))

        header = " | ".join(f"{method} wall s / work s / MiB" for method in METHODS)
        print(f"| input | size | {header} | portal/floor (work) |")
        print("|---|---|" + "---|" * len(METHODS) + "---|")
        for label, path in inputs:
            results = {
                method: measure(method, path, overlay, workdir / f"out-{method}.pdf") for method in METHODS
            }
            cells = [f"{wall:.2f} / {work:.2f} / {peak:.0f}" for wall, work, peak in results.values()]
            ratio = results["portal"][1] / results["floor"][1]
            size = path.stat().st_size / 2**20
            print(f"| {label} | {size:.1f} MiB | " + " | ".join(cells) + f" | {ratio:.1f}x |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make":
        make_inputs(Path(sys.argv[2]))
    elif len(sys.argv) == 6 and sys.argv[1] == "--run":
        run_method(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
