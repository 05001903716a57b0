"""ONNX Runtime in a child process of its own: memory cap, wall-clock timeout, no network.

The scoring worker is threaded and holds the database credentials, so a participant's
model never runs inside it. :class:`ModelProcess` starts a fresh interpreter
(``python -m medarena.challenges.model_sandbox``, exec'd, never a fork of the worker) with
an environment that holds nothing but ``PATH`` and thread settings: no settings, no
database URL, no secret key. The child gets the model file's path on its command line and
nothing else; the worker keeps reading and preprocessing the cases and sends the child one
array at a time over its stdin, reading the outputs from its stdout.

In the child, before the model is loaded:

- ``os.unshare(CLONE_NEWNET)`` (through libc; the worker runs as root here): the child has
  a network namespace of its own with no interface but a down loopback. When the kernel
  refuses (not root, no user namespaces) the child goes on: ONNX Runtime has no network
  operator, and the child holds no credentials. The child reports which case applied.
- ``RLIMIT_AS`` = the address space the child has after importing ONNX Runtime plus the
  phase's ``memory_mb``: an allocation past it fails inside ONNX Runtime (reported as the
  memory limit) or kills the child (reported the same way).
- one intra-op and one inter-op thread, CPU provider only.

The worker waits for each answer until the case's deadline (``time_per_case_s`` from when
the case's first input is sent, every sliding window included) and kills the child when
it passes.

Messages are framed as a 4-byte length and a JSON header, followed by raw ``.npy`` arrays
read with ``allow_pickle=False``: nothing the child sends is unpickled by the worker.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

CLONE_NEWNET = 0x40000000
_LEN = struct.Struct("!I")


class SandboxError(Exception):
    """The child failed: ``kind`` is memory, time, crash or runtime; ``message`` says why."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(message)


def _pack(header: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    blobs = []
    for a in arrays:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
        blobs.append(buf.getvalue())
    header = {**header, "sizes": [len(b) for b in blobs]}
    head = json.dumps(header).encode()
    return _LEN.pack(len(head)) + head + b"".join(blobs)


def _unpack_arrays(header: dict[str, Any], payload: bytes) -> list[np.ndarray]:
    out, pos = [], 0
    for size in header.get("sizes", []):
        out.append(np.lib.format.read_array(io.BytesIO(payload[pos : pos + size]), False))
        pos += size
    return out


# --- the child ---------------------------------------------------------------------------


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _no_network() -> str:
    """Enter a network namespace of our own; what happened, for the worker's log."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            return f"refused ({os.strerror(ctypes.get_errno())})"
    except (OSError, AttributeError) as exc:
        return f"refused ({exc})"
    return "isolated"


def _child(model: str, memory_mb: int) -> None:
    import resource

    out = sys.stdout.buffer
    network = _no_network()
    import onnxruntime as ort

    cap = _vm_size_bytes() + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def send(header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> None:
        out.write(_pack(header, arrays or []))
        out.flush()

    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
    except MemoryError:
        send({"status": "error", "kind": "memory", "message": "loading the model"})
        return
    except Exception as exc:  # ORT's own classes
        send({"status": "error", **_classify(exc)})
        return
    send({"status": "ready", "network": network})
    stdin = sys.stdin.buffer
    while True:
        try:
            (n,) = _LEN.unpack(_read_exact(stdin, _LEN.size))
            header = json.loads(_read_exact(stdin, n))
            payload = _read_exact(stdin, sum(header["sizes"]))
        except EOFError:
            return
        (x,) = _unpack_arrays(header, payload)
        try:
            y = np.asarray(session.run(None, {name: x})[0])
        except MemoryError:
            send({"status": "error", "kind": "memory", "message": "MemoryError"})
            continue
        except Exception as exc:  # ORT's own classes
            send({"status": "error", **_classify(exc)})
            continue
        send({"status": "ok"}, [y])


def _classify(exc: BaseException) -> dict[str, str]:
    text = " ".join(str(exc).split())
    low = text.lower()
    at = low.find("failed to allocate")
    if at >= 0:  # ORT's arena: the long C++ location before it says nothing to a team
        return {"kind": "memory", "message": text[at:][:200]}
    memory = "bad_alloc" in low or "out of memory" in low
    return {"kind": "memory" if memory else "runtime", "message": text[:300]}


# --- the worker's side ---------------------------------------------------------------------


class ModelProcess:
    """One child running one model; ``run`` sends an input and waits until a deadline."""

    def __init__(self, model: Path, memory_mb: int, workdir: Path, start_timeout_s: float) -> None:
        self.memory_mb = memory_mb
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self._stderr = open(workdir / "model-process.log", "wb")  # noqa: SIM115 (closed in close)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", __name__, str(model), str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=str(workdir),
            close_fds=True,
        )
        header, _ = self._receive(time.monotonic() + start_timeout_s, "loading the model")
        if header["status"] != "ready":
            self.close()
            raise SandboxError(header["kind"], header["message"])
        self.network = str(header.get("network", ""))

    def run(self, x: np.ndarray, deadline: float) -> np.ndarray:
        """The model's first output for ``x``; SandboxError (child killed on time-out)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(_pack({}, [x]))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._crashed() from None
        header, arrays = self._receive(deadline, "inference")
        if header["status"] != "ok":
            raise SandboxError(header["kind"], header["message"])
        return arrays[0]

    def _receive(self, deadline: float, doing: str) -> tuple[dict[str, Any], list[np.ndarray]]:
        (n,) = _LEN.unpack(self._read(_LEN.size, deadline, doing))
        header = json.loads(self._read(n, deadline, doing))
        payload = self._read(sum(header.get("sizes", [])), deadline, doing)
        return header, _unpack_arrays(header, payload)

    def _read(self, n: int, deadline: float, doing: str) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        data = b""
        while len(data) < n:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self.close()
                raise SandboxError("time", f"time limit passed during {doing}")
            chunk = os.read(fd, min(n - len(data), 1 << 20))
            if not chunk:
                raise self._crashed()
            data += chunk
        return data

    def _crashed(self) -> SandboxError:
        code = self.proc.wait()
        self.close()
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        return SandboxError("crash", f"the inference process ended ({how})")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
