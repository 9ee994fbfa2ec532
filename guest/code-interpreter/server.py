#!/usr/bin/env python3
"""Cella's stand-in for E2B's code-interpreter server (port 49999).

It speaks the protocol the unmodified @e2b/code-interpreter SDK uses, for
Python and JavaScript, with the standard library only (E2B's own server is
FastAPI over Jupyter, which needs PyPI):

  POST /execute {code, context_id?, language?, env_vars?}
      -> NDJSON lines: {"type":"stdout"|"stderr","text","timestamp"},
         {"type":"result","text","is_main_result":true} for the value of the
         last expression (a str as is, anything else as repr, None as
         nothing: what E2B's kernels show as text/plain),
         {"type":"error","name","value","traceback"},
         {"type":"number_of_executions","execution_count"},
         {"type":"end_of_execution"}
  POST /contexts {language?, cwd?} -> {id, language, cwd}
  GET /contexts, DELETE /contexts/<id>, POST /contexts/<id>/restart
  GET /health

Each context is a worker process whose globals persist between executions:
this file with --worker for Python, js-kernel.cjs on Debian's nodejs for
JavaScript ('js' or 'javascript', as E2B's ijavascript kernel); a restart
replaces the worker. Without a context, an execution runs in its language's
default context. A client that
goes away mid-execution (the SDK's timeout) interrupts it with SIGINT.
The sandbox's create-time env vars come from GET http://127.0.0.1:49983/envs,
the guest's envs listener, at a context's first execution, as E2B's server
does (that listener exists once the sandbox was created through E2B's API).
TypeScript, R, Java, Bash and other kernels of E2B's template are refused
with a clear error.
"""

import argparse
import ast
import builtins
import datetime
import json
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENVS_URL = os.environ.get('CELLA_ENVS_URL', 'http://127.0.0.1:49983/envs')
DEFAULT_CWD = '/home/user'
JS_KERNEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'js-kernel.cjs')
# The names the SDK passes through from runCode/createCodeContext, to the language a context reports.
LANGUAGES = {'python': 'python', 'js': 'javascript', 'javascript': 'javascript'}
MAX_BODY = 16 << 20
# What a warm-up runs in each default context: output and the last-expression path, with no value kept (no `_`).
WARM_UP_CELLS = {'python': 'print(sum(range(10)))', 'javascript': 'console.log(String([1, 2].map((x) => x * 2)))'}


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


# ---------------------------------------------------------------- the worker


class LineStream:
    """sys.stdout/sys.stderr of a worker: whole lines out as events, the rest at the end."""

    def __init__(self, kind, emit):
        self.kind = kind
        self.emit = emit
        self.buf = ''

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f'write() argument must be str, not {type(text).__name__}')
        self.buf += text
        cut = self.buf.rfind('\n')
        if cut >= 0:
            out, self.buf = self.buf[: cut + 1], self.buf[cut + 1 :]
            self.emit({'type': self.kind, 'text': out, 'timestamp': now()})
        return len(text)

    def flush(self):
        if self.buf:
            out, self.buf = self.buf, ''
            self.emit({'type': self.kind, 'text': out, 'timestamp': now()})

    def isatty(self):
        return False

    @property
    def encoding(self):
        return 'utf-8'


def shown(value):
    """The text/plain E2B's kernels give a value: a str as is, None not at all."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return repr(value)


def run_cell(code, namespace):
    """Runs `code` like a notebook cell; returns the value of its last expression statement."""
    tree = ast.parse(code, '<cell>', 'exec')
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, '<cell>', 'exec'), namespace)
    if last is None:
        return None
    value = eval(compile(last, '<cell>', 'eval'), namespace)
    if value is not None:
        namespace['_'] = value
    return value


def error_event(exc):
    tb = exc.__traceback__
    # The worker's own frames (run_cell, exec) are not the user's.
    while tb is not None and tb.tb_frame.f_code.co_filename != '<cell>':
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return {'type': 'error', 'name': type(exc).__name__, 'value': str(exc), 'traceback': ''.join(lines)}


def worker_main():
    # The protocol owns the original stdout; code (and what it spawns) writes to stderr's fd.
    chan = os.fdopen(os.dup(1), 'w', buffering=1, encoding='utf-8')
    os.dup2(2, 1)
    lock = threading.Lock()

    def emit(event):
        with lock:
            chan.write(json.dumps(event) + '\n')

    namespace = {'__name__': '__main__', '__builtins__': builtins}
    out, err = LineStream('stdout', emit), LineStream('stderr', emit)
    while True:
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            continue  # an interrupt that came after its execution ended
        if not line:
            return
        req = json.loads(line)
        os.environ.update(req.get('global_env') or {})
        scoped = req.get('env') or {}
        saved = {k: os.environ.get(k) for k in scoped}
        os.environ.update(scoped)
        sys.stdout, sys.stderr = out, err
        try:
            value = run_cell(req['code'], namespace)
            out.flush()
            err.flush()
            text = shown(value)
            if text is not None:
                emit({'type': 'result', 'text': text, 'is_main_result': True})
        except BaseException as exc:  # noqa: BLE001 - the cell's errors, KeyboardInterrupt and SystemExit included, are its result
            out.flush()
            err.flush()
            emit(error_event(exc))
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        emit({'type': 'done'})


# ---------------------------------------------------------------- the server


class RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def language_of(name):
    """The language `name` asks for (none means Python); a RequestError for one Cella does not run."""
    key = (name or 'python').strip().lower()
    if key in LANGUAGES:
        return LANGUAGES[key]
    hint = ' (write JavaScript instead: no TypeScript compiler here)' if key in ('ts', 'typescript') else ''
    raise RequestError(400, f"language '{name}' is not supported{hint}: Cella's code interpreter runs python and javascript (js)")


class Context:
    def __init__(self, language, cwd):
        self.id = uuid.uuid4().hex
        self.language = language
        self.cwd = cwd
        self.lock = threading.Lock()
        self.executions = 0
        self.env_sent = False
        self.proc = None
        self.chan = None  # the fd the worker's events come on
        self.pending = b''
        self.start()

    def view(self):
        return {'id': self.id, 'language': self.language, 'cwd': self.cwd}

    def start(self):
        if self.language == 'python':
            self.proc = subprocess.Popen(
                [sys.executable, '-u', os.path.abspath(__file__), '--worker'],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=self.cwd,
                bufsize=0,
            )
            self.chan = self.proc.stdout.fileno()
        else:
            # Node cannot move its stdout aside as the Python worker does: the events get a pipe of their own.
            self.chan, w = os.pipe()
            try:
                self.proc = subprocess.Popen(
                    ['node', '--expose-internals', '--experimental-vm-modules', '--no-warnings', JS_KERNEL, str(w)],
                    stdin=subprocess.PIPE,
                    stdout=sys.stderr.fileno(),
                    pass_fds=(w,),
                    cwd=self.cwd,
                    bufsize=0,
                )
            except OSError:
                os.close(self.chan)
                raise
            finally:
                os.close(w)
        self.pending = b''
        self.env_sent = False

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.language == 'python':
            self.proc.stdout.close()
        elif self.chan is not None:
            os.close(self.chan)
        self.chan = None
        self.proc.stdin.close()

    def restart(self):
        with self.lock:
            self.stop()
            self.start()

    def execute(self, code, env, client, write):
        """Runs `code`; `write(event)` sends an event and returns False once the client is gone."""
        with self.lock:
            if self.proc.poll() is not None:
                self.stop()
                self.start()
            global_env = None if self.env_sent else sandbox_env()
            self.executions += 1
            req = {'code': code, 'env': env, 'global_env': global_env}
            self.proc.stdin.write((json.dumps(req) + '\n').encode())
            self.env_sent = self.env_sent or global_env is not None
            connected = True
            for event in self.events(client):
                if event is None:  # the client hung up: interrupt the cell, keep reading to its end
                    connected = False
                    self.proc.send_signal(signal.SIGINT)
                    continue
                if event['type'] == 'done':
                    break
                if connected:
                    connected = write(event)
            else:
                if connected:
                    connected = write({'type': 'error', 'name': 'KernelDied', 'value': f'the {self.language} worker exited; its state is lost', 'traceback': ''})
                self.stop()
                self.start()
            if connected:
                connected = write({'type': 'number_of_executions', 'execution_count': self.executions})
            if connected:
                write({'type': 'end_of_execution'})

    def warm_up(self):
        """
        Runs WARM_UP_CELLS[language] once, for Cella's pooled clones under TCG (ADR 0010): the clone's QEMU then
        holds the worker's translated code, and a sandbox's first cell does not pay for it (about 4 s for
        Python, 2 s for JavaScript). It counts no execution, leaves no name or result behind, and sends no
        env vars, so the sandbox's own are still fetched by its first real cell.
        """
        with self.lock:
            if self.proc.poll() is not None:
                return
            req = {'code': WARM_UP_CELLS[self.language], 'env': {}, 'global_env': None}
            self.proc.stdin.write((json.dumps(req) + '\n').encode())
            for event in self.events(None):
                if event is not None and event['type'] == 'done':
                    break
            else:
                self.stop()
                self.start()

    def events(self, client):
        """The worker's events until it exits; None once when the client's socket closes (no client: never)."""
        out = self.chan
        watch = [out] if client is None else [out, client]
        while True:
            while b'\n' in self.pending:
                line, self.pending = self.pending.split(b'\n', 1)
                yield json.loads(line)
            ready, _, _ = select.select(watch, [], [])
            if client in ready:
                try:
                    gone = client.recv(1, 0x2) == b''  # MSG_PEEK: a request body is already read, so EOF means gone
                except OSError:
                    gone = True
                if gone:
                    watch = [out]
                    yield None
            if out in ready:
                chunk = os.read(out, 65536)
                if not chunk:
                    return
                self.pending += chunk


_env_cache = None
_env_lock = threading.Lock()


def sandbox_env():
    """The sandbox's create-time env vars from the guest's envs listener; None while it cannot say."""
    global _env_cache
    with _env_lock:
        if _env_cache is None:
            try:
                with urllib.request.urlopen(ENVS_URL, timeout=2) as r:
                    got = json.loads(r.read())
                _env_cache = {str(k): str(v) for k, v in got.items()} if isinstance(got, dict) else {}
            except (OSError, ValueError) as exc:
                print(f'code-interpreter: {ENVS_URL}: {exc}', file=sys.stderr)
        return _env_cache


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.contexts = {}
        self.defaults = {}  # language -> its default context

    def create(self, language, cwd):
        language = language_of(language)
        cwd = cwd or DEFAULT_CWD
        if not os.path.isdir(cwd):
            raise RequestError(400, f'cwd {cwd} is not a directory')
        ctx = Context(language, cwd)
        with self.lock:
            self.contexts[ctx.id] = ctx
        return ctx

    def get(self, cid):
        with self.lock:
            ctx = self.contexts.get(cid)
        if ctx is None:
            raise RequestError(404, f'context {cid} not found')
        return ctx

    def remove(self, cid):
        with self.lock:
            ctx = self.contexts.pop(cid, None)
            if ctx is not None and self.defaults.get(ctx.language) is ctx:
                del self.defaults[ctx.language]
        if ctx is None:
            raise RequestError(404, f'context {cid} not found')
        ctx.stop()

    def default_context(self, language):
        language = language_of(language)
        with self.lock:
            ctx = self.defaults.get(language)
        if ctx is not None:
            return ctx
        ctx = self.create(language, DEFAULT_CWD if os.path.isdir(DEFAULT_CWD) else os.getcwd())
        with self.lock:
            winner = self.defaults.setdefault(language, ctx)
        if winner is not ctx:  # two first executions raced: one default context per language
            self.remove(ctx.id)
        return winner

    def listed(self):
        with self.lock:
            return [c.view() for c in self.contexts.values()]


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'cella-code-interpreter'
    state = None  # set by serve()

    def log_message(self, fmt, *args):
        pass

    def body(self):
        n = int(self.headers.get('Content-Length') or 0)
        if n > MAX_BODY:
            raise RequestError(413, 'request body too large')
        raw = self.rfile.read(n) if n else b''
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RequestError(400, f'the body is not JSON: {exc}') from exc
        if not isinstance(data, dict):
            raise RequestError(400, 'the body must be a JSON object')
        return data

    def answer(self, status, payload=None):
        data = b'' if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def fail(self, err):
        self.send_response(err.status, str(err))
        data = json.dumps({'message': str(err)}).encode()
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self, method):
        path = self.path.split('?', 1)[0].rstrip('/') or '/'
        parts = path.strip('/').split('/')
        try:
            if method == 'GET' and path == '/health':
                return self.answer(200, 'OK')
            if method == 'POST' and path == '/execute':
                return self.execute(self.body())
            if method == 'POST' and path == '/warm-up':
                self.body()
                for ctx in list(self.state.defaults.values()):
                    ctx.warm_up()
                return self.answer(204)
            if path == '/contexts':
                if method == 'POST':
                    b = self.body()
                    return self.answer(200, self.state.create(b.get('language'), b.get('cwd')).view())
                if method == 'GET':
                    return self.answer(200, self.state.listed())
            if len(parts) == 2 and parts[0] == 'contexts' and method == 'DELETE':
                self.state.remove(parts[1])
                return self.answer(204)
            if len(parts) == 3 and parts[0] == 'contexts' and parts[2] == 'restart' and method == 'POST':
                self.state.get(parts[1]).restart()
                return self.answer(204)
            raise RequestError(404, f'no route {method} {path}')
        except RequestError as err:
            self.fail(err)

    def execute(self, b):
        code = b.get('code')
        if not isinstance(code, str):
            raise RequestError(400, 'code must be a string')
        env = b.get('env_vars') or {}
        if not isinstance(env, dict):
            raise RequestError(400, 'env_vars must be an object')
        env = {str(k): str(v) for k, v in env.items()}
        cid, language = b.get('context_id'), b.get('language')
        if cid and language:
            raise RequestError(400, 'give context_id or language, not both')
        if cid:
            ctx = self.state.get(cid)
        else:
            ctx = self.state.default_context(language)
        self.send_response(200)
        self.send_header('Content-Type', 'application/x-ndjson')
        self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()

        def write(event):
            data = (json.dumps(event) + '\n').encode()
            try:
                self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
                self.wfile.flush()
                return True
            except OSError:
                return False

        ctx.execute(code, env, self.connection, write)
        try:
            self.wfile.write(b'0\r\n\r\n')
        except OSError:
            self.close_connection = True

    def do_GET(self):
        self.route('GET')

    def do_POST(self):
        self.route('POST')

    def do_DELETE(self):
        self.route('DELETE')


def serve(host, port):
    Handler.state = State()
    # The default contexts are ready before the first request (and in the image's snapshot), as E2B's
    # server starts its JavaScript one: a Node start costs seconds under TCG.
    Handler.state.default_context('python')
    Handler.state.default_context('javascript')
    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    httpd.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--host', default='0.0.0.0')
    p.add_argument('--port', type=int, default=49999)
    a = p.parse_args()
    if a.worker:
        worker_main()
    else:
        serve(a.host, a.port)


if __name__ == '__main__':
    main()
