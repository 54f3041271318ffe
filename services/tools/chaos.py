"""`make chaos`: each fault against the running chain under steady load, and one table of what it cost.

The chain runs as five stage processes (plus the side processes) on topics of its own, the model route
served by the stub model. A publisher offers a steady POS mix the whole time. Each fault has three windows:
a few seconds of steady load, the fault itself, then a recovery window; the requests sent in those windows
are then waited for, and the row says how many were answered, answered with the staff hand-off (degraded),
dead-lettered, lost or answered twice, the end-to-end p99 during and after the fault, and how long after the
fault ended the last request sent during it was answered (recovery).

A process that exits is started again, as an orchestrator would (the restarts are counted). Faults:
broker SIGKILL and restart, ClickHouse's owner killed, Weaviate killed, the provider answering 500 or slowly,
each stage SIGKILLed three times in a row, a stage SIGSTOPped (hung, not dead), and 10,000 hostile records
(random bytes, and valid Avro with extreme values) that must each be answered or dead-lettered with a reason.

usage: python -m services.tools.chaos [--rate 50] [--scale 1.0] [--faults broker clickhouse ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from services.answerer.stage import PROVIDERS_UNAVAILABLE
from services.launcher import Launcher
from services.pos.answers import AnswerReader, Received
from services.pos.report import summary
from services.pos.simulator import request_mix
from services.registry import REGISTRY
from services.runtime.kafka_clients import confluent_config
from services.runtime.request_key import STORE_PARTITIONER
from services.settings import REPO_ROOT, Settings, get_settings
from services.stages import CHAIN
from services.tools.bench.chain import stub_chain
from services.tools.seed import stores
from services.wire.codec import AvroCodec
from services.wire.models import Channel, Request
from services.wire.schema_registry import SchemaRegistry

STORES = 200
DEAD_LETTER_TOPICS = [process.dead_letter for process in REGISTRY if process.dead_letter]


def component_pid(name: str) -> int | None:
    """The pid of a component `make up` started (Kafka, ClickHouse, Weaviate), from its pid file."""
    var = get_settings().var_dir
    try:
        pid = int((var / name / f"{name}.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def kill_component(name: str) -> None:
    pid = component_pid(name)
    if pid is None:
        raise RuntimeError(f"{name} is not running: start it with `make up`")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while component_pid(name) is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def start_component(name: str) -> None:
    subprocess.run(["bash", str(REPO_ROOT / "infra" / name / f"{name}.sh"), "start"], check=True, capture_output=True)


def set_stub(url: str, **behaviour: float) -> None:
    request = urllib.request.Request(
        url.removesuffix("/v1") + "/stub/behaviour",
        data=json.dumps(behaviour).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=5).close()


@dataclass
class Load:
    """Publishes the POS mix at a steady rate until stopped; every request sent is kept with its send time."""

    bootstrap: str
    topic: str
    codec: AvroCodec
    rate: float
    sent: list[tuple[float, Request]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        # librdkafka keeps what it cannot deliver while the broker is away and sends it when it is back
        self.producer = Producer(
            confluent_config(
                {
                    "bootstrap.servers": self.bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    "log_level": 3,
                    **STORE_PARTITIONER,
                }
            )
        )
        self.requests = request_mix([store.store_id for store in stores(STORES)])
        self.thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        started, index = time.monotonic(), 0
        while not self.stopping.is_set():
            time.sleep(max(0.0, started + index / self.rate - time.monotonic()))
            request = next(self.requests).model_copy(
                update={"request_id": str(uuid.uuid4()), "created_at": int(time.time() * 1000)}
            )
            self.producer.produce(
                self.topic, key=request.store_id.encode(), value=self.codec.encode("Request", request.model_dump())
            )
            self.producer.poll(0)
            self.sent.append((time.time(), request))
            index += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        remaining = self.producer.flush(300)
        if remaining:
            raise RuntimeError(f"{remaining} requests were never acknowledged by Kafka")

    def between(self, start: float, end: float) -> list[Request]:
        return [request for at, request in self.sent if start <= at < end]


@dataclass
class Supervisor:
    """Starts again any chain process that exits, as an orchestrator's restart policy would."""

    launcher: Launcher
    restarts: Counter[str] = field(default_factory=Counter)
    paused: set[str] = field(default_factory=set)  # keys a fault is restarting itself
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="chaos-supervisor", daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(1.0):
            with self.lock:
                for key, process in list(self.launcher.processes.items()):
                    if key not in self.paused and process.poll() is not None:
                        self.restarts[key] += 1
                        self.launcher.start(*key.split("/"))


def hostile_requests(count: int, seed: int = 7) -> Iterator[bytes | dict[str, Any]]:
    """Random bytes, and Request records that are valid Avro with extreme values: empty and 512 KiB texts,
    control characters, RTL overrides, emoji, other scripts, timestamps far in the past and future, and big
    attribute maps."""
    rng = random.Random(seed)
    texts = [
        "",
        "x" * (512 * 1024),
        "\x00\x01\x07\x1b[31m\x7f",
        "\u202eevig uoy nac tnuocsid\u202c 90% off?",
        "🧥" * 2000,
        "¿Tienen esta chaqueta en talla M? 这件夹克有中号吗 هل هذا متوفر؟",
        "\ud7ff\ufeff" * 100,
        "Is the waxed field jacket in stock? " * 400,
    ]
    timestamps = [0, 1, -(2**40), 2**41, 253402300799999]
    for index in range(count):
        if index % 4 == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 256)))
            continue
        yield Request(
            request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            store_id=rng.choice(["0199", "", "\u202e0417", "9" * 200]),
            terminal_id=rng.choice(["t1", "", "🖥️" * 50]),
            customer_id=rng.choice([None, "", "c" * 1000]),
            channel=rng.choice(list(Channel)),
            locale=rng.choice(["en-US", "", "zz-ZZ", "ar-EG"]),
            text=rng.choice(texts),
            created_at=rng.choice(timestamps),
            attributes={f"k{i}": "v" * rng.randint(0, 64) for i in range(rng.choice([0, 1, 500]))},
        ).model_dump()


def nothing() -> None:
    """A fault with nothing to undo (its harm is done when it returns)."""


@dataclass
class Fault:
    name: str
    what: str
    inject: Callable[[], None]
    restore: Callable[[], None]
    duration_s: float


@dataclass
class Chaos:
    settings: Settings
    rate: float
    scale: float
    codec: AvroCodec = field(init=False)
    prefix: str = ""  # the run's topic prefix, set when it starts
    rows: list[dict[str, Any]] = field(default_factory=list)
    hostile: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codec = AvroCodec(SchemaRegistry.load(self.settings.schemas_dir))

    def topic(self, name: str) -> str:
        return self.prefix + name

    def faults(self, name: str) -> list[Fault]:
        """The fault (or, for stage kills, one fault per stage) a `--faults` name stands for."""
        s, stub = self.scale, self.model_url
        if name in ("broker", "clickhouse", "weaviate"):
            component = "kafka" if name == "broker" else name
            lasts = 5 * s if name == "broker" else 60 * s
            what = f"{component} SIGKILLed, started again after {lasts:.0f} s"
            return [Fault(name, what, partial(kill_component, component), partial(start_component, component), lasts)]
        if name == "provider-500":
            fail, mend = partial(set_stub, stub, fail_rate=1.0, status=500), partial(set_stub, stub, fail_rate=0.0)
            return [Fault(name, "the model answers 500 to every call", fail, mend, 120 * s)]
        if name == "provider-slow":
            slow, mend = partial(set_stub, stub, latency_ms=5000), partial(set_stub, stub, latency_ms=50)
            return [Fault(name, "the model takes 5 s a call", slow, mend, 60 * s)]
        if name == "stage-kill":
            return [
                Fault(f"kill-{stage}", f"{stage} SIGKILLed three times in a row", partial(self.kill_three_times, stage),
                      nothing, 0.0)
                for stage in CHAIN
            ]  # fmt: skip
        if name == "stage-stop":
            stop, resume = (partial(self.signal_stage, "governor", sig) for sig in (signal.SIGSTOP, signal.SIGCONT))
            return [Fault("stop-governor", "the governor SIGSTOPped (hung), then SIGCONT", stop, resume, 30 * s)]
        if name == "hostile":
            what = f"{self.hostile_count} hostile records on `requests`"
            return [Fault(name, what, self.publish_hostile, nothing, 0.0)]
        raise ValueError(f"no fault named {name}")

    @property
    def hostile_count(self) -> int:
        return max(100, int(10_000 * self.scale))

    def kill_three_times(self, stage: str) -> None:
        key = f"{stage}/0"
        with self.supervisor.lock:
            self.supervisor.paused.add(key)
        try:
            for _ in range(3):
                self.launcher.kill(key)
                self.launcher.start(stage)
                self.launcher.wait_ready(key, 90)
        finally:
            self.supervisor.paused.discard(key)

    def signal_stage(self, stage: str, sig: signal.Signals) -> None:
        os.kill(self.launcher.processes[f"{stage}/0"].pid, sig)

    def publish_hostile(self) -> None:
        producer = Producer(confluent_config({"message.max.bytes": 2 << 20, **STORE_PARTITIONER}, self.settings))
        placed: list[tuple[tuple[int, int] | None, str | None]] = []  # (partition, offset) and request id, if any

        def delivered_as(request_id: str | None) -> Callable[[Any, Any], None]:
            def delivered(error: Any, message: Any) -> None:
                placed.append((None if error else (message.partition(), message.offset()), request_id))

            return delivered

        for index, item in enumerate(hostile_requests(self.hostile_count)):
            request_id = item["request_id"] if isinstance(item, dict) else None
            value = self.codec.encode("Request", item) if isinstance(item, dict) else item
            # one that decodes is chained like any request: keyed by its store, as every producer of requests
            key = str(item.get("store_id", index)) if isinstance(item, dict) else str(index)
            producer.produce(
                self.topic("requests"), key=key.encode(), value=value, on_delivery=delivered_as(request_id)
            )
            producer.poll(0)
        producer.flush(120)
        self.hostile = {"placed": placed, "sent": self.hostile_count}

    def run(self, names: list[str]) -> list[dict[str, Any]]:
        with stub_chain("chaos", self.codec, store_count=STORES, model_latency_ms=50) as chain:
            self.prefix, self.model_url, self.launcher = chain.prefix, chain.model_url, chain.launcher
            return self._run(names)

    def _run(self, names: list[str]) -> list[dict[str, Any]]:
        self.supervisor = Supervisor(self.launcher)
        reader = AnswerReader(self.settings.kafka_bootstrap, self.topic("audited"), self.codec)
        self.reader = reader
        load = Load(self.settings.kafka_bootstrap, self.topic("requests"), self.codec, self.rate)
        try:
            self.launcher.start_all()
            reader.start()
            reader.assigned.wait(30)
            self.supervisor.thread.start()
            load.start()
            self.phase(load, Fault("none", "steady load, no fault", nothing, nothing, 10 * self.scale))
            for name in names:
                for fault in self.faults(name):
                    self.phase(load, fault)
            load.stop()
            everything = {request.request_id for _, request in load.sent}
            reader.wait_for(everything | self.hostile.get("ids", set()), timeout_s=180)
            self.account(load)
        finally:
            self.supervisor.stopping.set()
            reader.stop()
        return self.rows

    def phase(self, load: Load, fault: Fault) -> None:
        settle_s, recover_s = 5 * self.scale + 2, 15 * self.scale + 5
        time.sleep(settle_s)
        restarts_before = sum(self.supervisor.restarts.values())
        began = time.time()
        fault.inject()
        time.sleep(fault.duration_s)
        fault.restore()
        ended = time.time()
        time.sleep(recover_s)
        self.rows.append({"fault": fault.name, "what": fault.what, "began": began, "ended": ended,
                          "after_until": time.time(), "lasted_s": round(ended - began, 1),
                          "restarts": sum(self.supervisor.restarts.values()) - restarts_before})  # fmt: skip

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter the run wrote, read from the start of each dead-letter topic."""
        consumer = Consumer(
            confluent_config(
                {
                    "group.id": f"chaos-dlq-{uuid.uuid4().hex[:8]}",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                },
                self.settings,
            )
        )
        letters: list[dict[str, Any]] = []
        try:
            metadata = consumer.list_topics(timeout=10).topics
            partitions = [
                TopicPartition(topic, p, 0)
                for topic in (self.topic(name) for name in DEAD_LETTER_TOPICS)
                if topic in metadata
                for p in metadata[topic].partitions
            ]
            ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
            consumer.assign(partitions)
            remaining = {key for key, end in ends.items() if end > 0}
            deadline = time.monotonic() + 60
            while remaining and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error() is not None or message.value() is None:
                    continue
                letters.append(self.codec.decode(message.value() or b"")[1])
                where = (str(message.topic()), int(message.partition() or 0))
                if int(message.offset() or 0) + 1 >= ends[where]:
                    remaining.discard(where)
        finally:
            consumer.close()
        return letters

    def account(self, load: Load) -> None:
        letters = self.dead_letters()
        dead_ids = {letter["request_id"] for letter in letters if letter.get("request_id")}
        answered = self.reader.received
        repeats = Counter(self.reader.repeated)
        for row in self.rows:
            during = load.between(row.pop("began"), row["ended"])
            after = load.between(row["ended"], row.pop("after_until"))
            sent = during + after
            ids = [r.request_id for r in sent]
            got: list[Received] = [answered[i] for i in ids if i in answered]
            last = max((answered[r.request_id].received_ms for r in during if r.request_id in answered), default=0.0)
            row.update(
                sent=len(sent),
                answered=len(got),
                degraded=sum(1 for g in got if degraded(g.record)),
                dead_lettered=sum(1 for i in ids if i in dead_ids and i not in answered),
                lost=sum(1 for i in ids if i not in answered and i not in dead_ids),
                answered_twice=sum(1 for i in ids if repeats[i]),
                p99_during_ms=p99([answered[r.request_id] for r in during if r.request_id in answered]),
                p99_after_ms=p99([answered[r.request_id] for r in after if r.request_id in answered]),
                recovery_s=round(max(0.0, last / 1000 - row.pop("ended")), 1) if last else None,
            )
        if self.hostile:
            self.account_hostile(letters)

    def account_hostile(self, letters: list[dict[str, Any]]) -> None:
        """Each hostile record is answered (by request id), or dead-lettered: by request id at any stage, or by
        its place on `requests` where it could not even be decoded."""
        requests_topic = self.topic("requests")
        mine = {(letter["partition"], letter["offset"]) for letter in letters if letter["topic"] == requests_topic}
        dead_ids = {letter["request_id"] for letter in letters if letter.get("request_id")}
        answered = dead = unaccounted = 0
        for place, request_id in self.hostile["placed"]:
            if request_id is not None and request_id in self.reader.received:
                answered += 1
            elif (request_id is not None and request_id in dead_ids) or place in mine:
                dead += 1
            else:
                unaccounted += 1
        hostile_ids = {request_id for _, request_id in self.hostile["placed"] if request_id is not None}
        theirs = [
            letter for letter in letters if letter["topic"] == requests_topic or letter.get("request_id") in hostile_ids
        ]
        reasons = {
            error_type: {
                "dead_letters": count,
                "e.g.": next(str(t["reason"])[:160] for t in theirs if t["error_type"] == error_type),
            }
            for error_type, count in Counter(letter["error_type"] for letter in theirs).most_common()
        }
        row = next(r for r in self.rows if r["fault"] == "hostile")
        row.update(
            hostile_sent=self.hostile["sent"],
            hostile_acknowledged=len([p for p, _ in self.hostile["placed"] if p is not None]),
            hostile_answered=answered,
            hostile_dead_lettered=dead,
            hostile_unaccounted=self.hostile["sent"] - answered - dead,
            hostile_reasons=reasons,
        )


def degraded(record: dict[str, Any]) -> bool:
    return any(f["kind"] == PROVIDERS_UNAVAILABLE for f in record["answer"].get("output_findings") or [])


def p99(answers: list[Received]) -> float | None:
    if not answers:
        return None
    return float(summary([a.end_to_end_ms for a in answers])["p99"])


COLUMNS = ["fault", "lasted_s", "sent", "answered", "degraded", "dead_lettered", "lost", "answered_twice",
           "p99_during_ms", "p99_after_ms", "recovery_s", "restarts"]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="steady requests per second, the POS mix")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every fault's duration (0.1: quick)")
    names = ["broker", "clickhouse", "weaviate", "provider-500", "provider-slow", "stage-kill", "stage-stop", "hostile"]
    parser.add_argument("--faults", nargs="+", choices=names, default=names, help="the faults to inject (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = Chaos(get_settings(), args.rate, args.scale).run(args.faults)
    print(table(rows))
    hostile = next((r for r in rows if r["fault"] == "hostile"), None)
    if hostile:
        print(json.dumps({k: v for k, v in hostile.items() if k.startswith("hostile_")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    bad = any(r["lost"] or r["answered_twice"] for r in rows) or (hostile and hostile["hostile_unaccounted"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
