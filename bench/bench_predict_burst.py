"""/api/health under a burst of predictions: the finding was 17 s with 40 parallel predictions.

Baseline, measured in the same run: /api/health on the idle server. Then `--clients` threads
post predictions without pause (a model of `--trees` trees, seed 000's size by default) while
health is asked again; the ratio is health's median latency under the burst over the idle one.
Predictions beyond `api.predict_concurrency` are answered 429 and counted.

    .venv/bin/python bench/bench_predict_burst.py [--clients 40] [--trees 1000] [--probes 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from faultline.api.app import create_app
from faultline.api.context import AppContext
from faultline.api.server import ApiServer
from faultline.bus import MemoryBus
from faultline.clock import SystemClock
from faultline.config import load_settings
from faultline.metrics import Metrics
from faultline.models.base import ModelInfo
from faultline.models.isolation_forest import SklearnModel, train_isolation_forest
from faultline.simulate import normal_frame
from faultline.store import SqliteStore
from faultline.tokens import Role, TokenStore

FEATURES = {"temperature": 25.0, "humidity": 60.0, "noise_level": 50.0}


class OneModel:
    def __init__(self, model: SklearnModel) -> None:
        self.model = model

    def current(self) -> SklearnModel:
        return self.model


def health_ms(url: str, probes: int) -> float:
    took = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(probes):
            start = time.perf_counter()
            assert client.get("/api/health").status_code == 200
            took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--trees", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp())
    settings = load_settings(data_dir=tmp)
    sensors = settings.sensor_names
    train = normal_frame(settings.sensors, 20_000, seed=1)
    pipeline = train_isolation_forest(
        train, sensors, n_estimators=args.trees, contamination=settings.model.contamination, seed=0
    )
    info = ModelInfo("bench", "1", "0" * 32, "champion", 0)
    model = SklearnModel(pipeline, info, sensors, train.iloc[:2000])
    tokens = TokenStore(tmp / "tokens.db")
    token = tokens.create(Role.VIEWER, "bench")[0]
    store = SqliteStore(tmp / "api.db")
    ctx = AppContext(
        settings, store, MemoryBus(), Metrics(), SystemClock(), OneModel(model), tokens
    )
    with ApiServer(create_app(ctx), "127.0.0.1", 0) as server:
        idle = health_ms(server.url, args.probes)
        stop = threading.Event()
        answers: dict[int, int] = {}
        lock = threading.Lock()

        def hammer() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
                while not stop.is_set():
                    status = client.post("/api/predict", json=FEATURES).status_code
                    with lock:
                        answers[status] = answers.get(status, 0) + 1

        threads = [threading.Thread(target=hammer) for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # let the burst build up
        busy = health_ms(server.url, args.probes)
        stop.set()
        for t in threads:
            t.join()
    store.close()
    tokens.close()
    print(f"health idle {idle:.1f} ms, under {args.clients} predicting clients {busy:.1f} ms")
    print(f"predictions answered: {answers}")
    result = {
        "bench": "predict_burst",
        "clients": args.clients,
        "trees": args.trees,
        "health_idle_ms": round(idle, 2),
        "health_busy_ms": round(busy, 2),
        "ratio": round(busy / idle, 2),
        "predict_200": answers.get(200, 0),
        "predict_429": answers.get(429, 0),
        "predict_5xx": sum(n for s, n in answers.items() if s >= 500),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
