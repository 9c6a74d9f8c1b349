"""A receiving SMTP server for outbound tests: stores each message it says
250 to as a JSON file, and misbehaves on request.

  sink.py HOST PORT DIR [--tempfail N] [--reject ADDR]... [--delay-first-data S]

--tempfail N         the first N transactions get 451 4.3.0 after the data
--reject ADDR        RCPT of ADDR gets 550 5.1.1
--delay-first-data S wait S seconds before answering the first message's
                     data; if the client went away meanwhile, store nothing
Writes DIR/ready when listening, DIR/inflight-N when a message's data has
arrived, DIR/msg-N.json for each stored message."""
import argparse
import json
import os
import socket
import socketserver
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("host")
p.add_argument("port", type=int)
p.add_argument("dir")
p.add_argument("--tempfail", type=int, default=0)
p.add_argument("--reject", action="append", default=[])
p.add_argument("--delay-first-data", type=float, default=0)
p.add_argument("--lifetime", type=float, default=300)
a = p.parse_args()

lock = threading.Lock()
state = {"tx": 0, "stored": 0}


class Handler(socketserver.StreamRequestHandler):
    timeout = 60

    def reply(self, s):
        self.wfile.write(s.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.reply("220 sink.test ESMTP test sink")
        mail_from, rcpts = None, []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            up = cmd.upper()
            if up.startswith("EHLO"):
                self.wfile.write(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 50000000\r\n")
                self.wfile.flush()
            elif up.startswith("HELO"):
                self.reply("250 sink.test")
            elif up.startswith("MAIL FROM:"):
                mail_from, rcpts = cmd[10:].split()[0].strip("<>"), []
                self.reply("250 2.1.0 ok")
            elif up.startswith("RCPT TO:"):
                r = cmd[8:].split()[0].strip("<>")
                if r in a.reject:
                    self.reply("550 5.1.1 <%s>: no such user here" % r)
                else:
                    rcpts.append(r)
                    self.reply("250 2.1.5 ok")
            elif up == "DATA":
                if not rcpts:
                    self.reply("554 5.5.1 no valid recipients")
                    continue
                self.reply("354 go ahead")
                data = b""
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    data += l[1:] if l.startswith(b"..") else l
                with lock:
                    state["tx"] += 1
                    n = state["tx"]
                open(os.path.join(a.dir, "inflight-%d" % n), "w").close()
                if n == 1 and a.delay_first_data:
                    time.sleep(a.delay_first_data)
                    self.connection.setblocking(False)
                    try:
                        gone = self.connection.recv(1) == b""
                    except BlockingIOError:
                        gone = False
                    except OSError:
                        gone = True
                    self.connection.setblocking(True)
                    if gone:
                        # The client died before it could see a reply: as
                        # far as it knows, nothing was delivered.
                        return
                if n <= a.tempfail:
                    self.reply("451 4.3.0 try again later")
                    continue
                with lock:
                    state["stored"] += 1
                    k = state["stored"]
                json.dump({"from": mail_from, "rcpts": rcpts, "data": data.decode("utf-8", "replace")},
                          open(os.path.join(a.dir, "msg-%d.json" % k), "w"))
                self.reply("250 2.0.0 stored as %d" % k)
            elif up == "RSET":
                mail_from, rcpts = None, []
                self.reply("250 ok")
            elif up == "QUIT":
                self.reply("221 bye")
                return
            elif up == "NOOP":
                self.reply("250 ok")
            else:
                self.reply("500 5.5.2 unknown command")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    # Many clients connect at once in the benchmarks.
    request_queue_size = 128


srv = Server((a.host, a.port), Handler)
open(os.path.join(a.dir, "ready"), "w").close()
threading.Timer(a.lifetime, srv.shutdown).start()
srv.serve_forever()
