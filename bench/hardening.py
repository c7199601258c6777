"""Hardening figures (issue 11): the noisy neighbour and the tabs a server holds.

    uv run python bench/hardening.py [--json] [--quick] [--prompt-tokens 4000] [--tabs 300] [--only engine|tabs]

1. Noisy neighbour (engine level). One session streams greedily in its own thread (as a tab
   does) and the gap between its consecutive tokens is recorded. After a warm-up (its median
   gap is "the normal step"), another session starts with a long prompt, which is scored while
   the first one streams. Printed: the normal step, the worst gap while the prompt was scored,
   their ratio (target: <= 3 normal steps) and the prefill time. Once for the bundled
   SmolLM2-135M (context 8,192; a real text tokenised, --prompt-tokens long) and once for
   GPT-2 124M's config with random weights (context 1,024; a 1,000-token prompt).
2. Tabs held. A real `python -m tokviz_app` server (a tiny model folder, CPU) and N tabs that
   connect the way NiceGUI's page does: GET / (the page's HTML carries its client id), then a
   Socket.IO websocket on /_nicegui_ws/socket.io with the same query (client_id,
   next_message_id, implicit_handshake, document_id, tab_id), acknowledging received messages
   every 3 s as nicegui.js does. The tokviz page is built on the server once that socket
   connects. Printed: tabs connected and still connected after holding them, the server's RSS
   before and with the tabs, whether /healthz answers and how many tabs it counts, and how long
   one more tab's GET / takes while they are held.

--quick: a 1,000-token SmolLM2 prompt (GPT-2: 500) and 30 tabs, for a fast check.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import re
import shutil
import statistics
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import machine
from models import ROOT, TOKENIZER_VOCAB, build_random_gpt2

TARGET_STEPS = 3.0  # issue 11: an innocent tab's worst gap <= 3 normal steps
TEXT_FILES = ("README.md", "DESIGN.md")  # a real text for the bundled model's long prompt


# ----------------------------------------------------------------------------- noisy neighbour
def long_text_ids(model, n: int) -> list[int]:
    """`n` ids of a real text (this project's README and design notes, repeated as needed)."""
    text = "\n\n".join((ROOT / name).read_text(errors="replace") for name in TEXT_FILES if (ROOT / name).exists())
    ids = model.encode(text) or [1]
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def noisy_neighbour(model, long_ids: list[int], *, warmup_steps: int = 12, stream_prompt: int = 16,
                    after_steps: int = 3, timeout_s: float = 600) -> dict:
    """Worst gap between a streaming session's tokens while another session's long prompt is scored."""
    from tokviz_app.engine import SamplingParams
    from tokviz_app.core.errors import ContextFullError

    streaming = model.start_from_ids(long_ids[:stream_prompt], SamplingParams(greedy=True))
    stamps: list[float] = []  # time after each step
    done, failed = threading.Event(), []

    def stream() -> None:
        try:
            while not done.is_set():
                streaming.step()
                stamps.append(time.perf_counter())
        except ContextFullError:
            pass
        except Exception as error:  # reported, not swallowed
            failed.append(repr(error))

    thread = threading.Thread(target=stream, daemon=True, name="bench-stream")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while len(stamps) < warmup_steps + 1 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    warm = list(stamps)
    normal = statistics.median(b - a for a, b in zip(warm[1:], warm[2:]))  # not the first step: its own prefill

    started = time.perf_counter()
    other = model.start_from_ids(long_ids, SamplingParams(greedy=True))
    ended = time.perf_counter()
    count = len(stamps)
    while len(stamps) < count + after_steps and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    thread.join(60)
    other.close()
    streaming.close()
    if failed:
        raise RuntimeError(f"the streaming session failed: {failed[0]}")

    # Every gap that overlaps the prefill, including the one that ends at the first token after it.
    marks = list(stamps)
    during = [b - a for a, b in zip(marks, marks[1:]) if b > started and a < ended]
    if marks and marks[0] > started:  # (cannot happen after the warm-up, but never report nothing)
        during.append(marks[0] - started)
    worst = max(during) if during else float("nan")
    return {"prompt_tokens": len(long_ids), "context": model.context_length,
            "normal_step_ms": normal * 1000, "worst_gap_ms": worst * 1000,
            "median_gap_during_prefill_ms": statistics.median(during) * 1000 if during else float("nan"),
            "worst_over_normal": worst / normal, "target_steps": TARGET_STEPS,
            "meets_target": worst / normal <= TARGET_STEPS,
            "prefill_s": ended - started, "stream_steps_during_prefill": max(len(during) - 1, 0),
            "prefill_tokens_per_s": len(long_ids) / (ended - started)}


def engine_figures(prompt_tokens: int, gpt2_prompt_tokens: int) -> dict:
    import torch

    from tokviz_app.engine import ModelManager

    out: dict = {}
    manager = ModelManager(device="cpu")
    started = time.perf_counter()
    model = manager.load("smollm2-135m")
    load_s = time.perf_counter() - started
    ids = long_text_ids(model, prompt_tokens)
    out["smollm2-135m"] = {"model": "SmolLM2-135M (bundled)", "load_s": load_s,
                           "kernels": model.kernels.line() if model.kernels else "n/a",
                           **noisy_neighbour(model, ids)}
    manager.unload("smollm2-135m")
    del model

    folder = build_random_gpt2("gpt2")
    model = ModelManager(device="cpu").load(str(folder))
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, TOKENIZER_VOCAB, (min(gpt2_prompt_tokens, model.context_length - 100),),
                        generator=gen).tolist()
    try:
        out["gpt2"] = {"model": "GPT-2 124M config, random weights",
                       "kernels": model.kernels.line() if model.kernels else "n/a", **noisy_neighbour(model, ids)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # 475 MB of random weights, made for this run
    return out


# ----------------------------------------------------------------------------- tabs held
QUERY = re.compile(r"query:\s*(\{.*?\}),\s*\n")


def page_query(html: str) -> dict:
    """The Socket.IO query NiceGUI's page builds: the template's params plus document and tab ids."""
    found = QUERY.search(html)
    if not found:
        raise RuntimeError("no socket query in the page")
    try:  # the template writes the Python dict as it is (True, single quotes); JSON as a fallback
        query = ast.literal_eval(found.group(1))
    except (ValueError, SyntaxError):
        query = json.loads(found.group(1))
    query["document_id"], query["tab_id"] = str(uuid.uuid4()), str(uuid.uuid4())
    # socket.io's JS client writes booleans as true/false (the server compares with 'true')
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items()}


class Tab:
    """One emulated browser tab: its page's GET and its websocket, acknowledging messages like nicegui.js."""

    def __init__(self, base: str):
        import socketio

        self.base = base
        self.sio = socketio.AsyncClient(reconnection=False)
        self.client_id = ""
        self.next_message_id = 0
        self.messages = 0
        self.disconnected = False
        self.sio.on("*", self._on_message)
        self.sio.on("disconnect", self._on_disconnect)

    async def _on_message(self, event, data=None, *_):
        self.messages += 1
        if isinstance(data, dict) and isinstance(data.get("_id"), int):
            self.next_message_id = max(self.next_message_id, data["_id"] + 1)

    async def _on_disconnect(self, *_):
        self.disconnected = True

    async def open(self, http) -> float:
        started = time.perf_counter()
        async with http.get(self.base + "/") as response:
            response.raise_for_status()
            query = page_query(await response.text())
        get_s = time.perf_counter() - started
        self.client_id = query["client_id"]
        self.next_message_id = int(query.get("next_message_id", 0))
        await self.sio.connect(f"{self.base}/?{urllib.parse.urlencode(query)}", transports=["websocket"],
                               socketio_path="/_nicegui_ws/socket.io", wait_timeout=60)
        return get_s

    async def ack(self) -> None:
        if self.connected:
            await self.sio.emit("ack", {"client_id": self.client_id, "next_message_id": self.next_message_id})

    @property
    def connected(self) -> bool:
        return self.sio.connected and not self.disconnected

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.sio.disconnect(), 10)
        except Exception:
            pass


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


async def http_json(http, url: str, timeout: float = 10) -> tuple[dict | None, float]:
    import aiohttp

    started = time.perf_counter()
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return await response.json(), time.perf_counter() - started
    except Exception:
        return None, time.perf_counter() - started


async def hold_tabs(base: str, pid: int, n: int, hold_s: float, concurrency: int, budget_s: float) -> dict:
    import aiohttp

    out: dict = {"tabs_asked": n}
    deadline = time.monotonic() + budget_s
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        health, _ = await http_json(http, base + "/healthz")
        out["rss_idle_mb"] = rss_mb(pid)
        tabs: list[Tab] = []
        errors: list[str] = []
        gets: list[float] = []
        gate = asyncio.Semaphore(concurrency)

        async def open_one() -> None:
            async with gate:
                if time.monotonic() > deadline:
                    errors.append("time budget spent before this tab opened")
                    return
                tab = Tab(base)
                tabs.append(tab)
                try:
                    gets.append(await tab.open(http))
                except Exception as error:
                    errors.append(f"{type(error).__name__}: {error}")

        started = time.perf_counter()
        await asyncio.gather(*(open_one() for _ in range(n)))
        out["open_s"] = time.perf_counter() - started
        out["connected"] = sum(t.connected for t in tabs)
        out["open_errors"] = len(errors)
        out["first_error"] = errors[0] if errors else None
        out["get_ms_median_while_opening"] = statistics.median(gets) * 1000 if gets else None

        async def acks() -> None:
            while True:
                await asyncio.gather(*(t.ack() for t in tabs), return_exceptions=True)
                await asyncio.sleep(3)

        ack_task = asyncio.create_task(acks())
        # the server builds each tab's page once its socket connects and sends it: wait (bounded) for every page
        until = time.monotonic() + min(120, max(5, deadline - time.monotonic()))
        while time.monotonic() < until and any(t.connected and not t.messages for t in tabs):
            await asyncio.sleep(0.2)
        out["pages_received"] = sum(1 for t in tabs if t.messages)
        out["pages_built_s"] = time.perf_counter() - started
        # /healthz counts a tab once its socket is connected; wait (bounded) for it to count them all
        counted, until = 0, time.monotonic() + min(60, max(5, deadline - time.monotonic()))
        while time.monotonic() < until:
            health, _ = await http_json(http, base + "/healthz")
            counted = (health or {}).get("tabs", 0)
            if counted >= out["connected"]:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(hold_s)
        out["hold_s"] = hold_s
        health, healthz_s = await http_json(http, base + "/healthz")
        out["healthz_ok"] = bool(health and health.get("status") == "ok")
        out["healthz_ms"] = healthz_s * 1000
        out["healthz_tabs"] = (health or {}).get("tabs")
        out["still_connected"] = sum(t.connected for t in tabs)
        out["messages_per_tab"] = statistics.median(t.messages for t in tabs) if tabs else 0
        out["rss_held_mb"] = rss_mb(pid)
        out["rss_per_tab_mb"] = (out["rss_held_mb"] - out["rss_idle_mb"]) / max(out["still_connected"], 1)

        # one more tab's GET / while the others are held (and its websocket, so it is not left dangling)
        extra = Tab(base)
        started = time.perf_counter()
        try:
            out["extra_get_ms"] = await extra.open(http) * 1000
            out["extra_connect_ms"] = (time.perf_counter() - started) * 1000
        except Exception as error:
            out["extra_get_ms"] = None
            out["extra_error"] = f"{type(error).__name__}: {error}"
        tabs.append(extra)

        ack_task.cancel()
        await asyncio.gather(*(t.close() for t in tabs))
    return out


def raise_file_limit(n: int) -> None:
    """Each tab is a socket here and one in the server (which inherits this limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


def tabs_figures(n: int, hold_s: float, concurrency: int, budget_s: float) -> dict:
    from tests.server_process import clean_env, free_port, serve, server_errors, tokviz_command
    from tests.tiny_model import build_tiny_model

    raise_file_limit(n)
    work = Path(tempfile.mkdtemp(prefix="tokviz-bench-tabs-"))
    folder = build_tiny_model(work / "tiny")
    port = free_port()
    command = tokviz_command("--host", "127.0.0.1", "--port", str(port), "--model", str(folder), "--device", "cpu")
    env = clean_env(TOKVIZ_CACHE_DIR=str(work / "cache"))
    started = time.perf_counter()
    try:
        with serve(command, env, work / "server.log", port, check_errors=False) as server:
            out = {"server_start_s": time.perf_counter() - started}
            out.update(asyncio.run(hold_tabs(server.url, server.proc.pid, n, hold_s, concurrency, budget_s)))
        output = server.output()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bad = server_errors(output)
    out["server_error_lines"] = len(bad)
    out["first_server_error"] = bad[0][:300] if bad else None
    return out


# ----------------------------------------------------------------------------- output
def print_engine(results: dict) -> None:
    print("Noisy neighbour: one tab streams (greedy) while another tab's long prompt is scored (CPU)")
    print(f"{'model':36}{'context':>8}{'prompt':>8}{'normal step':>13}{'worst gap':>11}{'ratio':>8}"
          f"{'target':>8}{'prefill':>9}")
    for row in results.values():
        print(f"{row['model']:36}{row['context']:>8,}{row['prompt_tokens']:>8,}{row['normal_step_ms']:>10.1f} ms"
              f"{row['worst_gap_ms']:>8.0f} ms{row['worst_over_normal']:>7.1f}x{'<= 3x':>8}{row['prefill_s']:>7.1f} s"
              f"  {'ok' if row['meets_target'] else 'MISSES'}")
    for key, row in results.items():
        print(f"  {key}: {row['stream_steps_during_prefill']} streamed tokens during the prefill "
              f"(median gap {row['median_gap_during_prefill_ms']:.0f} ms), {row['prefill_tokens_per_s']:.0f} "
              f"prompt tokens/s")


def print_tabs(t: dict) -> None:
    print("Tabs held: a real tokviz server (tiny model, CPU), tabs connected over NiceGUI's websocket")
    rows = [
        ("tabs opened / connected", f"{t['tabs_asked']} / {t['connected']} in {t['open_s']:.1f} s"
                                    + (f" ({t['open_errors']} failed: {t['first_error']})" if t["open_errors"] else "")),
        ("pages received (built on connect)", f"{t['pages_received']} ({t['pages_built_s']:.1f} s after the first GET; "
                                              f"median {t['messages_per_tab']:.0f} messages a tab)"),
        ("still connected after holding", f"{t['still_connected']} (held {t['hold_s']:.0f} s)"),
        ("/healthz", f"{'ok' if t['healthz_ok'] else 'NO ANSWER'} in {t['healthz_ms']:.0f} ms, "
                     f"counts {t['healthz_tabs']} tabs"),
        ("server RSS idle -> held", f"{t['rss_idle_mb']:.0f} MB -> {t['rss_held_mb']:.0f} MB "
                                    f"({t['rss_per_tab_mb']:.2f} MB per tab)"),
        ("one more tab's GET / while held", f"{t['extra_get_ms']:.0f} ms" if t.get("extra_get_ms") is not None
         else f"failed: {t.get('extra_error')}"),
        ("median GET / while opening", f"{t['get_ms_median_while_opening']:.0f} ms"
         if t["get_ms_median_while_opening"] is not None else "n/a"),
        ("server ERROR/Traceback lines", f"{t['server_error_lines']}" + (f" (first: {t['first_server_error']})"
                                                                        if t["server_error_lines"] else "")),
    ]
    for label, value in rows:
        print(f"  {label:34}{value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes: 1,000-token prompt, 30 tabs")
    parser.add_argument("--prompt-tokens", type=int, help="the neighbour's prompt for SmolLM2 (default 4000)")
    parser.add_argument("--gpt2-prompt-tokens", type=int, help="the neighbour's prompt for GPT-2 (default 1000)")
    parser.add_argument("--tabs", type=int, help="tabs to hold (default 300)")
    parser.add_argument("--hold", type=float, help="seconds to hold them (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="tabs opening at once")
    parser.add_argument("--tabs-budget", type=float, default=600, help="seconds allowed for opening the tabs")
    parser.add_argument("--only", choices=["engine", "tabs"])
    args = parser.parse_args()
    prompt_tokens = args.prompt_tokens or (1000 if args.quick else 4000)
    gpt2_prompt_tokens = args.gpt2_prompt_tokens or (500 if args.quick else 1000)
    tabs = args.tabs or (30 if args.quick else 300)
    hold = args.hold if args.hold is not None else (3 if args.quick else 10)

    info = machine.describe()
    if not args.json:
        print(f"machine: {machine.line(info)}\n", flush=True)
    doc: dict = {"machine": info, "quick": args.quick}
    if args.only != "tabs":
        doc["noisy_neighbour"] = engine_figures(prompt_tokens, gpt2_prompt_tokens)
        if not args.json:
            print_engine(doc["noisy_neighbour"])
            print(flush=True)
    if args.only != "engine":
        doc["tabs_held"] = tabs_figures(tabs, hold, args.concurrency, args.tabs_budget)
        if not args.json:
            print_tabs(doc["tabs_held"])
    if args.json:
        print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
