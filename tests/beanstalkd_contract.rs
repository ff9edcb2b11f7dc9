//! The shared queue contract against a real beanstalkd (one server per test),
//! so the embedded queue and beanstalkd cannot drift apart.

mod support;

use geyser::queue::beanstalkd::BeanstalkdQueue;
use support::beanstalkd::Beanstalkd;

async fn beanstalkd_queue() -> (BeanstalkdQueue, Beanstalkd) {
    let server = Beanstalkd::start();
    let queue = BeanstalkdQueue::from_url(&format!("beanstalkd://{}", server.addr()))
        .await
        .expect("connect to the test beanstalkd");
    (queue, server)
}

queue_contract_tests!(beanstalkd_queue());

/// beanstalkd counts the connections watching a tube; a consumer holds one per server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_the_consumers_watching() {
    use geyser::queue::Queue;
    let (queue, _server) = beanstalkd_queue().await;
    let t = support::queue_contract::tube("watching");
    queue.put(&t, b"x", Default::default()).await.expect("put");
    assert_eq!(queue.stats_tube(&t).await.expect("stats").watching, Some(0));
    let watch = [t.clone()];
    let consumers = [queue.consumer(&watch).await.expect("consumer"), queue.consumer(&watch).await.expect("consumer")];
    assert_eq!(queue.stats_tube(&t).await.expect("stats").watching, Some(2));
    drop(consumers);
}

/// beanstalkd forgets a tube that holds no job and that no connection watches: such a
/// queue cannot be paused, and the error says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tube_cannot_be_paused() {
    use geyser::queue::{Queue, QueueError};
    let (queue, _server) = beanstalkd_queue().await;
    let err = queue.pause("no-such-queue").await.expect_err("pause an unknown tube");
    assert!(matches!(err, QueueError::UnknownTube(_)), "{err:?}");
    assert!(err.to_string().contains("\"no-such-queue\" not found"), "{err}");
    assert!(matches!(queue.resume("no-such-queue").await, Err(QueueError::UnknownTube(_))));
}
