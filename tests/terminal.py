#!/usr/bin/env python3
"""Runs a command in a real pseudo-terminal, for the tests of what a person sees.

    terminal.py [--rows R] [--cols C] [--deadline SECONDS] [--screen FILE] [STEP...] -- COMMAND...

The command gets the terminal as its standard input, output and error, as its controlling
terminal (so Ctrl-C, written as \\x03, is a SIGINT), with a window of R rows and C columns
(default 24x100). The steps run in order:

    --expect TEXT   wait until TEXT appears in the output after what the last --expect found
    --send TEXT     type TEXT (backslash escapes: \\r is Enter, \\x03 Ctrl-C, \\x04 Ctrl-D)
    --signal NAME   send the command the signal NAME (INT, TERM, ...), as `kill` would
    --snapshot FILE once the command has written nothing for 50 ms, write to FILE the text a
                    person reads on the terminal then (as --screen does at the end)

Then the driver reads until the command closes the terminal and exits. It prints all the
command wrote, byte for byte, on its own standard output, and, with --screen, writes to
FILE the text a person would read on the terminal at the end (a small emulator of what
the command uses: wrapping, wide characters in two columns, carriage return, cursor up and
down, clearing lines). A query of the cursor position (ESC [6n) is answered as a terminal
answers it.

Exit status: the command's own (128 + N if signal N ended it); 124 if a step or the exit
did not come before the deadline (default 30 s), the command then being killed and the
reason told on standard error.
"""
import codecs
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
import unicodedata

CSI = re.compile(rb"\x1b\[([?]?)([0-9;]*)([@-~])")


class Screen:
    """What a terminal of `cols` columns shows: every line since the start, scrollback too."""

    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols
        self.lines = [[]]
        self.row, self.col = 0, 0
        self.wrap_pending = False
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = b""

    def top(self):
        """The first line of the visible screen: the cursor cannot go above it."""
        return max(0, len(self.lines) - self.rows)

    def line(self):
        while len(self.lines) <= self.row:
            self.lines.append([])
        return self.lines[self.row]

    def newline(self):
        self.row += 1
        self.line()
        self.wrap_pending = False

    def put(self, ch):
        # a wide character (CJK, most emoji) takes two cells; with one left, it wraps first
        cells = [ch, ""] if unicodedata.east_asian_width(ch) in "WF" else [ch]
        if self.wrap_pending or self.col + len(cells) > self.cols:
            self.newline()
            self.col = 0
        line = self.line()
        while len(line) < self.col + len(cells):
            line.append(" ")
        line[self.col : self.col + len(cells)] = cells
        if self.col + len(cells) == self.cols:
            self.col, self.wrap_pending = self.cols - 1, True
        else:
            self.col += len(cells)

    def csi(self, private, params, final):
        nums = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = nums[0] if nums else 0
        if private:
            return  # modes such as hiding the cursor change nothing written
        self.wrap_pending = False
        if final == "A":
            self.row = max(self.top(), self.row - max(n, 1))
        elif final == "B":
            self.row += max(n, 1)
            self.line()
        elif final == "C":
            self.col = min(self.cols - 1, self.col + max(n, 1))
        elif final == "D":
            self.col = max(0, self.col - max(n, 1))
        elif final == "G":
            self.col = min(self.cols - 1, max(n, 1) - 1)
        elif final == "K":
            line = self.line()
            if n == 0:
                del line[self.col:]
            elif n == 1:
                line[: self.col + 1] = [" "] * min(len(line), self.col + 1)
            else:
                line.clear()
        elif final == "J":
            if n == 0:
                del self.line()[self.col:]
                del self.lines[self.row + 1:]
            elif n in (2, 3):
                for line in self.lines[self.top():]:
                    line.clear()
        # colours (m) and anything else change no text

    def feed(self, data):
        data = self.pending + data
        self.pending = b""
        i = 0
        while i < len(data):
            b = data[i]
            if b == 0x1B:
                m = CSI.match(data, i)
                if m:
                    self.csi(m.group(1).decode(), m.group(2).decode(), m.group(3).decode())
                    i = m.end()
                    continue
                if len(data) - i < 16 and not re.match(rb"\x1b[^\[]", data[i:]):
                    self.pending = data[i:]  # an escape cut by the read: wait for the rest
                    return
                i += 2  # a two-byte escape (ESC 7, ESC 8, ...)
                continue
            if b == 0x0D:
                self.col, self.wrap_pending = 0, False
            elif b == 0x0A:
                self.newline()
            elif b == 0x08:
                self.col, self.wrap_pending = max(0, self.col - 1), False
            elif b < 0x20:
                pass  # other controls (a bell, a ^C echoed raw) write nothing
            else:
                for ch in self.decoder.decode(bytes([b])):
                    self.put(ch)
            i += 1

    def text(self):
        return "\n".join("".join(line).rstrip() for line in self.lines).rstrip("\n") + "\n"


def unescape(text):
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


def main(argv):
    rows, cols, deadline, screen_file, steps = 24, 100, 30.0, None, []
    i = 0
    while i < len(argv) and argv[i] != "--":
        flag, value = argv[i], argv[i + 1]
        if flag == "--rows":
            rows = int(value)
        elif flag == "--cols":
            cols = int(value)
        elif flag == "--deadline":
            deadline = float(value)
        elif flag == "--screen":
            screen_file = value
        elif flag == "--expect":
            steps.append(("expect", value.encode("utf-8")))
        elif flag == "--send":
            steps.append(("send", unescape(value)))
        elif flag == "--signal":
            steps.append(("signal", getattr(signal, "SIG" + value)))
        elif flag == "--snapshot":
            steps.append(("snapshot", value))
        else:
            sys.exit("terminal.py: unknown option %s" % flag)
        i += 2
    command = argv[i + 1:]
    if not command:
        sys.exit("terminal.py: no command after --")

    pid, master = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)

    screen = Screen(rows, cols)
    output = bytearray()
    found = 0  # where the next --expect starts looking
    end = time.monotonic() + deadline
    closed, status, why = False, None, None

    def read_some(timeout):
        """Reads what the command wrote within `timeout`; false if nothing came."""
        nonlocal closed
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every copy of the terminal's other side is closed
            data = b""
        if not data:
            closed = True
            return False
        if b"\x1b[6n" in data:
            os.write(master, b"\x1b[%d;%dR" % (screen.row - screen.top() + 1, screen.col + 1))
        output.extend(data)
        screen.feed(data)
        return True

    def left():
        return max(0.0, end - time.monotonic())

    for kind, value in steps:
        if kind == "send":
            os.write(master, value)
            continue
        if kind == "signal":
            os.kill(pid, value)
            continue
        if kind == "snapshot":
            while not closed and left() > 0 and read_some(min(0.05, left())):
                pass  # a whole frame: the rest of a draw comes within 50 ms
            with open(value, "w", encoding="utf-8") as f:
                f.write(screen.text())
            continue
        while why is None:
            at = output.find(value, found)
            if at >= 0:
                found = at + len(value)
                break
            if closed or left() == 0:
                why = "never saw %r" % value.decode("utf-8", "replace")
            else:
                read_some(min(0.05, left()))
        if why:
            break

    while why is None and status is None:
        if not closed:
            read_some(min(0.05, left()))
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
            while not closed and read_some(0.2):
                pass  # what the command wrote last
        elif left() == 0:
            why = "the command did not exit"
        elif closed:
            time.sleep(0.02)
    if why is not None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    sys.stdout.buffer.write(bytes(output))
    sys.stdout.flush()
    if screen_file:
        with open(screen_file, "w", encoding="utf-8") as f:
            f.write(screen.text())
    if why is not None:
        print("terminal.py: %s within %g s" % (why, deadline), file=sys.stderr)
        return 124
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
