"""kafka-python against Tandem: admin create_topics, an acks=all keyed producer, and a
consumer without a group (assign + seek_to_beginning).

    python kafka_python.py BOOTSTRAP TOPIC PARTITIONS COUNT

Prints one line per record written ("W partition offset key value", from the producer's
RecordMetadata) and read ("R partition offset key value"); crates/tandem/tests/compat.rs
compares them. Exits non-zero on any client error.
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.partitioner.default import murmur2

bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
servers = bootstrap.split(",")
deadline = time.monotonic() + 60


def log(*args):
    print(*args, file=sys.stderr, flush=True)


admin = KafkaAdminClient(bootstrap_servers=servers, client_id="compat-admin", request_timeout_ms=10000)
result = admin.create_topics(
    [NewTopic(topic, num_partitions=partitions, replication_factor=3,
              topic_configs={"min.insync.replicas": "2"})],
    timeout_ms=10000,
)
log("create_topics:", result)
admin.close()

producer = KafkaProducer(
    bootstrap_servers=servers,
    client_id="compat-producer",
    acks="all",
    linger_ms=5,
    retries=10,
    request_timeout_ms=10000,
)
# The new topic's metadata may take a moment to show every partition with a leader.
while True:
    found = producer.partitions_for(topic)
    if found is not None and len(found) == partitions:
        break
    if time.monotonic() > deadline:
        raise SystemExit(f"topic {topic} never showed {partitions} partitions: {found}")
    time.sleep(0.1)

futures = []
for i in range(count):
    key = f"key-{i % 17}".encode()
    value = f"value-{i}".encode()
    futures.append((key, value, producer.send(topic, key=key, value=value)))
producer.flush(timeout=30)
for key, value, future in futures:
    meta = future.get(timeout=30)
    expected = (murmur2(key) & 0x7FFFFFFF) % partitions
    if meta.partition != expected:
        raise SystemExit(f"{key!r} went to partition {meta.partition}, murmur2 says {expected}")
    print("W", meta.partition, meta.offset, key.decode(), value.decode(), flush=True)
producer.close(timeout=10)

consumer = KafkaConsumer(
    bootstrap_servers=servers,
    client_id="compat-consumer",
    group_id=None,
    enable_auto_commit=False,
    request_timeout_ms=10000,
)
assigned = [TopicPartition(topic, p) for p in range(partitions)]
consumer.assign(assigned)
consumer.seek_to_beginning(*assigned)
read = 0
while read < count and time.monotonic() < deadline:
    for tp, records in consumer.poll(timeout_ms=500).items():
        for r in records:
            print("R", tp.partition, r.offset, r.key.decode(), r.value.decode(), flush=True)
            read += 1
# A little longer, so that a duplicate after the last expected record would show.
for tp, records in consumer.poll(timeout_ms=500).items():
    for r in records:
        print("R", tp.partition, r.offset, r.key.decode(), r.value.decode(), flush=True)
end = consumer.end_offsets(assigned)
log("end offsets:", {tp.partition: o for tp, o in end.items()})
consumer.close()
