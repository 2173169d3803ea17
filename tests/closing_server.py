"""An HTTP/1.1 server that loses the keep-alive race on purpose: a request that arrives on a connection idle longer
than `idle_s` finds it closed, unanswered, as when a server's idle timer fires while the request is in flight."""

from __future__ import annotations

import socketserver
import threading
import time

import h11

CHAT_COMPLETION = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"mock-small","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Red, green and blue."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}'
)


class _Connection(socketserver.BaseRequestHandler):
    server: IdleClosingServer

    def handle(self) -> None:
        http = h11.Connection(h11.SERVER)
        answered_at: float | None = None
        between_requests = True
        while True:
            data = self.request.recv(65_536)
            if not data:
                return
            if between_requests and answered_at is not None and time.monotonic() - answered_at > self.server.idle_s:
                self.server.dropped += 1
                return  # closed with the request unread
            between_requests = False
            http.receive_data(data)
            while (event := http.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.EndOfMessage):
                    headers = [("content-type", "application/json"), ("content-length", str(len(CHAT_COMPLETION)))]
                    self.request.sendall(http.send(h11.Response(status_code=200, headers=headers)))
                    self.request.sendall(http.send(h11.Data(data=CHAT_COMPLETION)) + http.send(h11.EndOfMessage()))
                    self.server.answered += 1
                    answered_at = time.monotonic()
                    between_requests = True
                    http.start_next_cycle()
                    break


class IdleClosingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, idle_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Connection)
        self.idle_s = idle_s
        self.answered = 0
        self.dropped = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> IdleClosingServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
