"""Drive a command through a real pseudo-terminal, as a person at a keyboard would.

Usage: drive.py SCRIPT_JSON -- COMMAND [ARGS...]
SCRIPT_JSON is a list of [expect, send]: wait until `expect` (a regular expression) appears
in the terminal output (ANSI escapes removed), then type `send`. Prints the whole transcript
(escapes removed) and exits with the command's exit code; 99 when an expectation was not met
within 30 s. Standard library only, so it runs wherever python3 does.
"""

import fcntl
import json
import os
import pty
import re
import select
import struct
import sys
import termios
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def main() -> int:
    script = json.loads(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.execvp(command[0], command)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    raw = b""
    seen = 0  # expectations match only output after the previous match

    def pump(timeout: float) -> bool:
        nonlocal raw
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return False
        if not chunk:
            return False
        raw += chunk
        return True

    for expect, send in script:
        deadline = time.time() + 30
        pattern = re.compile(expect)
        while True:
            text = ANSI.sub("", raw.decode("utf-8", "replace"))
            m = pattern.search(text, seen)
            if m:
                seen = m.end()
                break
            if time.time() > deadline or not pump(0.2):
                sys.stdout.write(ANSI.sub("", raw.decode("utf-8", "replace")))
                sys.stdout.write(f"\n[drive.py] expected {expect!r}; not seen\n")
                os.kill(pid, 9)
                return 99
        time.sleep(0.1)
        os.write(fd, send.encode())
    deadline = time.time() + 120
    while time.time() < deadline and pump(0.5):
        pass
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(ANSI.sub("", raw.decode("utf-8", "replace")))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
