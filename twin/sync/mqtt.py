"""MQTT ingest: a paho-mqtt client on a topic, feeding the one ingest path.

Each message carries one event (a JSON object, twin's form or NGSI-LD), a JSON
array of events, or NDJSON. Messages are taken with QoS 1 and **acknowledged only
after the store committed them** (paho's manual acknowledgement): a message whose
batch did not commit is never acknowledged, so the broker delivers it again and
nothing acknowledged to a publisher is lost. The session is persistent
(``clean_session=False`` under a fixed client id), so messages published while the
ingester is down or restarting wait at the broker; duplicates that a redelivery
causes are ``duplicate`` outcomes (the ``event_id`` is the idempotency key).

Per message, the outcomes are published (QoS 1) on ``outcome_topic`` as
``{"topic", "mid", "counts", "outcomes": [{event_id, result, revision, reason}]}``
and rejections are logged on the ``twin.sync.mqtt`` logger.

Messages are batched: the worker takes what has arrived (up to ``max_batch``
events, waiting at most ``linger`` seconds for more) and applies it as one
transaction, so throughput follows the broker's in-flight window. On mosquitto set
``max_inflight_messages`` (e.g. 1000) and ``max_queued_messages 0`` (unlimited:
the default of 1000 drops QoS 1 messages queued for a slow or absent subscriber).

Memory grows with the messages in flight (the broker's window) and one batch.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time

from twin.errors import ParameterError
from twin.sync.ingest import ANY_WRITER, Ingestor, IngestSource, Writer, count_outcomes
from twin.sync.model import MAX_EVENT_BYTES
from twin.sync.store import REJECTED, Outcome

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def parse_mqtt_url(text: str) -> tuple[str, int, str]:
    """``HOST:PORT/topic`` (or ``mqtt://HOST:PORT/topic``) -> (host, port, topic)."""
    m = re.fullmatch(r"(?:mqtt://)?([^:/\s]+)(?::(\d{1,5}))?/(\S+)", text.strip())
    if m is None:
        raise ParameterError(f"MQTT address {text!r} is not HOST:PORT/topic")
    host, port, topic = m.group(1), int(m.group(2) or 1883), m.group(3)
    if not 0 < port < 65536:
        raise ParameterError(f"MQTT port {port} is out of range")
    return host, port, topic


def split_payload(payload: bytes) -> list:
    """An MQTT payload -> raw events for the validation path (object, array, NDJSON).
    A payload that is not parseable as a whole becomes one raw event, so it is
    rejected with the JSON error as its reason."""
    from twin.sync.server import split_body  # the same splitting as HTTP bodies

    try:
        raw = split_body(payload, None)
    except ParameterError:
        return [payload[: MAX_EVENT_BYTES + 1]]
    return raw or [payload]


class MQTTSource(IngestSource):
    """Subscribe to ``topic`` on ``host:port`` and ingest every message (QoS 1).

    ``writer``: the write scope of this feed (default: every type); ``client_id``:
    fixed for a persistent session (default ``twin-sync-<topic>``); ``outcome_topic``
    (default ``<topic prefix>/outcomes``; ``""`` publishes none); ``username`` and
    ``password`` for the broker. Messages arriving on ``outcome_topic`` itself are
    acknowledged and ignored (a wildcard subscription may cover it).
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        *,
        writer: Writer = ANY_WRITER,
        client_id: str | None = None,
        outcome_topic: str | None = None,
        max_batch: int = 5000,
        linger: float = 0.005,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
    ):
        self.host, self.port, self.topic = host, int(port), topic
        self.writer = writer
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", topic)[:40]
        self.client_id = client_id or f"twin-sync-{safe}"
        if outcome_topic is None:
            prefix = topic.split("#")[0].split("+")[0].rstrip("/") or "twin"
            outcome_topic = f"{prefix}/outcomes"
        self.outcome_topic = outcome_topic
        self.max_batch, self.linger = int(max_batch), float(linger)
        self.username, self.password, self.keepalive = username, password, keepalive
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._worker: threading.Thread | None = None
        self._client = None
        self.messages = 0  # acknowledged messages
        self.counts = {"applied": 0, "stale": 0, "duplicate": 0, "rejected": 0}

    # -------------------------------------------------------------- paho callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            log.error(
                "MQTT broker %s:%s refused the connection: %s", self.host, self.port, reason_code
            )
            return
        client.subscribe(self.topic, qos=1)
        self._connected.set()
        log.info("MQTT: subscribed to %s on %s:%s", self.topic, self.host, self.port)

    def _on_message(self, client, userdata, msg):
        self._q.put(msg)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT: disconnected from %s:%s (%s)", self.host, self.port, reason_code)

    # -------------------------------------------------------------- life cycle
    def start(self, ingestor: Ingestor, *, wait: float = 10.0) -> None:
        """Connect, subscribe and start the worker; waits up to ``wait`` seconds for
        the subscription (then warns and goes on: paho keeps trying). Raises
        :class:`ParameterError` if the broker cannot be reached at all."""
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            manual_ack=True,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(0.1, 5)
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive)
        except OSError as exc:
            raise ParameterError(
                f"cannot reach the MQTT broker {self.host}:{self.port}: {exc}"
            ) from None
        self._client = client
        client.loop_start()
        self._stop.clear()
        self._worker = threading.Thread(
            target=self._run, args=(ingestor,), name="twin-mqtt-ingest", daemon=True
        )
        self._worker.start()
        if not self._connected.wait(wait):  # slow broker: paho keeps trying
            log.warning(
                "MQTT: no subscription on %s:%s after %.0f s; still trying",
                self.host,
                self.port,
                wait,
            )

    def stop(self) -> None:
        """Stop consuming; the batch in flight is finished (and acknowledged) first.
        Messages not yet taken stay unacknowledged at the broker for the next start."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    # -------------------------------------------------------------- worker
    def _take(self) -> list:
        """Messages that arrived: at least one (or none when stopping), then more
        until ``max_batch`` events or ``linger`` seconds."""
        while not self._stop.is_set():
            try:
                first = self._q.get(timeout=0.1)
                break
            except queue.Empty:
                continue
        else:
            return []
        msgs, n = [first], 1
        deadline = time.monotonic() + self.linger
        while n < self.max_batch:
            left = deadline - time.monotonic()
            try:
                m = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            msgs.append(m)
            n += 1
        return msgs

    def _run(self, ingestor: Ingestor) -> None:
        while True:
            msgs = self._take()
            if not msgs:
                return
            raw, spans, early = [], [], {}
            for j, m in enumerate(msgs):
                if m.topic == self.outcome_topic:
                    spans.append(None)
                    continue
                if len(m.payload) > MAX_MESSAGE_BYTES:
                    reason = f"message is {len(m.payload)} bytes (limit {MAX_MESSAGE_BYTES})"
                    early[j] = [Outcome(None, REJECTED, None, reason)]
                    spans.append(None)
                    continue
                evs = split_payload(m.payload)
                spans.append((len(raw), len(raw) + len(evs)))
                raw.extend(evs)
            while True:  # nothing is acknowledged before its batch committed
                try:
                    outcomes = ingestor.ingest(raw, self.writer) if raw else []
                    break
                except Exception:
                    log.exception("MQTT: the store failed a batch; retrying in 1 s")
                    if self._stop.wait(1.0):
                        return  # unacknowledged: the broker delivers them again
            client = self._client
            for j, (m, span) in enumerate(zip(msgs, spans, strict=True)):
                outs = early.get(j, [] if span is None else outcomes[span[0] : span[1]])
                self._report(client, m, outs)
                if client is not None:
                    client.ack(m.mid, m.qos)
                self.messages += 1

    def _report(self, client, m, outs: list[Outcome]) -> None:
        counts = count_outcomes(outs)
        for k, v in counts.items():
            self.counts[k] += v
        for o in outs:
            if o.result == REJECTED:
                log.warning(
                    "MQTT %s message %s: event %s rejected: %s",
                    m.topic,
                    m.mid,
                    o.event_id,
                    o.reason,
                )
        if self.outcome_topic and client is not None and outs:
            body = {
                "topic": m.topic,
                "mid": m.mid,
                "counts": counts,
                "outcomes": [o._asdict() for o in outs],
            }
            client.publish(self.outcome_topic, json.dumps(body, separators=(",", ":")), qos=1)


def run_mqtt(
    store,
    address: str,
    *,
    writer: Writer = ANY_WRITER,
    stop: threading.Event | None = None,
    now=None,
    **kw,
) -> MQTTSource:
    """Ingest ``HOST:PORT/topic`` into ``store`` until ``stop`` is set (then return
    the source with its counters). Without ``stop``: runs until interrupted."""
    host, port, topic = parse_mqtt_url(address)
    src = MQTTSource(host, port, topic, writer=writer, **kw)
    src.start(Ingestor(store, now=now))
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        src.stop()
    return src


__all__ = ["MQTTSource", "parse_mqtt_url", "run_mqtt", "split_payload"]
