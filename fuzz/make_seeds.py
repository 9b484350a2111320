#!/usr/bin/env python3
"""Write the tracked seed inputs under corpus/<target>/seed-*.

Run from anywhere: python3 fuzz/make_seeds.py. The seeds are tiny and
checked in; whatever the fuzzer adds to corpus/ is ignored by git.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(event_type, event, payload):
    """One wire frame (SPEC 2): u32 BE total length, type, event length, event, payload."""
    ev = event.encode()
    pl = payload if isinstance(payload, bytes) else payload.encode()
    return struct.pack(">IBB", 6 + len(ev) + len(pl), event_type, len(ev)) + ev + pl


def split(a, b):
    """sync_apply input: u16 LE length of `a`, then a, then b."""
    return struct.pack("<H", len(a)) + a + b


DECODE = {
    "echo-object": frame(0, "echo", json.dumps({"text": "hi", "n": 1})),
    "echo-array": frame(0, "echo", "[1,2.5,null,true,\"x\",{\"a\":[]}]"),
    "empty-payload": frame(0, "echo", b""),
    "blank-payload": frame(1, "room", b" \n"),
    "empty-event": frame(2, "", "{\"token\":\"abc\"}"),
    "unicode-event": frame(6, "héllo-世界-🙂", "\"caf\\u00e9 🙂\""),
    "sync-patch": frame(3, "counter", "[[2],[2,99,100]]"),
    "number": frame(200, "n", "-1.5e10"),
}

SYNC = {
    # (old, new) pairs; the patch text is what diff() makes for them.
    "grow": split(b"ab", b"[[2],[2,99,100]]"),
    "shrink": split(b"abcd", b"[[-2]]"),
    "zero-bytes": split(b"\x01\x01\x01\x01", b"[[0],[0,2,0,2]]"),
    "two-runs": split(b"aaaaaaaaaa", b"[[0],[0,98,97,97,98],[9,98]]"),
    "json-edit": split(b'{"count":1,"who":"ann"}', b'{"count":12,"who":"bob"}'),
    "bad-shape": split(b"ab", b"[[0],[1,300]]"),
    "out-of-bounds": split(b"ab", b"[[0],[1,1,1]]"),
    "negative": split(b"ab", b"[[-3]]"),
    # Regressions (fuzz/README.md, Results): sizes past the format's 4 GiB
    # limit were allocated (abort); a delta near i64::MAX overflowed.
    "regress-huge-size": split(b"ab", b"[[8888888888]]"),
    "regress-i64-max": split(b"a", b"[[9223372036854775807]]"),
}


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)


write("decode", DECODE)
write("sync_apply", SYNC)
