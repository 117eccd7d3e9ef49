"""Run a command in a pseudo-terminal and return the screen a person would see when it ends.

A small terminal model: enough of VT100 for what progress bars send (carriage return, cursor up/down,
erase line, cursor column; colours and cursor visibility are ignored).
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def render(output: str, columns: int) -> list[str]:
    screen: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(output):
        ch = output[i]
        if ch == "\x1b":
            m = _CSI.match(output, i)
            if m is None:  # other escapes (e.g. ESC ] title): skip to the terminator
                end = output.find("\x07", i)
                i = end + 1 if end != -1 else i + 1
                continue
            arg, cmd = m.group(1), m.group(2)
            n = int(arg) if arg.isdigit() else 1
            if cmd == "A":
                row = max(0, row - n)
            elif cmd == "B":
                row += n
            elif cmd == "G":
                col = n - 1
            elif cmd == "K":
                line = screen[row] if row < len(screen) else []
                if arg in ("2",):
                    line[:] = []
                elif arg in ("", "0"):
                    del line[col:]
            i = m.end()
            continue
        while row >= len(screen):
            screen.append([])
        line = screen[row]
        if ch == "\n":
            row += 1
            col = 0
        elif ch == "\r":
            col = 0
        elif ch == "\b":
            col = max(0, col - 1)
        elif ch >= " ":
            if col >= columns:
                row, col = row + 1, 0
                while row >= len(screen):
                    screen.append([])
                line = screen[row]
            line.extend(" " * (col - len(line) + 1) if col >= len(line) else "")
            line[col] = ch
            col += 1
        i += 1
    lines = ["".join(line).rstrip() for line in screen]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def run_in_terminal(args: list[str], columns: int = 120, rows: int = 40, timeout: float = 120) -> list[str]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=timeout)
    os.close(master)
    return render(b"".join(chunks).decode("utf-8", "replace"), columns)
