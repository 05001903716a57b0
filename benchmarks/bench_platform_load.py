"""Challenge platform under load: leaderboard latency at 100 clients, memory of 20 big uploads.

With 1,000 scored submissions in a fresh data directory (see platform_bench_data.py):

1. ``medarena serve --workers 0`` on 127.0.0.1; ``wrk`` (Debian package) with 100
   connections for ``--duration`` seconds against the leaderboard page and the
   leaderboard JSON API; p50 / p99 latency and requests/s from ``wrk --latency``;
2. the same under ``uvicorn --workers 2 --factory`` (benchmarks/platform_app.py);
3. a fresh ``medarena serve --workers 0``; ``--uploads`` threads each stream a
   ``--upload-mb`` predictions archive (valid: it is checked and queued) with httpx;
   the server process's peak RSS (VmHWM in /proc/<pid>/status) is compared with
   ``--rss-bound-mb``.

Everything talks to 127.0.0.1 only, every step has a time limit, the servers are stopped
at the end, and the data directory is a temporary one (unless ``--data-dir``).

    .venv/bin/python benchmarks/bench_platform_load.py [--duration 20] [--connections 100]
        [--uploads 20] [--skip-load] [--skip-uploads] [--skip-multi]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import platform_bench_data as pbd

from medarena.config import get_settings

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(data_dir: Path, uvicorn_workers: int, log: Path) -> Server:
    """``medarena serve --workers 0`` (one process) or uvicorn with N worker processes."""
    port = free_port()
    env = {**os.environ, "MEDARENA_DATA_DIR": str(data_dir), "MEDARENA_LOG_LEVEL": "WARNING"}
    bindir = Path(sys.executable).parent
    if uvicorn_workers <= 1:
        cmd = [str(bindir / "medarena"), "serve", "--workers", "0"]
        cmd += ["--host", HOST, "--port", str(port)]
    else:
        cmd = [str(bindir / "uvicorn"), "--factory", "platform_app:app"]
        cmd += ["--app-dir", str(BENCH_DIR), "--host", HOST, "--port", str(port)]
        cmd += ["--workers", str(uvicorn_workers), "--log-level", "warning"]
    out = open(log, "wb")  # noqa: SIM115  (closed with the process's life)
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(proc, port, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"{srv.base}/healthz", timeout=2).status_code == 200:
                return srv
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    srv.stop()
    raise RuntimeError(f"server did not answer within 90 s; see {log}")


@dataclass
class WrkResult:
    url: str
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int
    errors: str


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r} not understood")
    return float(m.group(1)) * _UNIT[m.group(2)]


def run_wrk(url: str, connections: int, threads: int, duration: int) -> WrkResult:
    """``wrk --latency`` against ``url``; the figures from its report."""
    cmd = ["wrk", f"-c{connections}", f"-t{threads}", f"-d{duration}s", "--latency"]
    cmd += ["--timeout", "30s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True)
    text = out.stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    errs = [ln.strip() for ln in text.splitlines() if "Socket errors" in ln or "Non-2xx" in ln]
    if not (lat and rps and total):
        raise RuntimeError(f"wrk output not understood:\n{text}\n{out.stderr}")
    return WrkResult(
        url,
        _ms(lat["50"]),
        _ms(lat["99"]),
        float(rps.group(1)),
        int(total.group(1)),
        "; ".join(errs) or "none",
    )


def load_round(srv: Server, args: argparse.Namespace, label: str) -> list[tuple[str, WrkResult]]:
    """Warm the four boards once, then wrk the page and the API of one board."""
    for phase in pbd.PHASES:
        for track in pbd.TRACKS:
            t0 = time.perf_counter()
            r = httpx.get(
                f"{srv.base}/api/v1/challenges/{pbd.SLUG}/leaderboards/{phase}/{track}",
                timeout=120,
            )
            r.raise_for_status()
            print(f"  [{label}] first request {phase}/{track}: {time.perf_counter() - t0:.2f} s")
    page = f"{srv.base}/challenges/{pbd.SLUG}/leaderboard/prelim/seg"
    api = f"{srv.base}/api/v1/challenges/{pbd.SLUG}/leaderboards/prelim/seg"
    assert httpx.get(page, timeout=120).status_code == 200
    out = []
    for name, url in (("page", page), ("api", api)):
        res = run_wrk(url, args.connections, args.threads, args.duration)
        print(
            f"  [{label}] {name}: p50 {res.p50_ms:.1f} ms, p99 {res.p99_ms:.1f} ms, "
            f"{res.rps:.0f} req/s ({res.requests} requests; errors: {res.errors})"
        )
        out.append((name, res))
    return out


def _status(pid: int) -> dict[str, int]:
    got = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith(("VmHWM:", "VmRSS:")):
            key, val = ln.split(":")
            got[key] = int(val.split()[0]) // 1024  # kB -> MB
    return got


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def upload_round(srv: Server, archive: Path, tokens: list[str], n: int) -> dict[str, float]:
    """``n`` simultaneous streamed uploads; the server's RSS before, during, and its peak."""
    pid = srv.proc.pid
    before = _status(pid)
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(_status(pid)["VmRSS"])
            time.sleep(0.05)

    url = f"{srv.base}/api/v1/challenges/{pbd.SLUG}/submissions"
    params = {"track": "seg", "phase": "prelim", "filename": "predictions.zip"}
    start = threading.Barrier(n)

    def one(i: int) -> tuple[int, float, str]:
        start.wait(30)
        t0 = time.perf_counter()
        r = httpx.post(
            url,
            params=params,
            content=_chunks(archive),
            headers={
                "Authorization": f"Bearer {tokens[i]}",
                "Content-Type": "application/octet-stream",
            },
            timeout=httpx.Timeout(600, connect=30),
        )
        return r.status_code, time.perf_counter() - t0, r.text[:300]

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = _status(pid)
    bad = [(code, text) for code, _, text in results if code != 201]
    if bad:
        print(f"  {len(bad)} uploads failed, first: {bad[0]}")
    return {
        "ok": float(n - len(bad)),
        "wall_s": wall,
        "slowest_s": max(t for _, t, _ in results),
        "rss_before_mb": float(before["VmRSS"]),
        "rss_max_sampled_mb": float(max(samples or [0])),
        "peak_mb": float(after["VmHWM"]),
    }


def machine() -> str:
    cpu = "unknown CPU"
    for ln in Path("/proc/cpuinfo").read_text().splitlines():
        if ln.startswith("model name"):
            cpu = ln.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024**2
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem} GB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, help="keep the data here (default: temporary)")
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--teams", type=int, default=50)
    ap.add_argument("--bootstrap", type=int, default=1000, help="rank-interval resamples")
    ap.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--rss-bound-mb", type=int, default=400)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-multi", action="store_true", help="no uvicorn --workers 2 round")
    ap.add_argument("--skip-uploads", action="store_true")
    args = ap.parse_args()
    if shutil.which("wrk") is None and not args.skip_load:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="medarena-load-")
        args.data_dir = Path(tmp.name)
    root = args.data_dir
    data_dir = root / "data"
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}")
    try:
        t0 = time.perf_counter()
        data = pbd.build(
            get_settings(data_dir=data_dir),
            n_teams=args.teams,
            n_submissions=args.submissions,
            bootstrap=args.bootstrap,
        )
        print(
            f"data: {data.n_submissions} scored submissions, {args.teams} teams, "
            f"{len(pbd.PHASES)} phases x {len(pbd.TRACKS)} tracks, {len(data.val_cases)} "
            f"scored cases, bootstrap {args.bootstrap} ({time.perf_counter() - t0:.1f} s)"
        )
        if not args.skip_load:
            rounds = [("serve, 1 process", 1)]
            if not args.skip_multi:
                rounds.append(("uvicorn --workers 2", 2))
            for label, workers in rounds:
                srv = start_server(data_dir, workers, root / f"server-{workers}.log")
                try:
                    print(
                        f"load: {label}, wrk -c{args.connections} -t{args.threads} "
                        f"-d{args.duration}s --latency"
                    )
                    load_round(srv, args, label)
                finally:
                    srv.stop()
        if not args.skip_uploads:
            archive = root / "upload.zip"
            size = pbd.make_upload_archive(archive, data.val_cases)
            srv = start_server(data_dir, 1, root / "server-uploads.log")
            try:
                print(f"uploads: {args.uploads} x {size / 1e6:.0f} MB at once (httpx, streamed)")
                r = upload_round(srv, archive, data.tokens, args.uploads)
            finally:
                srv.stop()
            verdict = "within" if r["peak_mb"] < args.rss_bound_mb else "OVER"
            print(
                f"  {r['ok']:.0f}/{args.uploads} accepted in {r['wall_s']:.1f} s (slowest "
                f"{r['slowest_s']:.1f} s); server RSS before {r['rss_before_mb']:.0f} MB, "
                f"peak {r['peak_mb']:.0f} MB ({verdict} the {args.rss_bound_mb} MB bound; "
                f"{args.uploads} x {size / 1e6:.0f} MB = {args.uploads * size / 1e6:.0f} MB)"
            )
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
