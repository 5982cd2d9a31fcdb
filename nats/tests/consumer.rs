//! The shared consumer definition against a real nats-server: a consumer created from
//! [`consumer::config`] and read back is judged usable as it is, in both acknowledgement modes
//! (the server fills in defaults, and a setting it normalizes would otherwise make every
//! worker and every reconcile update or recreate the consumer); and a consumer without
//! acknowledgements keeps no pending state while messages are read.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use async_nats::jetstream::stream::RetentionPolicy;
use futures::StreamExt;
use jetflow_crds::pipeline::StartPosition;
use jetflow_crds::split::Split;
use jetflow_nats::consumer::{self, Acks, Start, Verdict};
use jetflow_testsupport::NatsServer;

fn split() -> Split {
    Split {
        name: "orders.eu".into(),
        subject: "orders.eu".into(),
    }
}

#[tokio::test]
async fn consumers_made_from_the_definition_are_used_as_they_are_in_both_modes() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "orders".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        Acks::for_retention(stream.cached_info().config.retention),
        Acks::None
    );
    assert_eq!(
        Acks::for_retention(RetentionPolicy::WorkQueue),
        Acks::AfterCheckpoint
    );
    for (name, acks) in [("none", Acks::None), ("after", Acks::AfterCheckpoint)] {
        let start = Start::Spec(StartPosition::default());
        let want = consumer::config(name, &split(), &start, acks, Duration::from_secs(2)).unwrap();
        stream.create_consumer(want.clone()).await.unwrap();
        let info = stream.consumer_info(name).await.unwrap();
        assert_eq!(info.config.ack_policy, acks.policy());
        assert_eq!(
            consumer::judge(&info, &want, &start),
            Verdict::Use,
            "{name}: {:?}",
            info.config
        );
    }
}

#[tokio::test]
async fn a_consumer_without_acks_holds_no_pending_state_and_is_judged_by_what_it_delivered() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "orders".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..100 {
        js.publish("orders.eu", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let start = Start::Spec(StartPosition::default());
    let want = consumer::config("c", &split(), &start, Acks::None, Duration::from_secs(2)).unwrap();
    let c: PullConsumer = stream.create_consumer(want.clone()).await.unwrap();
    let mut messages = c.fetch().max_messages(40).messages().await.unwrap();
    let mut last = 0;
    while let Some(m) = messages.next().await {
        last = m.unwrap().info().unwrap().stream_sequence;
    }
    assert_eq!(last, 40);
    let info = stream.consumer_info("c").await.unwrap();
    assert_eq!(info.config.ack_policy, AckPolicy::None);
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.delivered.stream_sequence, 40);
    assert_eq!(info.num_pending, 60);
    // A worker whose checkpoint is at 40 reads on through it; at 30 (the ten after it were
    // delivered and never checkpointed) it must make the consumer again.
    let at = |p| {
        consumer::config(
            "c",
            &split(),
            &Start::After(p),
            Acks::None,
            Duration::from_secs(2),
        )
        .unwrap()
    };
    assert_eq!(
        consumer::judge(&info, &at(40), &Start::After(40)),
        Verdict::Use
    );
    assert!(matches!(
        consumer::judge(&info, &at(30), &Start::After(30)),
        Verdict::Recreate(_)
    ));
}
