"""confluent-kafka (librdkafka) against Tandem: idempotent acks=all producers, one per
compression codec, with murmur2 partitioning; then a consumer without a consumer group
(no group.id: assign with explicit offsets).

    python confluent.py BOOTSTRAP TOPIC PARTITIONS COUNT

Prints "W partition offset key value" per delivery report and "R partition offset key value"
per record read; crates/tandem/tests/compat.rs compares them. Exits non-zero on any error.
"""

import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + 60
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


failures = []
delivered = 0


def on_delivery(err, msg):
    global delivered
    if err is not None:
        failures.append(f"{msg.key()!r}: {err}")
        return
    delivered += 1
    print("W", msg.partition(), msg.offset(), msg.key().decode(), msg.value().decode(), flush=True)


per_codec = count // len(CODECS)
i = 0
for n, codec in enumerate(CODECS):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "client.id": f"compat-producer-{codec}",
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": codec,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    })
    last = count if n == len(CODECS) - 1 else i + per_codec
    while i < last:
        producer.produce(topic, key=f"key-{i % 17}", value=f"value-{i}", on_delivery=on_delivery)
        producer.poll(0)
        i += 1
    left = producer.flush(30)
    if left:
        raise SystemExit(f"{left} messages not delivered with compression {codec}")
if failures:
    raise SystemExit("delivery failed: " + "; ".join(failures[:10]))
log("delivered", delivered)

# confluent-kafka's Consumer refuses to start without a group.id ("group.id must be set"),
# but with assign() and explicit offsets, and no commits, the group is never joined and no
# offset is fetched from a coordinator: Tandem serves no group APIs (docs/compatibility.md).
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "client.id": "compat-consumer",
    "group.id": "compat-unused-group",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
})
consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
at_eof = set()
read = 0
while time.monotonic() < deadline and (read < count or len(at_eof) < partitions):
    msg = consumer.poll(0.5)
    if msg is None:
        continue
    if msg.error():
        if msg.error().code() == KafkaError._PARTITION_EOF:
            at_eof.add(msg.partition())
            continue
        raise SystemExit(f"consumer error: {msg.error()}")
    at_eof.discard(msg.partition())
    read += 1
    print("R", msg.partition(), msg.offset(), msg.key().decode(), msg.value().decode(), flush=True)
consumer.close()
