"""Serving throughput and latency: the service on each serving variant vs a hand-written FastAPI
app, side by side in one run, with the in-process ceiling of each variant.

On TweetEval test tweets, one tweet per request, closed-loop clients (wrk) at each concurrency:
  textops <variant> (<batching>)  `bentoml serve` of the approved model, TEXTOPS_VARIANT=<variant>,
                     <batching>: `greedy` (the service and its batcher) or `bentoml` (the model
                     behind BentoML's adaptive batching, benchmarks/adaptive_batching.py), both on
                     the first variant
  fastapi            benchmarks/fastapi_baseline.py under uvicorn: one PyTorch forward per
                     request, the seeds' way
  ceiling <variant>  the model in-process on length-sorted batches of 32, no HTTP (texts/s)
Then, on the first variant: a soak at the top concurrency (memory at its start and end, every
status code counted) and an overload far past capacity (how fast and how it refuses).

    python benchmarks/serving.py --seconds 20 --concurrency 1 8 32 64 --soak-seconds 180
    python benchmarks/serving.py --variants onnx-int8 --batching greedy bentoml --no-fastapi
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tweeteval" / "hate" / "test_text.txt"
BIN = Path(sys.executable).parent


def tweets() -> list[str]:
    if not DATA.is_file():
        raise SystemExit(f"benchmark data not found at {DATA} (../shared is absent)")
    return [line.strip() for line in DATA.read_text().split("\n") if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process in its own session, ready when `ready_path` answers 200."""

    def __init__(self, command: list[str], env: dict[str, str], ready_path: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.env = {**os.environ, **env}
        self.ready_path = ready_path

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited during start")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{' '.join(self.command)} not ready in 180 s")

    def rss_mb(self) -> float:
        """Resident memory of the server and its children."""
        import psutil

        parent = psutil.Process(self.process.pid)
        processes = [parent, *parent.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes if p.is_running()) / 1e6

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


# The service with its own batcher, or the same model behind BentoML's adaptive batching
SERVICES = {
    "greedy": "bento.service:TextClassifier",
    "bentoml": "benchmarks.adaptive_batching:AdaptiveBatching",
}


def textops_server(model_tag: str, variant: str, batching: str) -> Server:
    return Server(
        [str(BIN / "bentoml"), "serve", SERVICES[batching]]
        + ["--host", "127.0.0.1", "--port", "{port}"],
        {
            "TEXTOPS_MODEL_TAG": model_tag,
            "TEXTOPS_VARIANT": variant,
            "BENTOML_DO_NOT_TRACK": "true",
            "TEXTOPS_SERVING_LOG": os.environ.get("TEXTOPS_SERVING_LOG", "off"),
        },
        "/readyz",
    )


def fastapi_server(model_dir: str) -> Server:
    return Server(
        [str(BIN / "uvicorn"), "benchmarks.fastapi_baseline:app"]
        + ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"],
        {"TEXTOPS_BASELINE_MODEL": model_dir},
        "/docs",
    )


# Every response's status is counted per thread and summed at the end.
WRK_SCRIPT = """
local bodies = {%s}
local threads = {}
local counter = 1
setup = function(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end
init = function(args)
  statuses = {}
  i = 0
end
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/classify", {["Content-Type"] = "application/json"}, bodies[i])
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, n in pairs(counts) do total[status] = (total[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(total) do table.insert(parts, status .. "=" .. n) end
  local failures = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format("RESULT %%d %%f %%f %%f %%d %%s\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), failures, table.concat(parts, ",")))
end
"""


def lua_string(text: str) -> str:
    return (
        '"' + "".join(f"\\{ord(c):03d}" if c in '"\\\n\r' or ord(c) < 32 else c for c in text) + '"'
    )


def load(url: str, script: Path, concurrency: int, seconds: float, warm_up: bool = True) -> dict:
    """Closed-loop load with wrk: req/s of 200s, p50/p99 latency, every status counted."""
    threads = min(concurrency, 2)
    if warm_up:
        subprocess.run(
            ["wrk", "-t1", f"-c{min(concurrency, 8)}", "-d2s", "-s", str(script), url],
            capture_output=True,
            check=True,
            timeout=60,
        )
    command = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:.0f}s"]
    command += ["--timeout", "30s", "-s", str(script), url]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 90
    ).stdout
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
    requests, duration_us, p50_us, p99_us, failures = (float(f) for f in fields[1:6])
    statuses = (
        dict(
            (int(k), int(v)) for k, v in (part.split("=") for part in fields[6].split(",") if part)
        )
        if len(fields) > 6
        else {}
    )
    ok = statuses.get(200, 0)
    return {
        "req_per_s": ok / (duration_us / 1e6),
        "p50_ms": p50_us / 1000,
        "p99_ms": p99_us / 1000,
        "requests": int(requests),
        "statuses": statuses,
        "errors": int(requests) - ok + int(failures),
    }


def ceiling(model_dir: str, variant: str, texts: list[str], seconds: float) -> float:
    """Texts/s of a variant in-process: length-sorted batches of 32, tokenization included."""
    from textops_core.inference import load_predictor, serving_settings

    max_length = int(serving_settings(Path(model_dir)).get("max_length", 128))
    predictor = load_predictor(Path(model_dir), max_length, variant, micro_batch=32)
    predictor.predict_proba(texts[:64])
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        chunk = texts[i : i + 256] or texts[:256]
        i = (i + 256) % len(texts)
        predictor.predict_proba(chunk)
        done += len(chunk)
    return done / (time.perf_counter() - started)


def row(name: str, stats: dict) -> str:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(stats["statuses"].items()))
    return (
        f"| {name} | {stats['concurrency']} | {stats['req_per_s']:.1f} | {stats['p50_ms']:.1f} "
        f"| {stats['p99_ms']:.1f} | {stats['errors']} | {statuses} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--variants", nargs="+", default=["onnx-int8", "onnx-fp32", "pytorch"])
    parser.add_argument(
        "--batching",
        nargs="+",
        default=["greedy", "bentoml"],
        choices=["greedy", "bentoml"],
        help="batchers measured on the first variant (the others run the first batcher)",
    )
    parser.add_argument("--no-fastapi", action="store_true", help="skip the FastAPI app")
    parser.add_argument("--model-tag", default="", help="default: the newest approved model")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument("--overload-concurrency", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for the load (Debian: apt-get install wrk)")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    import bentoml

    from textops_core.registry import serving_tag

    tag = args.model_tag or serving_tag()
    model_dir = bentoml.models.get(tag).path
    texts = tweets()
    script = Path(tempfile.mkdtemp()) / "classify.lua"
    script.write_text(WRK_SCRIPT % ",".join(lua_string(json.dumps({"texts": [t]})) for t in texts))
    results: dict = {"model_tag": tag, "cpu_count": os.cpu_count(), "runs": []}
    lines = [
        "| server | c | req/s | p50 ms | p99 ms | errors | statuses |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def measure(name: str, server: Server) -> None:
        with server:
            for level in args.concurrency:
                stats = {"server": name, "concurrency": level}
                stats |= load(server.url, script, level, args.seconds)
                results["runs"].append(stats)
                lines.append(row(name, stats))
                print(lines[-1], flush=True)

    for i, variant in enumerate(args.variants):
        for batching in args.batching if i == 0 else args.batching[:1]:
            measure(f"textops {variant} ({batching})", textops_server(tag, variant, batching))
    if not args.no_fastapi:
        measure("fastapi (PyTorch per request)", fastapi_server(model_dir))

    results["ceilings"] = {v: ceiling(model_dir, v, texts, args.seconds) for v in args.variants}
    for variant, value in results["ceilings"].items():
        print(f"ceiling {variant}: {value:.1f} texts/s", flush=True)

    if args.soak_seconds:
        variant = args.variants[0]
        top = max(args.concurrency)
        with textops_server(tag, variant, args.batching[0]) as server:
            load(server.url, script, top, 5)
            before = server.rss_mb()
            soak = load(server.url, script, top, args.soak_seconds, warm_up=False)
            after = server.rss_mb()
            overload = load(server.url, script, args.overload_concurrency, 20, warm_up=False)
            after_overload = server.rss_mb()
        soak |= {"server": f"textops {variant} soak", "concurrency": top}
        overload |= {
            "server": f"textops {variant} overload",
            "concurrency": args.overload_concurrency,
        }
        results["soak"] = soak | {"rss_mb_start": before, "rss_mb_end": after}
        results["overload"] = overload | {"rss_mb_end": after_overload}
        lines += [row(soak["server"], soak), row(overload["server"], overload)]
        print(lines[-2], f"RSS {before:.0f} -> {after:.0f} MB", flush=True)
        print(lines[-1], f"RSS {after_overload:.0f} MB", flush=True)

    by = {(r["server"], r["concurrency"]): r for r in results["runs"]}
    best, top = f"textops {args.variants[0]} ({args.batching[0]})", max(args.concurrency)
    summary = []
    if len(args.batching) > 1:
        other = f"textops {args.variants[0]} ({args.batching[1]})"
        for level in args.concurrency:
            if (best, level) in by and (other, level) in by:
                a, b = by[(best, level)], by[(other, level)]
                summary.append(
                    f"c={level}: {args.batching[0]} / {args.batching[1]} req/s "
                    f"{a['req_per_s'] / b['req_per_s']:.2f}x, p99 {a['p99_ms']:.0f} vs "
                    f"{b['p99_ms']:.0f} ms, errors {a['errors']} vs {b['errors']}"
                )
    if (best, top) in by and ("fastapi (PyTorch per request)", top) in by:
        ratio = (
            by[(best, top)]["req_per_s"] / by[("fastapi (PyTorch per request)", top)]["req_per_s"]
        )
        share = by[(best, top)]["req_per_s"] / results["ceilings"][args.variants[0]]
        summary.append(f"c={top}: {best} / fastapi {ratio:.2f}x; share of its ceiling {share:.0%}")
        results["ratio_vs_fastapi"], results["share_of_ceiling"] = ratio, share
    ceilings = ", ".join(f"{v} {c:.0f}" for v, c in results["ceilings"].items())
    print("\n".join(["", *lines, "", f"in-process ceilings (texts/s): {ceilings}", *summary]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
