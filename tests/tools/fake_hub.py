#!/usr/bin/env python3
"""fake_hub.py: a local stand-in for the Hugging Face hub, for tests only.

It answers the requests llmesh makes, as the hub does:
  HEAD|GET /ORG/REPO/resolve/REV/PATH   302 to /cdn/SHA256 with X-Repo-Commit,
                                        X-Linked-Etag, X-Linked-Size and ETag
  GET|HEAD /cdn/SHA256                  the bytes, with Range (206, Content-Range)
  GET /api/models/ORG/REPO/revision/REV {"id", "sha", "siblings": [{"rfilename", "size"}]}
  GET|HEAD /plain/NAME                  a file from --plain-dir, with Range, no hash
                                        headers (a URL reference to a plain server)
Files come from --root: ROOT/ORG/REPO/PATH. Every request is logged as one
JSON line to --log (method, path, range), which is how tests assert "no
request" or "resumed with Range". Faults, for tests of the client:
  --cut-once BYTES   the first whole-file GET of each file sends BYTES bytes, then
                     closes the connection (a broken download)
  --corrupt SUBSTR   files resolved by a path containing SUBSTR are served by
                     the CDN with one byte flipped, while the headers keep
                     publishing the true hash
  --token TOK        resolve and listing requests need "Authorization: Bearer TOK"
  --rate BPS         CDN bodies of more than 64 KiB are sent at about BPS bytes a
                     second (a download long enough to watch its progress)
The port it bound is written to --port-file. Never reaches the internet.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.cut_done = set()
        self.by_sha = {}  # sha256 -> path on disk
        self.sha_of = {}  # path on disk -> sha256
        self.corrupt = set()  # sha256 of files to serve damaged (copies share a sha)

    def sha(self, path):
        with self.lock:
            if path in self.sha_of:
                return self.sha_of[path]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        d = h.hexdigest()
        with self.lock:
            self.sha_of[path] = d
            self.by_sha[d] = path
        return d

    def log(self, entry):
        if not self.args.log:
            return
        with self.lock, open(self.args.log, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-hub/1"

    def log_message(self, fmt, *a):
        pass

    @property
    def hub(self):
        return self.server.hub

    def authorized(self):
        tok = self.hub.args.token
        if not tok or self.headers.get("Authorization") == "Bearer " + tok:
            return True
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_HEAD(self):
        self.route(head=True)

    def do_GET(self):
        self.route(head=False)

    def route(self, head):
        self.hub.log({"method": self.command, "path": self.path, "range": self.headers.get("Range")})
        parts = self.path.split("?")[0].split("/")
        if len(parts) >= 6 and parts[3] == "resolve":
            return self.resolve(parts[1], parts[2], parts[4], "/".join(parts[5:]), head)
        if len(parts) == 3 and parts[1] == "cdn":
            path = self.hub.by_sha.get(parts[2])
            return self.send_file(path, head, cdn=True, sha=parts[2])
        if len(parts) >= 7 and parts[1:3] == ["api", "models"] and parts[5] == "revision":
            return self.listing(parts[3], parts[4])
        if len(parts) == 3 and parts[1] == "plain" and self.hub.args.plain_dir:
            path = os.path.join(self.hub.args.plain_dir, os.path.basename(parts[2]))
            return self.send_file(path if os.path.isfile(path) else None, head, cdn=False)
        self.not_found()

    def not_found(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def repo_dir(self, org, repo):
        return os.path.join(self.hub.args.root, org, repo)

    def resolve(self, org, repo, rev, rel, head):
        if not self.authorized():
            return
        path = os.path.join(self.repo_dir(org, repo), rel)
        if ".." in rel.split("/") or not os.path.isfile(path) or rev not in ("main", COMMIT):
            return self.not_found()
        sha = self.hub.sha(path)
        if self.hub.args.corrupt and self.hub.args.corrupt in rel:
            with self.hub.lock:
                self.hub.corrupt.add(sha)
        self.send_response(302)
        self.send_header("Location", "/cdn/" + sha)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("X-Linked-Etag", '"%s"' % sha)
        self.send_header("X-Linked-Size", str(os.path.getsize(path)))
        self.send_header("ETag", '"%s"' % sha)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def listing(self, org, repo):
        if not self.authorized():
            return
        d = self.repo_dir(org, repo)
        if not os.path.isdir(d):
            return self.not_found()
        siblings = []
        for base, _, names in os.walk(d):
            for n in sorted(names):
                full = os.path.join(base, n)
                siblings.append({"rfilename": os.path.relpath(full, d), "size": os.path.getsize(full)})
        body = json.dumps({"id": org + "/" + repo, "sha": COMMIT, "siblings": siblings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_file(self, path, head, cdn, sha=None):
        if not path:
            return self.not_found()
        size = os.path.getsize(path)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        status = 200
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a) if a else 0
            end = min(int(b), size - 1) if b else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if head:
            return
        corrupt = sha in self.hub.corrupt
        cut = None
        if self.hub.args.cut_once and status == 200:
            with self.hub.lock:
                if path not in self.hub.cut_done:
                    self.hub.cut_done.add(path)
                    cut = self.hub.args.cut_once
        with open(path, "rb") as f:
            f.seek(start)
            left, pos = end - start + 1, start
            while left > 0:
                block = bytearray(f.read(min(left, 1 << 16)))
                if not block:
                    break
                if corrupt and pos <= size // 2 < pos + len(block):
                    block[size // 2 - pos] ^= 0xFF
                if cut is not None and pos + len(block) > cut:
                    self.wfile.write(block[: max(0, cut - pos)])
                    self.wfile.flush()
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                self.wfile.write(block)
                pos += len(block)
                if cdn and self.hub.args.rate and end - start + 1 > (1 << 16):
                    time.sleep(len(block) / self.hub.args.rate)
                left -= len(block)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--plain-dir")
    p.add_argument("--port-file", required=True)
    p.add_argument("--log")
    p.add_argument("--cut-once", type=int)
    p.add_argument("--corrupt")
    p.add_argument("--token")
    p.add_argument("--rate", type=int)
    args = p.parse_args()
    hub = Hub(args)
    # Hash every file up front so that /cdn/SHA finds it.
    for base, _, names in os.walk(args.root):
        for n in names:
            hub.sha(os.path.join(base, n))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.hub = hub
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(args.port_file + ".tmp", args.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
