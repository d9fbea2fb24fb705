#!/usr/bin/env python3
# A stand-in for netbootd's plan/blob/event endpoints in the VM smoke test, inetd style:
# QEMU's slirp `guestfwd=...-cmd:` runs it once per guest connection, with the request on
# stdin and the response on stdout, so nothing listens on any port. State lives in $SMOKE_DIR:
# layer.erofs(.zst), and the files `mode` (good | drop-first | corrupt), `disk`, `machine`.
import sys, os, json, hashlib
D = os.environ["SMOKE_DIR"]
def log(m):
    with open(f"{D}/server.log", "a") as f: f.write(m + "\n")
inp, out = sys.stdin.buffer, sys.stdout.buffer
line = inp.readline().decode().strip()
hdr = {}
while True:
    l = inp.readline().decode()
    if l in ("\r\n", "\n", ""): break
    k, _, v = l.partition(":"); hdr[k.strip().lower()] = v.strip()
log(f"{line} range={hdr.get('range')} auth={hdr.get('authorization')}")
method, path, _ = line.split(" ", 2)
def send(status, body=b"", extra=""):
    out.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n".encode() + body); out.flush()
mode = open(f"{D}/mode").read().strip() if os.path.exists(f"{D}/mode") else "good"
if method == "POST":
    body = inp.read(int(hdr.get("content-length", "0")))
    with open(f"{D}/events.log", "a") as f: f.write(body.decode() + "\n")
    send("204 No Content")
elif path.endswith("/plan"):
    if hdr.get("authorization") != "Bearer tok": send("403 Forbidden"); sys.exit()
    wire = open(f"{D}/layer.erofs.zst", "rb").read(); raw = open(f"{D}/layer.erofs", "rb").read()
    plan = {"machine": {"mac": "52:54:00:12:34:56", "name": "vm1"}, "mode": "compose",
            "disk": {"select": open(f"{D}/disk").read().strip() if os.path.exists(f"{D}/disk") else "none"},
            "layers": [{"name": "tiny", "version": 1, "kind": "system", "format": "erofs", "encoding": "zstd",
                        "size": len(wire), "uncompressed_size": len(raw),
                        "sha256": hashlib.sha256(wire).hexdigest(), "sha256_written": hashlib.sha256(raw).hexdigest(),
                        "url": "http://192.0.2.100:8080/blobs/layer"}],
            "machine_layer": open(f"{D}/machine").read().strip() if os.path.exists(f"{D}/machine") else "ephemeral", "init": "/sbin/init", "token": "tok",
            "events_url": "http://192.0.2.100:8080/api/v1/machines/52:54:00:12:34:56/events"}
    if mode == "corrupt": plan["layers"][0]["sha256"] = "0" * 64
    send("200 OK", json.dumps(plan).encode(), "Content-Type: application/json\r\n")
elif path == "/blobs/layer":
    wire = open(f"{D}/layer.erofs.zst", "rb").read()
    r = hdr.get("range")
    start = int(r.split("=")[1].rstrip("-")) if r else 0
    body = wire[start:]
    extra = f"Content-Range: bytes {start}-{len(wire)-1}/{len(wire)}\r\n" if r else ""
    status = "206 Partial Content" if r else "200 OK"
    if mode == "drop-first" and not os.path.exists(f"{D}/dropped"):
        open(f"{D}/dropped", "w").close()
        out.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n".encode() + body[:300000]); out.flush()
        log("dropped after 300000 bytes"); sys.exit()
    send(status, body, extra)
else:
    send("404 Not Found")
