#!/usr/bin/env python3
"""A stub OpenAI-compatible server for kiln bench's tests.

Listens on 127.0.0.1, port 0 (the kernel picks one), prints "PORT <n>" on
stdout and serves until killed. Behaviour is chosen per request by path
segments before /v1, e.g. http://127.0.0.1:PORT/ttft=100/itl=20/v1/...:

  ttft=MS    delay before the first streamed token (default 100)
  itl=MS     delay between tokens (default 20)
  tokens=N   tokens to send when the request has no max_tokens (default 8)
  mode=ok    normal answers (default)
  mode=500   HTTP 500 with a JSON error
  mode=400   HTTP 400 with a JSON error
  mode=slow  wait 30 s before answering (for --timeout tests)
  mode=bad   a 200 answer that is not JSON / not SSE
  mode=serial one request at a time (a global lock held for the whole
             answer), so a rate above 1000/(ttft + tokens*itl) per second
             queues requests
  split=1    write every SSE event in two pieces with a pause between
  auth=KEY   answer 401 unless the request has "Authorization: Bearer KEY"
  strict=1   answer 400 to a field OpenAI does not know, except ignore_eos
             (as Kiln's server does)

Streams send one content event per token, then a usage event, then
data: [DONE]. GET .../v1/models lists one model, "stub-model"; GET /stats
answers {"max_in_flight": N}, the most POSTs it was answering at once.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERIAL = threading.Lock()
COUNT_LOCK = threading.Lock()
IN_FLIGHT = [0, 0]  # now, most at once


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def opts(self):
        o = {"ttft": 100.0, "itl": 20.0, "tokens": 8, "mode": "ok", "split": 0, "auth": None,
             "strict": 0}
        for seg in self.path.split("/"):
            if "=" in seg:
                k, v = seg.split("=", 1)
                o[k] = v if k in ("mode", "auth") else float(v)
        return o

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/stats":
            self.send_json(200, {"max_in_flight": IN_FLIGHT[1]})
        elif self.path.endswith("/v1/models"):
            self.send_json(200, {"object": "list",
                                 "data": [{"id": "stub-model", "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        with COUNT_LOCK:
            IN_FLIGHT[0] += 1
            IN_FLIGHT[1] = max(IN_FLIGHT)
        try:
            self.post()
        finally:
            with COUNT_LOCK:
                IN_FLIGHT[0] -= 1

    def post(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        o = self.opts()
        try:
            req = json.loads(raw)
        except ValueError:
            self.send_json(400, {"error": {"message": "body is not JSON"}})
            return
        mode = o["mode"]
        if o["auth"] is not None and self.headers.get("Authorization") != "Bearer " + o["auth"]:
            self.send_json(401, {"error": {"message": "bad or missing API key"}})
            return
        known = {"model", "messages", "prompt", "input", "max_tokens", "stream", "stream_options",
                 "temperature", "top_p", "ignore_eos"}
        if o["strict"] and set(req) - known:
            self.send_json(400, {"error": {"message": "unrecognized request argument supplied: "
                                           + ", ".join(sorted(set(req) - known))}})
            return
        if mode == "serial":
            with SERIAL:
                self.answer(req, o)
            return
        if mode in ("500", "400"):
            self.send_json(int(mode), {"error": {"message": "stub error " + mode}})
            return
        if mode == "slow":
            time.sleep(30)
        if mode == "bad":
            body = b"this is not json"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.answer(req, o)

    def answer(self, req, o):
        if self.path.endswith("/v1/embeddings"):
            inputs = req.get("input", [])
            if isinstance(inputs, str):
                inputs = [inputs]
            time.sleep(o["ttft"] / 1000)
            self.send_json(200, {"object": "list", "data": [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                for i in range(len(inputs))],
                "usage": {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)}})
            return
        chat = self.path.endswith("/chat/completions")
        ntok = int(req.get("max_tokens") or o["tokens"])
        if not req.get("stream"):
            time.sleep((o["ttft"] + o["itl"] * (ntok - 1)) / 1000)
            text = "tok " * ntok
            choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat \
                else {"index": 0, "text": text}
            self.send_json(200, {"choices": [choice],
                                 "usage": {"prompt_tokens": 5, "completion_tokens": ntok}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(obj):
            data = ("data: " + json.dumps(obj) + "\n\n").encode()
            if o["split"]:
                half = len(data) // 2
                self.wfile.write(data[:half])
                self.wfile.flush()
                time.sleep(0.002)
                data = data[half:]
            self.wfile.write(data)
            self.wfile.flush()

        t0 = time.monotonic()
        for i in range(ntok):
            # sleep to an absolute schedule so the stub's own overheads do not add up
            due = t0 + (o["ttft"] + o["itl"] * i) / 1000
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            delta = {"content": "tok "}
            if i == 0 and chat:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta} if chat else {"index": 0, "text": "tok "}
            event({"choices": [choice]})
        event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": ntok}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048  # listen() backlog: 1000 clients connect at once


def main():
    srv = Server(("127.0.0.1", 0), Handler)
    print("PORT", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
