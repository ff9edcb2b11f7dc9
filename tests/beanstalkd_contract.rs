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
