"""CSV files as every export streams them (the usage ledger, the usage report, the audit
log): a header, then rows written in batches (fewer, larger writes to the client), every
text cell neutralized against formula injection (OWASP's CSV injection guidance)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence

from django.http import StreamingHttpResponse

# A text cell starting with one of these is read by spreadsheets as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH = 500


def neutralize(cell: str | int) -> str | int:
    """Text that a spreadsheet would run as a formula gets a leading quote; numbers,
    negative ones included, stay numbers."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def lines(header: Sequence[str], rows: Iterable[Sequence[str | int]]) -> Iterator[str]:
    """The header, then the rows, BATCH at a time."""
    buffer = _LineBuffer()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for count, row in enumerate(rows, start=1):
        writer.writerow([neutralize(cell) for cell in row])
        if count % BATCH == 0:
            yield buffer.take()
    yield buffer.take()


def response(
    header: Sequence[str], rows: Iterable[Sequence[str | int]], filename: str
) -> StreamingHttpResponse:
    """The CSV as a streamed download named ``filename``."""
    answer = StreamingHttpResponse(lines(header, rows), content_type="text/csv; charset=utf-8")
    answer["Content-Disposition"] = f'attachment; filename="{filename}"'
    return answer


class _LineBuffer:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def take(self) -> str:
        text, self.parts = "".join(self.parts), []
        return text
