#!/usr/bin/env python3
"""Frames per rotation in a SQLite WAL, by table: the reading half of bench/wal-frames.sh.

Usage: wal-frames.py DIR... where each DIR holds a sessiond.db and its sessiond.db-wal as a
server killed under refresh load left them. For each, the frames of the WAL's current cycle
(those whose salts match the WAL header) up to its last commit frame are mapped to the table
or index that owns their page (dbstat on a copy of the database with its WAL, which includes
the pages the cycle allocated). The rotations of the cycle are counted from the sealed
successor pairs it wrote: every rotation appends one row to `successor_seals`, so they are the
row ids from the smallest on the cycle's first frame of that table to the largest. That first
page may also hold a few rows from before the cycle (a page holds about five), so the count
is high by at most that many per directory.
"""

import collections
import shutil
import sqlite3
import struct
import sys
import tempfile
from pathlib import Path


def varint(data, at):
    value = 0
    for i in range(9):
        byte = data[at + i]
        if i == 8:
            return (value << 8) | byte, at + 9
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at + i + 1
    raise ValueError("varint")


def leaf_rowids(page):
    """Row ids of a table B-tree leaf page (type 13); none for any other page."""
    if page[0] != 13:
        return []
    cells = struct.unpack(">H", page[3:5])[0]
    rowids = []
    for cell in range(cells):
        at = struct.unpack(">H", page[8 + 2 * cell : 10 + 2 * cell])[0]
        _, at = varint(page, at)  # payload size
        rowid, _ = varint(page, at)
        rowids.append(rowid)
    return rowids


def cycle_frames(wal):
    """(page number, page) of each frame of the current cycle, up to its last commit."""
    _, _, page_size, _, salt1, salt2, _, _ = struct.unpack(">8I", wal[:32])
    frame_size = 24 + page_size
    frames, committed, commits = [], 0, 0
    at = 32
    while at + frame_size <= len(wal):
        page_number, size_after, frame_salt1, frame_salt2 = struct.unpack(">4I", wal[at : at + 16])
        if (frame_salt1, frame_salt2) != (salt1, salt2):
            break
        frames.append((page_number, wal[at + 24 : at + frame_size]))
        if size_after:
            committed, commits = len(frames), commits + 1
        at += frame_size
    return frames[:committed], commits


def owners(directory):
    """Page number -> (the table or index holding it, whether it is an interior page of its
    B-tree), with the WAL's pages included."""
    with tempfile.TemporaryDirectory() as copy:
        for name in ("sessiond.db", "sessiond.db-wal"):
            shutil.copy(Path(directory) / name, Path(copy) / name)
        connection = sqlite3.connect(Path(copy) / "sessiond.db")
        try:
            return {
                page: (name, kind == "internal")
                for name, page, kind in connection.execute(
                    "SELECT name, pageno, pagetype FROM dbstat"
                )
            }
        except sqlite3.OperationalError as error:
            sys.exit(f"this python's sqlite3 has no dbstat table ({error})")
        finally:
            connection.close()


def main(directories):
    frames_by_table = collections.Counter()
    interior_by_table = collections.Counter()
    total_commits = total_rotations = total_frames = 0
    for directory in directories:
        frames, commits = cycle_frames((Path(directory) / "sessiond.db-wal").read_bytes())
        if not commits:
            print(f"{directory}: no commit in the WAL's current cycle, left out", file=sys.stderr)
            continue
        owner = owners(directory)
        seals = [
            rowid
            for page_number, page in frames
            if owner.get(page_number, ("", False))[0] == "successor_seals"
            for rowid in leaf_rowids(page)
        ]
        rotations = max(seals) - min(seals) + 1 if seals else 0
        for page_number, _ in frames:
            table, interior = owner.get(page_number, ("(not in the database)", False))
            frames_by_table[table] += 1
            interior_by_table[table] += interior
        total_commits += commits
        total_rotations += rotations
        total_frames += len(frames)
        print(f"{directory}: {len(frames)} frames, {commits} commits, about {rotations} rotations")
    if not total_rotations:
        sys.exit("no rotation found")
    print(
        f"all: {total_frames} frames, {total_commits} commits, about {total_rotations} rotations "
        f"({total_rotations / total_commits:.1f} per commit), "
        f"{total_frames / total_rotations:.2f} frames per rotation"
    )
    for table, count in frames_by_table.most_common():
        print(
            f"  {table:30s} {count / total_rotations:6.2f} per rotation "
            f"{count / total_commits:6.2f} per commit "
            f"({100 * interior_by_table[table] / count:.0f} % interior pages)"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
