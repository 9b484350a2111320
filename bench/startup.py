#!/usr/bin/env python3
"""Times a server from process start to its "listening" log line.

    startup.py [--cwd DIR] [--timeout S] -- COMMAND...

Prints one JSON object: {"startup_ms": ..., "listening_line": ...}, or
{"error": ...}. The server is stopped afterwards.
"""
import json
import os
import signal
import subprocess
import sys
import time


def main():
    args = sys.argv[1:]
    cwd, timeout = None, 30.0
    while args and args[0] != "--":
        if args[0] == "--cwd":
            cwd = args[1]
            args = args[2:]
        elif args[0] == "--timeout":
            timeout = float(args[1])
            args = args[2:]
        else:
            sys.exit(f"startup.py: unknown argument {args[0]}")
    command = args[1:]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    result = {"error": "no listening line"}
    lines = []
    loaded = None
    try:
        deadline = start + timeout
        os.set_blocking(proc.stdout.fileno(), True)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip()
            lines.append(text)
            if "loaded" in text and "plugs" in text:
                loaded = text[-120:]
            if "listening" in text:
                elapsed = time.monotonic() - start
                result = {"startup_ms": round(elapsed * 1000, 1), "loaded_line": loaded}
                break
        if "error" in result:
            result["output"] = "\n".join(lines[-5:])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
