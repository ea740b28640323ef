"""Load test of `dmoerm serve`, on the loopback interface only (127.0.0.1), bounded in count
and time. Run by benches/serve/run.sh, which builds the binaries; prints the tables that
BENCHMARKS.md records.

1. Throughput and latency at 1, 8 and 64 concurrent clients (oha, one conversation per
   request), against `dmoerm score --input` on the same rows with the same binary.
2. Overload: 2x more concurrent clients than the queue holds. Every request must get either a
   correct score (equal to the single-request score within 1e-4) or a 429; both are counted,
   nothing may be lost; the server's peak RSS is reported.
3. `kill -9` under load, then a restart: clients see connection errors only, and the restarted
   server scores correctly.

Standard library only.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
ROW = {
    "prompt": 'What does the word "harbor" mean?',
    "response": '"harbor" means a sheltered port where ships can take on or discharge cargo.',
}


class Server:
    """`dmoerm serve` on 127.0.0.1, any free port."""

    def __init__(self, dmoerm, model, *flags):
        self.proc = subprocess.Popen(
            [dmoerm, "serve", "--model", model, "--device", "cpu", "--addr", f"{HOST}:0", *flags],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if "http://" not in line:
            raise SystemExit(f"dmoerm serve did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        assert line.split("http://")[1].startswith(HOST + ":"), line

    def url(self, path):
        return f"http://{HOST}:{self.port}{path}"

    def peak_rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)


def post(port, path, body, timeout=120):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def oha(oha_bin, url, body_file, clients, requests):
    out = subprocess.run(
        [oha_bin, "--no-tui", "--output-format", "json", "-n", str(requests), "-c", str(clients),
         "-m", "POST", "-T", "application/json", "-D", body_file, "-t", "120s", url],
        check=True, capture_output=True, text=True, timeout=900,
    )
    return json.loads(out.stdout)


def throughput(args, body_file):
    server = Server(args.dmoerm, args.model)
    rows = []
    try:
        post(server.port, "/v1/score", {"inputs": [ROW]})  # warm up
        for clients in (1, 8, 64):
            n = max(args.requests, 4 * clients)
            report = oha(args.oha, server.url("/v1/score"), body_file, clients, n)
            summary, lat = report["summary"], report["latencyPercentiles"]
            codes = report.get("statusCodeDistribution", {})
            rows.append({
                "clients": clients, "requests": n, "rps": summary["requestsPerSec"],
                "p50_ms": lat["p50"] * 1e3, "p99_ms": lat["p99"] * 1e3,
                "ok": codes.get("200", 0), "errors": sum(report.get("errorDistribution", {}).values()),
            })
        peak = server.peak_rss_mb()
    finally:
        server.stop()
    return rows, peak


def cli_rate(args, rows):
    with tempfile.TemporaryDirectory() as d:
        inp, out = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        with open(inp, "w") as f:
            for _ in range(rows):
                f.write(json.dumps(ROW) + "\n")
        start = time.perf_counter()
        subprocess.run([args.dmoerm, "score", "--model", args.model, "--device", "cpu", "--input", inp,
                        "--output", out, "--batch-size", "64"], check=True, capture_output=True)
        return rows / (time.perf_counter() - start)


def overload(args):
    queue = 32
    clients = 2 * queue
    server = Server(args.dmoerm, args.model, "--queue-inputs", str(queue), "--max-inputs", str(queue))
    try:
        _, body = post(server.port, "/v1/score", {"inputs": [ROW]})
        want = json.loads(body)["scores"][0]["reward"]
        counts = {"ok": 0, "busy": 0, "wrong": 0, "other": 0}

        def one(_):
            status, body = post(server.port, "/v1/score", {"inputs": [ROW]})
            if status == 200:
                got = json.loads(body)["scores"][0]["reward"]
                return "ok" if abs(got - want) <= 1e-4 else "wrong"
            if status == 429:
                time.sleep(0.1)  # a client backing off (shorter than the Retry-After it was given)
                return "busy"
            return "other"

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            for outcome in pool.map(one, range(args.overload_requests)):
                counts[outcome] += 1
        seconds = time.perf_counter() - start
        peak = server.peak_rss_mb()
    finally:
        server.stop()
    return counts, clients, queue, seconds, peak


def kill9(args, body_file):
    server = Server(args.dmoerm, args.model)
    post(server.port, "/v1/score", {"inputs": [ROW]})
    load = subprocess.Popen(
        [args.oha, "--no-tui", "--output-format", "json", "-z", "6s", "-c", "8", "-m", "POST",
         "-T", "application/json", "-D", body_file, server.url("/v1/score")],
        stdout=subprocess.PIPE, text=True,
    )
    time.sleep(3)
    server.proc.kill()  # SIGKILL
    server.proc.wait(timeout=60)
    report = json.loads(load.communicate(timeout=120)[0])
    codes = report.get("statusCodeDistribution", {})
    errors = report.get("errorDistribution", {})
    restarted = Server(args.dmoerm, args.model)
    try:
        status, body = post(restarted.port, "/v1/score", {"inputs": [ROW]})
        _, again = post(restarted.port, "/v1/score", {"inputs": [ROW]})
        ok_after = status == 200 and json.loads(body) == json.loads(again)
    finally:
        restarted.stop()
    return codes, errors, ok_after


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dmoerm", required=True)
    p.add_argument("--oha", required=True)
    p.add_argument("--model", default="models/default/model.dmoerm")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--overload-requests", type=int, default=2000)
    p.add_argument("--cli-rows", type=int, default=1000)
    args = p.parse_args()

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"inputs": [ROW]}, f)
        body_file = f.name

    rows, peak = throughput(args, body_file)
    cli = cli_rate(args, args.cli_rows)
    print(f"\n## throughput, one conversation per request ({os.cpu_count()} cores)\n")
    print("| clients | requests | req/s | vs `score --input` | p50 ms | p99 ms | 200 | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['rps']:.1f} | {r['rps'] / cli:.2f}x | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['ok']} | {r['errors']} |")
    print(f"\n`dmoerm score --input` ({args.cli_rows} rows, --batch-size 64, model load included): {cli:.1f} rows/s; "
          f"server peak RSS {peak:.0f} MB")

    counts, clients, queue, seconds, peak = overload(args)
    total = sum(counts.values())
    print(f"\n## overload: {clients} clients, queue of {queue} ({args.overload_requests} requests, {seconds:.1f} s)\n")
    print(f"200 correct {counts['ok']}, 429 {counts['busy']}, 200 wrong {counts['wrong']}, "
          f"other {counts['other']}; answered {total} of {args.overload_requests}; peak RSS {peak:.0f} MB")

    codes, errors, ok_after = kill9(args, body_file)
    print("\n## kill -9 under load (8 clients), then a restart\n")
    print(f"status codes before the kill: {codes}; client errors: {errors}; "
          f"restarted server scores correctly: {ok_after}")

    bad = counts["wrong"] or counts["other"] or total != args.overload_requests or not ok_after
    bad = bad or any(r["errors"] for r in rows) or any(c not in ("200",) for c in codes)
    os.unlink(body_file)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
