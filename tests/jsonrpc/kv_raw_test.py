#!/usr/bin/env python3
"""JSON-RPC 1.0 against examples/kv_server over a raw socket, as Go's jsonrpc client would speak it
(one object per line), on the port that also serves arpc (kv_client shares the table).

    kv_raw_test.py --kv-server PATH --kv-client PATH
"""
import argparse
import json
import random
import signal
import socket
import subprocess
import sys

TIMEOUT_S = 60  # per socket read: a loaded CI machine, never a timing assertion


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.rfile = self.sock.makefile("rb")

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, params, id_):
        self.send_raw(json.dumps({"method": method, "params": params, "id": id_}).encode() + b"\n")

    def line(self):
        return self.rfile.readline()

    def reply(self):
        raw = self.line()
        assert raw.endswith(b"\n"), f"one object per line, got {raw!r}"
        obj = json.loads(raw)
        assert set(obj) == {"id", "result", "error"}, obj
        # Go's wire rules: error a string or null, never an object; result null on error.
        assert obj["error"] is None or isinstance(obj["error"], str), obj
        if obj["error"] is not None:
            assert obj["result"] is None, obj
        return obj

    def call(self, method, params, id_):
        self.send(method, params, id_)
        r = self.reply()
        assert r["id"] == id_, (r, id_)
        return r

    def closed(self):
        return self.rfile.read() == b""

    def close(self):
        self.rfile.close()
        self.sock.close()


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what.split(":")[0] if ":" in what else what)


def test_put_get(port):
    c = Conn(port)
    r = c.call("KV.Put", [{"key": "k1", "value": "v1"}], 1)
    check(r == {"id": 1, "result": True, "error": None}, f"put answers true: {r}")
    r = c.call("KV.Get", [{"key": "k1"}], 2)
    check(r == {"id": 2, "result": "v1", "error": None}, f"get answers the value: {r}")
    r = c.call("KV.Put", [{"key": "k1", "value": "caf\u00e9 \"q\"\n"}], 3)
    r = c.call("KV.Get", [{"key": "k1"}], 4)
    check(r["result"] == "caf\u00e9 \"q\"\n", f"a value with escapes and UTF-8 survives: {r}")
    r = c.call("KV.Put", [{"key": "n\u0000k", "value": "a\u0000b"}], 5)
    check(r == {"id": 5, "result": True, "error": None}, f"a key and a value holding \\u0000 are taken: {r}")
    r = c.call("KV.Get", [{"key": "n\u0000k"}], 6)
    check(r["result"] == "a\u0000b", f"and come back whole: {r}")
    c.close()


def test_missing_key(port):
    c = Conn(port)
    r = c.call("KV.Get", [{"key": "never-put"}], 7)
    check(r == {"id": 7, "result": None, "error": "no such key"}, f"missing key: error string, result null: {r}")
    c.close()


def test_unknown_names(port):
    c = Conn(port)
    r = c.call("KV.Nope", [{}], 1)
    check(r["error"] == "rpc: can't find method KV.Nope", f"unknown method, Go's text: {r}")
    r = c.call("Nope.Get", [{}], 2)
    check(r["error"] == "rpc: can't find service Nope.Get", f"unknown service, Go's text: {r}")
    r = c.call("nodot", [{}], 3)
    check(r["error"] == "rpc: service/method request ill-formed: nodot", f"no dot, Go's text: {r}")
    r = c.call("KV.Get", {"key": "k"}, 4)
    check(r["error"] is not None and r["result"] is None, f"params not an array: an error for that call: {r}")
    r = c.call("KV.Put", [{"key": "still", "value": "served"}], 5)
    check(r["result"] is True, f"the connection goes on after those: {r}")
    c.close()


def test_builtin_methods(port):
    c = Conn(port)
    r = c.call("arpc.methods", [None], 1)
    want = ["arpc.methods", "arpc.stats", "kv.put", "kv.get", "KV.Put", "KV.Get"]
    check(r == {"id": 1, "result": want, "error": None}, f"arpc.methods: the names as a JSON array: {r}")
    # arpc.stats is laid out on lines by its writer: its response is still one line.
    r = c.call("arpc.stats", [None], 2)
    check(r["id"] == 2 and r["error"] is None and "kv.put" in r["result"]["methods"],
          f"arpc.stats: its object, on the response's one line: {r}")
    c.close()


def test_ids(port):
    c = Conn(port)
    for id_ in ["a string", 0, 18446744073709551615 // 2, -5, 2.5, None, [1, "x"], {"n": 1}, ""]:
        r = c.call("KV.Put", [{"key": "idk", "value": "v"}], id_)
        check(r["id"] == id_ and type(r["id"]) is type(id_), f"id {id_!r} echoed as sent: {r}")
    c.close()


def test_pipelined(port):
    """Many calls written at once, ids in no order; every reply matched by id (replies may come in
    any order: the keys spread over the server's shards, which run in parallel)."""
    c = Conn(port)
    n = 2000
    ids = list(range(n))
    random.Random(11).shuffle(ids)
    want = {}
    batch = []
    for i in ids:
        id_ = i if i % 2 else f"s{i}"
        if i % 3 == 0:
            batch.append({"method": "KV.Get", "params": [{"key": f"absent{i}"}], "id": id_})
            want[json.dumps(id_)] = (None, "no such key")
        else:
            batch.append({"method": "KV.Put", "params": [{"key": f"p{i}", "value": str(i)}], "id": id_})
            want[json.dumps(id_)] = (True, None)
    c.send_raw(b"".join(json.dumps(m).encode() + b"\n" for m in batch))
    got = {}
    for _ in range(n):
        r = c.reply()
        got[json.dumps(r["id"])] = (r["result"], r["error"])
    check(got == want, f"{n} pipelined calls, each answered once under its own id")
    # Read back through the same pipe: values follow the puts.
    for i in [1, 2, 4, 5, 1999 if 1999 % 3 else 1997]:
        r = c.call("KV.Get", [{"key": f"p{i}"}], 100000 + i)
        assert r["result"] == str(i), r
    check(True, "pipelined puts are visible to gets")
    c.close()


def test_stream_framing(port):
    """Objects split across writes byte by byte, several in one write, whitespace between them."""
    c = Conn(port)
    a = json.dumps({"method": "KV.Put", "params": [{"key": "fr", "value": "}{\"]["}], "id": 1}).encode()
    b = json.dumps({"method": "KV.Get", "params": [{"key": "fr"}], "id": 2}, indent=2).encode()
    stream = b" \r\n\t" + a + b"  \n\n" + b
    for i in range(len(stream)):
        c.send_raw(stream[i:i + 1])
    r1, r2 = c.reply(), c.reply()
    check(r1["id"] == 1 and r1["result"] is True, f"object sent a byte at a time: {r1}")
    check(r2 == {"id": 2, "result": "}{\"][", "error": None}, f"brackets inside strings, a pretty-printed object: {r2}")
    c.close()


def test_malformed(port):
    c = Conn(port)
    c.call("KV.Put", [{"key": "m", "value": "1"}], 1)
    c.send_raw(b'{"method": nope}\n{"method":"KV.Get","params":[{"key":"m"}],"id":2}\n')
    r = c.reply()
    check(r["id"] is None and r["result"] is None and r["error"].startswith("jsonrpc: malformed request"),
          f"malformed JSON: an error with id null: {r}")
    check(c.closed(), "then the connection is closed (nothing after it is read)")
    c.close()
    c = Conn(port)
    c.send_raw(b'[1, 2]\n')
    r = c.reply()
    check(r["id"] is None and r["error"] == "jsonrpc: expected a JSON object", f"not an object: {r}")
    check(c.closed(), "and closed")
    c.close()
    c = Conn(port)
    c.call("KV.Put", [{"key": "m2", "value": "1"}], 1)
    c.send_raw(b'\n"a string"\n')
    r = c.reply()
    check(r["id"] is None and r["error"] == "jsonrpc: expected a JSON object", f"a value after an object: {r}")
    check(c.closed(), "and closed")
    c.close()
    c = Conn(port)
    r = c.call("KV.Get", [{"key": "m"}], 3)
    check(r["result"] == "1", f"the server goes on serving: {r}")
    c.close()


def test_arpc_on_same_port(port, kv_client):
    c = Conn(port)
    c.call("KV.Put", [{"key": "shared", "value": "from json"}], 1)
    c.close()
    out = subprocess.run([kv_client, "--connect", f"tcp://127.0.0.1:{port}", "get", "shared"],
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    check(out.returncode == 0 and "from json" in out.stdout,
          f"an arpc client on the same port reads what JSON-RPC wrote: {out.stdout!r} {out.stderr!r}")
    out = subprocess.run([kv_client, "--connect", f"tcp://127.0.0.1:{port}", "put", "arpc-key", "from arpc"],
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0, out
    c = Conn(port)
    r = c.call("KV.Get", [{"key": "arpc-key"}], 2)
    check(r["result"] == "from arpc", f"and JSON-RPC reads what arpc wrote: {r}")
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kv-server", required=True)
    ap.add_argument("--kv-client", required=True)
    args = ap.parse_args()
    server = subprocess.Popen([args.kv_server, "--listen", "tcp://127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        assert first.startswith("kv_server listening on tcp://"), first
        port = int(first.rsplit(":", 1)[1])
        test_put_get(port)
        test_missing_key(port)
        test_unknown_names(port)
        test_builtin_methods(port)
        test_ids(port)
        test_pipelined(port)
        test_stream_framing(port)
        test_malformed(port)
        test_arpc_on_same_port(port, args.kv_client)
    finally:
        server.send_signal(signal.SIGTERM)
        rest, _ = server.communicate(timeout=TIMEOUT_S)
    assert server.returncode == 0 and "kv_server stopped" in rest, (server.returncode, rest)
    print("ok - kv_server stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
