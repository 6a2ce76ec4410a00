"""Rows read straight from the pages of a damaged SQLite file (and its WAL), without SQLite.

SQLite refuses a file whose header is garbage and stops a query at the first bad page; the rows on
every other page are still there. This reads each page image that is current (the WAL's last
committed frame of a page overrides the database file), skips pages on the freelist (deleted rows
live on there: salvaging them would resurrect events already delivered) and returns the records of
rowid-table leaf pages with the wanted column count. Nothing here trusts a byte: a page or cell that
does not parse is skipped.
"""

from __future__ import annotations

import struct
from pathlib import Path

_MAGIC = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_DEFAULT_PAGE = 4096  # the stores never set page_size
Value = int | float | str | bytes | None


def wal_header_ok(path: Path) -> bool:
    """False for a WAL that SQLite would silently throw away (garbage header): its commits are lost."""
    try:
        size = path.stat().st_size
        if size == 0:
            return True
        with path.open("rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        return True
    if len(head) < 32 or struct.unpack(">I", head[:4])[0] not in _WAL_MAGIC:
        return False
    return _checksum(head[:24], 0, 0, head[3] == 0x83) == struct.unpack(">II", head[24:32])


def _checksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _wal_pages(wal: Path) -> tuple[int | None, dict[int, bytes]]:
    """Page size and page images of the WAL's committed frames (the last frame of a page wins)."""
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return None, {}
    if len(data) < 32 or not wal_header_ok(wal):
        return None, {}
    big = data[3] == 0x83
    psize = struct.unpack(">I", data[8:12])[0]
    if psize < 512 or psize > 65536 or psize & (psize - 1):
        return None, {}
    salt = data[16:24]
    s = struct.unpack(">II", data[24:32])
    pages: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    off = 32
    while off + 24 + psize <= len(data):
        fh, page = data[off : off + 24], data[off + 24 : off + 24 + psize]
        if fh[8:16] != salt:
            break
        s = _checksum(fh[:8] + page, *s, big)
        if s != struct.unpack(">II", fh[16:24]):
            break
        pno, commit = struct.unpack(">II", fh[:8])
        pending[pno] = page
        if commit:  # a commit frame: everything up to here is committed
            pages.update(pending)
            pending.clear()
        off += 24 + psize
    return psize, pages


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = 0
    for k in range(9):
        c = b[i + k]
        if k == 8:
            return (v << 8) | c, i + 9
        v = (v << 7) | (c & 0x7F)
        if c < 0x80:
            return v, i + k + 1
    raise ValueError("varint")


def _record(payload: bytes) -> list[Value]:
    hlen, i = _varint(payload, 0)
    types: list[int] = []
    while i < hlen:
        t, i = _varint(payload, i)
        types.append(t)
    pos, out = hlen, []
    sizes = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8, 7: 8}
    for t in types:
        if t in (0, 8, 9):
            out.append(None if t == 0 else t - 8)
        elif t in sizes:
            raw = payload[pos : pos + sizes[t]]
            pos += sizes[t]
            out.append(struct.unpack(">d", raw)[0] if t == 7 else int.from_bytes(raw, "big", signed=True))
        elif t >= 12:
            n = (t - 12) // 2
            raw = payload[pos : pos + n]
            pos += n
            out.append(raw.decode("utf-8") if t % 2 else raw)
        else:
            raise ValueError("serial type")
        if pos > len(payload):
            raise ValueError("record runs past its payload")
    return out


class _Pages:
    def __init__(self, db: bytes, psize: int, wal: dict[int, bytes], usable: int) -> None:
        self.db, self.psize, self.wal, self.usable = db, psize, wal, usable

    def get(self, pno: int) -> bytes | None:
        if pno in self.wal:
            return self.wal[pno]
        start = (pno - 1) * self.psize
        page = self.db[start : start + self.psize]
        return page if len(page) == self.psize else None

    def count(self) -> int:
        return max([len(self.db) // self.psize, *self.wal])

    def payload(self, page: bytes, at: int) -> tuple[int, bytes]:
        """(rowid, payload) of the table-leaf cell at offset ``at``, overflow chain followed."""
        size, i = _varint(page, at)
        rowid, i = _varint(page, i)
        u = self.usable
        x, m = u - 35, ((u - 12) * 32 // 255) - 23
        local = size if size <= x else (m + (size - m) % (u - 4) if m + (size - m) % (u - 4) <= x else m)
        out = bytearray(page[i : i + local])
        nxt = struct.unpack(">I", page[i + local : i + local + 4])[0] if local < size else 0
        seen: set[int] = set()
        while len(out) < size:
            ov = self.get(nxt) if nxt not in seen else None
            if ov is None:
                raise ValueError("overflow chain broken")
            seen.add(nxt)
            out += ov[4 : 4 + min(u - 4, size - len(out))]
            nxt = struct.unpack(">I", ov[:4])[0]
        return rowid, bytes(out)


def _freelist(pages: _Pages, first: int, total: int) -> set[int]:
    free: set[int] = set()
    trunk = first
    while trunk and trunk not in free and len(free) <= total:
        page = pages.get(trunk)
        if page is None:
            break
        free.add(trunk)
        nxt, n = struct.unpack(">II", page[:8])
        n = min(n, (pages.usable - 8) // 4)
        free.update(struct.unpack(f">{n}I", page[8 : 8 + 4 * n]))
        trunk = nxt
    return free


def salvage_rows(path: Path, ncols: tuple[int, ...]) -> dict[int, list[Value]]:
    """rowid -> values of every readable record with a column count in ``ncols`` on a current leaf page
    of ``path`` (+ ``path``-wal). A damaged header costs the freelist only (its rows come back too)."""
    try:
        db = path.read_bytes()
    except OSError:
        db = b""
    wal_psize, wal = _wal_pages(Path(f"{path}-wal"))
    head = wal.get(1) or db[:100]
    psize, reserved, free_first, free_n = wal_psize or _DEFAULT_PAGE, 0, 0, 0
    if head.startswith(_MAGIC) and len(head) >= 100:
        ps = struct.unpack(">H", head[16:18])[0]
        ps = 65536 if ps == 1 else ps
        if wal_psize is None and ps >= 512 and not ps & (ps - 1):
            psize = ps
        reserved = head[20]
        free_first, free_n = struct.unpack(">II", head[32:40])
    pages = _Pages(db, psize, wal, psize - reserved)
    free = _freelist(pages, free_first, free_n) if free_first else set()
    rows: dict[int, list[Value]] = {}
    for pno in range(1, pages.count() + 1):
        page = pages.get(pno)
        if page is None or pno in free:
            continue
        h = 100 if pno == 1 else 0
        if page[h] != 0x0D:  # table b-tree leaf
            continue
        ncells = struct.unpack(">H", page[h + 3 : h + 5])[0]
        for c in range(min(ncells, (psize - h - 8) // 2)):
            try:
                at = struct.unpack(">H", page[h + 8 + 2 * c : h + 10 + 2 * c])[0]
                rowid, payload = pages.payload(page, at)
                rec = _record(payload)
            except (ValueError, IndexError, struct.error, UnicodeDecodeError):
                continue
            if len(rec) in ncols:
                rows[rowid] = rec
    return rows
