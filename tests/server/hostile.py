#!/usr/bin/env python3
"""hostile.py - a hostile HTTP client for tests/cli/serve_harden.sh: raw
sockets against `kiln serve`, one named case per command-line argument.
Each case asserts status, body and that a normal request is still served
promptly; it prints "ok CASE" or raises (exit status 1 with the reason).

usage: hostile.py PORT CASE...   (the server listens on 127.0.0.1:PORT and
was started with the options serve_harden.sh gives it)"""
import json
import socket
import sys
import time

PORT = int(sys.argv[1])
MODEL = "llama"


def connect(src=None, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    s.connect(("127.0.0.1", PORT))
    return s


def read_all(s, limit=1 << 20):
    out = b""
    try:
        while len(out) < limit:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def split_response(raw):
    """(status, headers dict lower-case, body bytes) of the first response
    that is not an interim 1xx."""
    while True:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if 100 <= status < 200:
            raw = rest
            continue
        n = int(hdrs.get("content-length", len(rest)))
        return status, hdrs, rest[:n]


def request(method, path, body=None, headers=None, src=None, timeout=30.0):
    """One request on a new connection (Connection: close); (status,
    headers, body, seconds)."""
    t0 = time.time()
    s = connect(src, timeout)
    h = {"Host": "x", "Connection": "close"}
    if body is not None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    s.sendall(req.encode() + b"\r\n" + (body or b""))
    raw = read_all(s)
    s.close()
    st, hd, b = split_response(raw)
    return st, hd, b, time.time() - t0


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def error_of(body):
    e = json.loads(body)["error"]
    expect(set(e) == {"message", "type", "param", "code"}, f"error fields: {e}")
    return e


def normal_prompt(limit=0.5, src=None):
    """A small completion; asserts it answers 200 within limit seconds."""
    st, _, b, dt = request("POST", "/v1/completions",
                           {"model": MODEL, "prompt": "hi", "max_tokens": 2}, src=src)
    expect(st == 200, f"normal request: {st} {b[:200]}")
    expect(dt < limit, f"normal request took {dt:.3f} s (limit {limit} s)")
    return dt


# ---- cases


def case_slow_header():
    # the request line, then one header byte per second: closed with 408
    # after --header-timeout (2 s), while others are served
    s = connect()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    closed = False
    for c in b"X-Slow: " + b"a" * 30:
        try:
            s.sendall(bytes([c]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.5)
        if time.time() - t0 > 8:
            break
    raw = read_all(s)
    dt = time.time() - t0
    expect(closed or raw, "slow header: the connection was not closed")
    if raw:
        st, _, b = split_response(raw)
        expect(st == 408, f"slow header: status {st}")
        expect(error_of(b)["code"] == "request_timeout", f"slow header body {b}")
    expect(dt < 6, f"slow header: closed after {dt:.1f} s (header timeout 2 s)")
    normal_prompt()


def case_slow_new():
    # a connection that sends nothing, then trickles the request line
    s = connect()
    t0 = time.time()
    try:
        for c in b"GET /health HTTP/1.1\r\n":
            s.sendall(bytes([c]))
            time.sleep(0.5)
    except (BrokenPipeError, ConnectionResetError):
        pass
    read_all(s)
    dt = time.time() - t0
    expect(dt < 6, f"slow request line: closed after {dt:.1f} s")


def case_slow_body():
    # headers at once, then the body at ~10 bytes/s (under --body-min-rate 1000)
    s = connect()
    body = json.dumps({"model": MODEL, "prompt": "x" * 400, "max_tokens": 1}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    t0 = time.time()
    try:
        for i in range(0, len(body), 5):
            s.sendall(body[i:i + 5])
            time.sleep(0.5)
            if time.time() - t0 > 10:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    raw = read_all(s)
    dt = time.time() - t0
    expect(dt < 8, f"slow body: closed after {dt:.1f} s (min rate after 2 s)")
    if raw:
        st, _, _ = split_response(raw)
        expect(st == 408, f"slow body: status {st}")
    normal_prompt()


def case_flood():
    # 600 connections from another address (127.0.0.2) that send a partial
    # head and stall: the per-address limit (32) refuses most of them, and
    # a normal client from 127.0.0.1 is still served in < 0.5 s
    socks, refused = [], 0
    for _ in range(600):
        try:
            s = connect("127.0.0.2", timeout=2)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            refused += 1
    time.sleep(0.3)
    alive = 0
    for s in socks:
        try:
            s.setblocking(False)
            d = s.recv(1)
            alive += 0 if d == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    expect(alive <= 40, f"flood: {alive} stalled connections from one address are open (limit 32)")
    worst = max(normal_prompt(0.5) for _ in range(5))
    st, _, _, dt = request("GET", "/health")
    expect(st == 200 and dt < 0.5, f"flood: /health {st} in {dt:.3f} s")
    for s in socks:
        s.close()
    print(f"flood: {len(socks)} connected, {alive} held open, {refused} refused; "
          f"normal request worst {worst * 1e3:.1f} ms")


def case_global():
    """--max-connections 40, no per-address limit: 120 stalled connections
    (partial heads) from 127.0.0.2. A normal client is answered in < 0.5 s -
    200, or 503 with Retry-After while the limit is passed - and, once the
    stalled ones are closed (0.25 s header timeout over the limit), served."""
    socks = []
    for _ in range(120):
        try:
            s = connect("127.0.0.2", timeout=2)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            pass
    time.sleep(0.2)
    st, hd, b, dt = request("POST", "/v1/completions", {"model": MODEL, "prompt": "hi",
                                                        "max_tokens": 2})
    expect(dt < 0.5, f"global: answered in {dt:.3f} s")
    expect(st == 200 or (st == 503 and "retry-after" in hd and
                         error_of(b)["code"] == "too_many_connections"), f"global: {st} {b[:200]}")
    time.sleep(2.0)
    normal_prompt()
    for s in socks:
        s.close()
    print(f"global: {len(socks)} stalled connections; first answer {st} in {dt * 1e3:.1f} ms")


def _big_prompt(i):
    """One multi-megabyte prompt (a worker process of case_hol)."""
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod " * 70000
    if i % 2:
        body = {"model": MODEL, "messages": [{"role": "user", "content": words}], "max_tokens": 4}
        path = "/v1/chat/completions"
    else:
        body = {"model": MODEL, "prompt": words, "max_tokens": 4}
        path = "/v1/completions"
    st, _, b, dt = request("POST", path, body, timeout=120)
    return st, json.loads(b)["error"]["code"], dt


def case_hol():
    """Eight concurrent multi-megabyte prompts (completions and chat, which
    cannot fit the context), sent by other processes, while small requests
    run: each big one is a 400 context_length_exceeded, and every small one
    is answered in < 0.5 s."""
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(8) as pool:
        pending = pool.map_async(_big_prompt, range(8))
        small = []
        while not pending.ready() or len(small) < 5:
            small.append(normal_prompt(0.5))
        results = pending.get(120)
    expect(all(st == 400 and code == "context_length_exceeded" for st, code, _ in results),
           f"big requests: {results}")
    print(f"hol: 4.7 MB prompts x8 answered in {max(dt for _, _, dt in results):.3f} s at most; "
          f"{len(small)} small requests, worst {max(small) * 1e3:.1f} ms")


def raw_case(data, timeout=5.0):
    s = connect(timeout=timeout)
    s.sendall(data)
    raw = read_all(s)
    s.close()
    return raw


def case_nul_path():
    raw = raw_case(b"POST /v1/completions%00/../x HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/json\r\nContent-Length: 2\r\n\r\n{}")
    st, hd, b = split_response(raw)
    expect(st == 400 and "NUL" in error_of(b)["message"], f"NUL path: {st} {b}")
    expect(raw.count(b"HTTP/1.1 ") == 1, "NUL path: more than one response")


def case_dup_cl():
    for extra in (b"Content-Length: 2\r\nContent-Length: 2\r\n",
                  b"Content-Length: 2\r\nContent-Length: 30\r\n",
                  b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"):
        raw = raw_case(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/json\r\n" + extra + b"\r\n{}")
        st, hd, b = split_response(raw)
        expect(st == 400, f"{extra!r}: status {st}")
        expect(hd.get("connection", "").lower() == "close", f"{extra!r}: not closed: {hd}")
        expect(raw.count(b"HTTP/1.1 ") == 1, f"{extra!r}: more than one response")
        error_of(b)


def case_bad_cl():
    # libmicrohttpd 0.9.75 answers these itself (HTML, twice: documented in
    # docs/server.md); what Kiln guarantees: a 400, the connection closed,
    # nothing routed, the server still serving
    for v in (b"abc", b"-5"):
        raw = raw_case(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + v +
                       b"\r\n\r\n{}")
        expect(raw.startswith(b"HTTP/1.1 400 "), f"Content-Length {v!r}: {raw[:80]!r}")
        expect(b"Connection: close" in raw, f"Content-Length {v!r}: not closed")
    normal_prompt()


def case_half_close():
    # the request, then shutdown(SHUT_WR): the answer still comes, for a
    # non-streaming and a streaming request
    for stream in (False, True):
        s = connect(timeout=30)
        body = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 40,
                           "ignore_eos": True, "stream": stream}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        s.shutdown(socket.SHUT_WR)
        raw = read_all(s)
        s.close()
        st, _, b = split_response(raw)
        expect(st == 200, f"half-close (stream {stream}): {st} {b[:200]}")
        if stream:
            expect(b"data: [DONE]" in raw, f"half-close stream: no [DONE]: {raw[-200:]}")
        else:
            expect(json.loads(b)["usage"]["completion_tokens"] == 40, f"half-close: {b[:200]}")


def case_content_type():
    for ct in ("text/plain", "application/x-www-form-urlencoded", None):
        h = {"Content-Type": ct} if ct else {}
        body = json.dumps({"model": MODEL, "prompt": "x"}).encode()
        s = connect()
        hdrs = "".join(f"{k}: {v}\r\n" for k, v in h.items())
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{hdrs}"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        st, _, b = split_response(read_all(s))
        expect(st == 415 and error_of(b)["code"] == "unsupported_media_type", f"{ct}: {st} {b}")
    st, _, b, _ = request("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1},
                          headers={"Content-Type": "application/json; charset=utf-8"})
    expect(st == 200, f"json with charset: {st} {b}")


def case_params():
    def err(body, status, code=None, param=None, contains=None):
        st, _, b, _ = request("POST", "/v1/completions" if "prompt" in body else
                              "/v1/chat/completions", body)
        expect(st == status, f"{body if len(str(body)) < 300 else '...'}: status {st}: {b[:300]}")
        e = error_of(b)
        if code:
            expect(e["code"] == code, f"code {e['code']} want {code}")
        if param:
            expect(e["param"] == param, f"param {e['param']} want {param}")
        if contains:
            expect(contains in e["message"], f"message {e['message']!r} lacks {contains!r}")
        return e
    err({"model": MODEL, "prompt": "x", "max_tokens": -1}, 400, param="max_tokens")
    err({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, param="max_tokens")
    # --ctx 256: a prompt plus max_tokens beyond it is refused as OpenAI does
    err({"model": MODEL, "prompt": "x", "max_tokens": 300}, 400, code="context_length_exceeded",
        param="max_tokens", contains="maximum context length is 256")
    err({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
         "max_completion_tokens": 1000}, 400, code="context_length_exceeded")
    # without max_tokens: until the context is full (no error)
    st, _, b, _ = request("POST", "/v1/completions", {"model": MODEL, "prompt": "x",
                                                       "ignore_eos": True})
    expect(st == 200 and json.loads(b)["choices"][0]["finish_reason"] == "length", f"{st} {b[:200]}")
    # every token banned (vocabulary 300): 400, never a banned token
    ban = {str(i): -100 for i in range(300)}
    err({"model": MODEL, "prompt": "x", "max_tokens": 3, "logit_bias": ban}, 400,
        contains="no token can be sampled")
    ban.pop("7")
    st, _, b, _ = request("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 4,
                                                       "logit_bias": ban, "temperature": 1})
    expect(st == 200, f"all but one banned: {st} {b[:200]}")
    # an unknown 60 kB key: the error repeats at most a short prefix of it
    big = "k" * 60000  # (under --max-body 65536)
    st, _, b, _ = request("POST", "/v1/completions", {"model": MODEL, "prompt": "x", big: 1})
    expect(st == 400 and len(b) < 1024, f"60 kB key: {st}, {len(b)} bytes of error")
    # NUL in content: a plain message
    e = err({"model": MODEL, "prompt": "a\u0000b"}, 400, contains="NUL character")
    expect("JSON_ALLOW_NUL" not in e["message"], e["message"])


def case_body_413():
    # a client that writes its whole (over-limit) body before reading gets the 413
    body = b'{"prompt":"' + b"x" * 200000 + b'"}'
    s = connect()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    st, hd, b = split_response(read_all(s))
    s.close()
    expect(st == 413 and error_of(b)["code"] == "request_too_large", f"413: {st} {b[:200]}")


def case_api_key():
    key = "sekret"
    body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
    for h, want in (({}, 401), ({"Authorization": "Bearer nope"}, 401),
                    ({"Authorization": f"Bearer {key}"}, 200),
                    ({"Authorization": f"bearer {key}"}, 200), ({"X-Api-Key": key}, 200)):
        st, _, b, _ = request("POST", "/v1/completions", body, headers=h)
        expect(st == want, f"{h}: {st} want {want}")


def case_metrics_key():
    st, _, _, _ = request("GET", "/metrics")
    expect(st == 401, f"/metrics without its key: {st}")
    st, _, _, _ = request("GET", "/metrics", headers={"Authorization": "Bearer sekret"})
    expect(st == 401, f"/metrics with the API key instead of --metrics-key: {st}")
    st, _, b, _ = request("GET", "/metrics", headers={"Authorization": "Bearer mkey"})
    expect(st == 200 and b"kiln_http_requests_total" in b, f"/metrics with its key: {st}")


def case_public_metrics():
    st, _, b, _ = request("GET", "/metrics")
    expect(st == 200, f"--public-metrics: {st}")
    st, _, _, _ = request("POST", "/v1/completions", {"model": MODEL, "prompt": "x"})
    expect(st == 401, f"--public-metrics leaves /v1 keyed: {st}")


def case_drain():
    """SIGTERM (to $SRV_PID, started with --shutdown-timeout 2) while a
    long stream runs and a keep-alive connection is idle: new connections
    are refused at once, /health on the kept connection says "draining"
    with Retry-After, and the stream ends at the deadline with a final chunk
    whose finish_reason is set, then an error event, then [DONE]."""
    import os
    import signal
    k = connect()
    k.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    first = k.recv(4096)
    expect(first.startswith(b"HTTP/1.1 200"), f"keep-alive /health: {first[:60]!r}")
    st = connect(timeout=60)
    body = json.dumps({"model": "slow", "prompt": "x", "max_tokens": 8000, "ignore_eos": True,
                       "stream": True}).encode()
    st.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"data: " not in got:
        d = st.recv(65536)
        expect(d, "drain: the stream did not start")
        got += d
    os.kill(int(os.environ["SRV_PID"]), signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.time()
    try:
        connect(timeout=2).close()
        refused = False
    except (ConnectionRefusedError, socket.timeout, OSError):
        refused = True
    expect(refused and time.time() - t0 < 1, "drain: a new connection was accepted")
    k.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    stt, hd, b = split_response(read_all(k))
    expect(stt == 503 and json.loads(b)["status"] == "draining", f"drain /health: {stt} {b}")
    expect("retry-after" in hd, f"drain /health: no Retry-After: {hd}")
    rest = read_all(st)
    events = [ln[6:] for ln in rest.decode().split("\n") if ln.startswith("data: ")]
    expect(events and events[-1] == "[DONE]", f"drain stream end: {events[-3:]}")
    err = json.loads(events[-2])
    expect(err["error"]["code"] == "server_shutting_down", f"drain error event: {err}")
    fin = json.loads(events[-3])
    expect(fin["choices"][0]["finish_reason"] is not None, f"drain final chunk: {fin}")


if __name__ == "__main__":
    for name in sys.argv[2:]:
        t0 = time.time()
        globals()["case_" + name]()
        print(f"ok {name} ({time.time() - t0:.1f} s)", flush=True)
