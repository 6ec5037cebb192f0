"""Serving throughput and latency: adaptive batching vs per item vs the offline ceiling.

In one run, on TweetEval test tweets, one tweet per request:
  batched   `bentoml serve` with adaptive batching (length-sorted micro-batches inside)
  per-item  the same service with TEXTOPS_BATCHING=0 (batchable=False)
  ceiling   the model in-process on length-sorted batches, no HTTP (texts/s)
Closed-loop clients at each concurrency for a fixed time; reports req/s, p50/p99 latency and
the ratios. Serves the newest approved model in $BENTOML_HOME (or --model-tag). The load comes
from wrk (C, one connection per client) when it is installed, so that on a small machine the
client takes little of the CPU the server is measured on; else from a Python httpx client.

    python benchmarks/serving.py --seconds 20 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tweeteval" / "hate" / "test_text.txt"


def tweets() -> list[str]:
    if not DATA.is_file():
        raise SystemExit(f"benchmark data not found at {DATA} (../shared is absent)")
    return [line.strip() for line in DATA.read_text().split("\n") if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, model_tag: str, batching: bool) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "TEXTOPS_MODEL_TAG": model_tag,
            "BENTOML_DO_NOT_TRACK": "true",
            "TEXTOPS_BATCHING": "1" if batching else "0",
        }
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "bentoml"),
                "serve",
                "bento.service:TextClassifier",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("bentoml serve exited during start")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        raise TimeoutError("bentoml serve not ready in 180 s")

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


async def closed_loop(url: str, texts: list[str], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(worker: int, session: httpx.AsyncClient) -> None:
        nonlocal errors
        i = worker
        while time.perf_counter() < deadline:
            text = texts[i % len(texts)]
            i += concurrency
            started = time.perf_counter()
            response = await session.post(f"{url}/classify", json={"texts": [text]})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as session:
        # warm up the connection pool and the model
        await asyncio.gather(
            *(
                session.post(f"{url}/classify", json={"texts": [texts[0]]})
                for _ in range(concurrency)
            )
        )
        started = time.perf_counter()
        await asyncio.gather(*(client(w, session) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests": len(latencies),
        "errors": errors,
    }


WRK_SCRIPT = """
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/classify", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %%d %%f %%f %%f %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), errors))
end
"""


def wrk_closed_loop(
    url: str, texts: list[str], concurrency: int, seconds: float, script: Path
) -> dict:
    bodies = ",".join(lua_string(json.dumps({"texts": [t]})) for t in texts)
    script.write_text(WRK_SCRIPT % bodies)
    threads = min(concurrency, 2)
    # warm up, then measure
    subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", "-d2s", "-s", str(script), url],
        capture_output=True,
        check=True,
        timeout=60,
    )
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{seconds:.0f}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
    requests, duration_us, p50_us, p99_us, errors = (float(f) for f in fields[1:])
    return {
        "req_per_s": requests / (duration_us / 1e6),
        "p50_ms": p50_us / 1000,
        "p99_ms": p99_us / 1000,
        "requests": int(requests),
        "errors": int(errors),
        "client": "wrk",
    }


def lua_string(text: str) -> str:
    return (
        '"' + "".join(f"\\{ord(c):03d}" if c in '"\\\n\r' or ord(c) < 32 else c for c in text) + '"'
    )


def offline_ceiling(model_tag: str, texts: list[str], seconds: float, batch_size: int) -> float:
    import bentoml
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bento.inference import predict_proba

    stored = bentoml.models.get(model_tag)
    model = AutoModelForSequenceClassification.from_pretrained(stored.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(stored.path)
    max_length = int(stored.info.metadata.get("max_length", 128))
    torch.set_num_threads(torch.get_num_threads())
    predict_proba(model, tokenizer, texts[:64], max_length, batch_size)
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        chunk = texts[i : i + 256] or texts[:256]
        i = (i + 256) % len(texts)
        predict_proba(model, tokenizer, chunk, max_length, batch_size)
        done += len(chunk)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--model-tag", default="")
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument(
        "--python-client",
        action="store_true",
        help="use the Python httpx client even when wrk is installed",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    from bento.registry import serving_tag

    tag = args.model_tag or serving_tag()
    texts = tweets()
    results: dict = {"model_tag": tag, "cpu_count": os.cpu_count()}
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    script = Path(tempfile.mkdtemp()) / "classify.lua"
    for mode, batching in (("batched", True), ("per_item", False)):
        with Server(tag, batching) as server:
            for level in args.concurrency:
                if use_wrk:
                    stats = wrk_closed_loop(server.url, texts, level, args.seconds, script)
                else:
                    stats = asyncio.run(closed_loop(server.url, texts, level, args.seconds))
                results[f"{mode}@{level}"] = stats
                print(
                    f"{mode:9s} c={level:<3d} {stats['req_per_s']:7.1f} req/s  "
                    f"p50 {stats['p50_ms']:7.1f} ms  p99 {stats['p99_ms']:7.1f} ms  "
                    f"errors {stats['errors']}",
                    flush=True,
                )
    ceiling = offline_ceiling(tag, texts, args.seconds, args.micro_batch)
    results["ceiling_texts_per_s"] = ceiling
    print(
        f"ceiling   {ceiling:7.1f} texts/s (in-process, length-sorted batches of "
        f"{args.micro_batch})"
    )
    top = max(args.concurrency)
    batched, per_item = results[f"batched@{top}"], results[f"per_item@{top}"]
    results["batched_over_per_item"] = batched["req_per_s"] / per_item["req_per_s"]
    results["batched_share_of_ceiling"] = batched["req_per_s"] / ceiling
    print(
        f"c={top}: batched / per-item {results['batched_over_per_item']:.2f}x (target 1.6x); "
        f"batched / ceiling {results['batched_share_of_ceiling']:.0%} (target 85%); "
        f"batched p99 {batched['p99_ms']:.0f} ms (target 300 ms)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
