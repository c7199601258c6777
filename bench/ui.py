"""UI cost of streaming and of opening the alternatives menu, measured on the server.

    uv run python bench/ui.py [--tokens 1000]

Runs the real page (NiceGUI's user simulation, no browser) on the fake engine from
tests/fake_backend.py with zero-cost steps, so only the UI's own work is timed:

1. per streamed token: building the chip plus producing the update message the
   outbox would send (element dicts for every updated element, JSON-encoded),
   averaged over tokens 1-100 and over tokens 901-1000. The ratio shows whether
   the cost grows with the number of tokens already on the page (it must not).
2. per streamed token through the whole "Generate to End" path (worker thread hop,
   state, chip, outbox loop) with the fake engine, for 100 and 1,000 tokens.
3. click on a token -> menu built, with 1,000 tokens on the page (same measure as 1).

Measured here (2 CPU cores): about 0.13 ms per token for 1 and flat (last/first ~0.95-1.0);
about 0.6-0.7 ms per token for 2, where the slight drift between the first and last 100
tokens comes from Python's cyclic GC scanning a bigger heap (flat with gc disabled);
about 8 ms for 3.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def flush(client) -> int:
    """Serialise what the outbox would send now, like Outbox.loop does; return the payload size."""
    from nicegui import json
    from nicegui.outbox import Deleted

    outbox = client.outbox
    data = {element_id: None if isinstance(element, Deleted) else element._to_dict()
            for element_id, element in outbox.updates.items()}
    outbox.updates.clear()
    outbox.messages.clear()
    return len(json.dumps(data))


async def run(n_tokens: int, repeats: int) -> dict[str, float]:
    from nicegui import ui
    from nicegui.testing.user_simulation import user_simulation

    from tests.fake_backend import FakeModelManager
    from tokviz_app.config import Settings
    from tokviz_app.service import ModelService
    from tokviz_app.ui.page import build_page

    results: dict[str, float] = {}
    async with user_simulation() as user:
        manager = FakeModelManager(context_length=n_tokens + 64)
        service = ModelService(manager)
        settings = Settings(preselect="gpt2")
        controllers = []

        @ui.page("/")
        def index() -> None:
            controllers.append(build_page(service, settings))

        # -------------------------------------------------------------- 1. chip + update message
        await user.open("/")
        c = controllers[-1]
        await c.initialize()
        model = c.state.model
        session = model.start("The quick brown fox", c.state.sampling_params())
        steps = [session.step() for _ in range(n_tokens)]
        client = user.client
        per_token: list[float] = []
        sizes: list[int] = []
        flush(client)
        with client:
            for step in steps:
                t0 = time.perf_counter()
                c._append(step)  # pylint: disable=protected-access
                sizes.append(flush(client))
                per_token.append(time.perf_counter() - t0)
        first = statistics.mean(per_token[1:100])
        last = statistics.mean(per_token[-100:])
        results["append_first100_ms"] = first * 1e3
        results["append_last100_ms"] = last * 1e3
        results["append_ratio"] = last / first
        results["bytes_first100"] = statistics.mean(sizes[1:100])
        results["bytes_last100"] = statistics.mean(sizes[-100:])

        # -------------------------------------------------------------- 3. click -> menu at n tokens
        clicks = []
        with client:
            for i in range(repeats):
                position = (n_tokens // 2 + 37 * i) % n_tokens
                t0 = time.perf_counter()
                c.tokens.clicked(position)
                flush(client)
                clicks.append(time.perf_counter() - t0)
        results["click_menu_ms"] = statistics.median(clicks) * 1e3

        # -------------------------------------------------------------- 2. the whole Generate-to-End path
        for n in (100, n_tokens):
            await user.open("/")
            c = controllers[-1]
            c.controls.max_tokens.value = n
            stamps: list[float] = []
            append = c._append  # pylint: disable=protected-access

            def timed_append(step, append=append, stamps=stamps):
                append(step)
                stamps.append(time.perf_counter())

            c._append = timed_append  # pylint: disable=protected-access
            t0 = time.perf_counter()
            c.generate_to_end()
            while c.state.busy:
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - t0
            assert len(c.state.tokens) == n, len(c.state.tokens)
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            results[f"stream_{n}_ms_per_token"] = elapsed / n * 1e3
            results[f"stream_{n}_first100_ms"] = statistics.mean(gaps[:99]) * 1e3
            results[f"stream_{n}_last100_ms"] = statistics.mean(gaps[-99:]) * 1e3
        # NiceGUI 3.18's simulated shutdown after run.io_bound waits 2 s for its outbox task and logs
        # "Could not cancel N tasks" (reproducible without tokviz); not part of what we measure.
        logging.getLogger("nicegui").setLevel(logging.CRITICAL)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20, help="menu openings to time")
    args = parser.parse_args()
    r = asyncio.run(run(args.tokens, args.repeats))
    n = args.tokens
    print(f"UI cost per streamed token (chip + update message), fake engine, {n} tokens:")
    print(f"  tokens    1-100: {r['append_first100_ms']:.3f} ms/token, {r['bytes_first100']:.0f} bytes/update")
    print(f"  tokens {n - 99}-{n}: {r['append_last100_ms']:.3f} ms/token, {r['bytes_last100']:.0f} bytes/update")
    print(f"  ratio last/first: {r['append_ratio']:.2f} (flat = the cost does not grow with the tokens shown)")
    print("Whole 'Generate to End' path per token (thread hop + state + chip + outbox loop), fake engine:")
    print(f"  100 tokens: {r['stream_100_ms_per_token']:.3f} ms/token overall")
    print(f"  {n} tokens: {r[f'stream_{n}_ms_per_token']:.3f} ms/token overall; between tokens: "
          f"{r[f'stream_{n}_first100_ms']:.3f} ms for the first 100, {r[f'stream_{n}_last100_ms']:.3f} ms for the last 100")
    print(f"Click on a token -> alternatives menu built and serialised, {n} tokens on the page: "
          f"{r['click_menu_ms']:.2f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
