//! Produce keyed records and read them back.
//!
//! Start a local cluster first (`tandem dev`), then:
//! `cargo run -p tandem-client --example produce_consume -- 127.0.0.1:9092`

use std::time::{Duration, Instant};

use tandem_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, Error, NewTopic, Producer, ProducerConfig,
    Record, StartOffset,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let bootstrap = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let client = Client::connect(ClientConfig::new([bootstrap])).await?;

    let topic = "example-events";
    match client
        .create_topic(NewTopic::new(topic, 3).config("min.insync.replicas", "2"))
        .await
    {
        Ok(()) | Err(Error::TopicAlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }

    // Idempotent, acks=all: retries across a leader failover cannot duplicate a record.
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let started = Instant::now();
    let mut acks = Vec::new();
    for i in 0..1_000 {
        let record = Record::new(topic, format!("event {i}")).key(format!("user-{}", i % 10));
        acks.push(producer.send(record).await?);
    }
    let mut last = None;
    for ack in acks {
        last = Some(ack.await?);
    }
    producer.close().await?;
    println!(
        "1000 records acknowledged in {:?}; the last at {:?}",
        started.elapsed(),
        last
    );

    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign(topic, None, StartOffset::Earliest).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut read = 0;
    while Instant::now() < deadline {
        let records = consumer.poll().await?;
        if records.is_empty() && read > 0 {
            break;
        }
        for r in &records {
            if read < 3 {
                println!(
                    "{}-{}@{}: {:?} = {:?}",
                    r.topic, r.partition, r.offset, r.key, r.value
                );
            }
            read += 1;
        }
    }
    println!("read {read} records");
    Ok(())
}
