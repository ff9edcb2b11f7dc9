//! The queue contract: beanstalkd's semantics as tests that every `Queue` backend runs.
//! A backend's test file (after `mod support;`) plugs in with one line, `queue_contract_tests!(make_queue());`, where
//! `make_queue()` is a future giving `(queue, guard)`; the guard (temp dir, server process)
//! lives as long as the test. Timings are whole seconds, the resolution of beanstalkd, and
//! every test uses its own tubes so several tests can share one server.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use geyser::queue::{Consumer, JobState, PutOptions, Queue, QueueError, QueueJobId, Reserved};

/// Generates one `#[tokio::test]` per contract test in a `queue_contract` module.
#[macro_export]
macro_rules! queue_contract_tests {
    ($make:expr) => {
        mod queue_contract {
            #[allow(unused_imports)]
            use super::*;
            $crate::queue_contract_tests!(@each $make;
                priority_order, fifo_within_priority, delay, ttr_expiry_gives_job_back, touch_extends,
                release_with_delay, bury_and_kick, kick_moves_delayed_when_none_buried, kick_job,
                stats_count_each_state, list_tubes, binary_bodies, consumers_never_share_a_reservation,
                lost_job_is_not_yours, reserve_times_out, reserve_wakes_on_put, reserve_watches_several_tubes,
                queue_delete_spares_reserved, closed_consumer_gives_jobs_back, peek_reads_the_body_in_any_state,
                delete_then_reserve_moves_on, reserve_wakes_on_release_and_when_a_delay_ends, reserve_wakes_on_kick,
                release_with_a_tiny_delay_is_not_lost, pause_holds_jobs_until_resume,
                resume_wakes_a_waiting_reserve, stats_give_the_age_of_a_ready_job);
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (queue, _guard) = $make.await;
                $crate::support::queue_contract::$name(&queue).await;
            }
        )*
    };
}

/// Short TTR and delay: beanstalkd counts them in whole seconds.
const SECOND: Duration = Duration::from_secs(1);
/// Long enough that a held job never times out during a test.
const LONG_TTR: Duration = Duration::from_secs(60);
/// How long a test waits for something that should happen after about one second.
const WAIT: Duration = Duration::from_secs(4);
/// Slack for timers: a one-second wait may end this much early on a coarse clock.
const EARLY: Duration = Duration::from_millis(850);

/// A tube name no other test uses.
pub fn tube(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

fn opts(priority: u32) -> PutOptions {
    PutOptions { priority, delay: Duration::ZERO, ttr: LONG_TTR }
}

async fn put(q: &dyn Queue, tube: &str, body: &[u8], opts: PutOptions) -> QueueJobId {
    q.put(tube, body, opts).await.expect("put")
}

async fn consumer(q: &dyn Queue, tubes: &[&str]) -> Box<dyn Consumer> {
    let tubes: Vec<String> = tubes.iter().map(|t| t.to_string()).collect();
    q.consumer(&tubes).await.expect("consumer")
}

/// A job that is ready now, or None.
async fn reserve_now(c: &mut dyn Consumer) -> Option<Reserved> {
    c.reserve(Duration::ZERO).await.expect("reserve")
}

async fn must_reserve(c: &mut dyn Consumer, within: Duration) -> Reserved {
    c.reserve(within).await.expect("reserve").expect("a job within the wait")
}

async fn state(q: &dyn Queue, id: QueueJobId) -> Option<JobState> {
    q.job_state(id).await.expect("job state")
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, QueueError>, what: &str) {
    assert!(matches!(r, Err(QueueError::NotFound(_))), "{what}: expected NotFound, got {r:?}");
}

pub async fn priority_order(q: &dyn Queue) {
    let t = tube("prio");
    for (pri, body) in [(5, "five"), (1, "one"), (3, "three")] {
        put(q, &t, body.as_bytes(), opts(pri)).await;
    }
    let mut c = consumer(q, &[&t]).await;
    for want in ["one", "three", "five"] {
        let job = must_reserve(c.as_mut(), SECOND).await;
        assert_eq!(job.body, want.as_bytes());
        c.delete(job.id).await.expect("delete");
    }
}

pub async fn fifo_within_priority(q: &dyn Queue) {
    let t = tube("fifo");
    let mut ids = Vec::new();
    for i in 0..5u8 {
        ids.push(put(q, &t, &[i], opts(7)).await);
    }
    let mut c = consumer(q, &[&t]).await;
    for (i, id) in ids.into_iter().enumerate() {
        let job = must_reserve(c.as_mut(), SECOND).await;
        assert_eq!((job.id, job.body.as_slice()), (id, [i as u8].as_slice()));
        c.delete(job.id).await.expect("delete");
    }
}

pub async fn delay(q: &dyn Queue) {
    let t = tube("delay");
    let put_at = Instant::now();
    let id = put(q, &t, b"later", PutOptions { delay: SECOND, ..opts(1) }).await;
    assert_eq!(state(q, id).await, Some(JobState::Delayed));
    let mut c = consumer(q, &[&t]).await;
    assert!(reserve_now(c.as_mut()).await.is_none(), "a delayed job is not reservable yet");
    let job = must_reserve(c.as_mut(), WAIT).await;
    assert_eq!(job.id, id);
    assert!(put_at.elapsed() >= EARLY, "reserved after {:?}, before its delay", put_at.elapsed());
    c.delete(id).await.expect("delete");
}

pub async fn ttr_expiry_gives_job_back(q: &dyn Queue) {
    let t = tube("ttr");
    let id = put(q, &t, b"x", PutOptions { ttr: SECOND, ..opts(1) }).await;
    let mut a = consumer(q, &[&t]).await;
    let mut b = consumer(q, &[&t]).await;
    let reserved_at = Instant::now();
    assert_eq!(must_reserve(a.as_mut(), SECOND).await.id, id);
    assert_eq!(state(q, id).await, Some(JobState::Reserved));
    let again = must_reserve(b.as_mut(), WAIT).await;
    assert_eq!(again.id, id);
    assert!(reserved_at.elapsed() >= EARLY, "given back after {:?}, before its TTR", reserved_at.elapsed());
    b.delete(id).await.expect("delete by the new holder");
}

pub async fn touch_extends(q: &dyn Queue) {
    let t = tube("touch");
    let id = put(q, &t, b"x", PutOptions { ttr: SECOND, ..opts(1) }).await;
    let mut a = consumer(q, &[&t]).await;
    let mut b = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(a.as_mut(), SECOND).await.id, id);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.touch(id).await.expect("touch a held job");
    }
    // 1.8 s after the reserve, 0 s after the last touch: still ours.
    assert_eq!(state(q, id).await, Some(JobState::Reserved));
    assert!(reserve_now(b.as_mut()).await.is_none(), "a touched job is not given to another consumer");
    a.delete(id).await.expect("delete");
}

pub async fn release_with_delay(q: &dyn Queue) {
    let t = tube("release");
    let id = put(q, &t, b"x", opts(1)).await;
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, id);
    c.release(id, 9, Duration::ZERO).await.expect("release now");
    assert_eq!(state(q, id).await, Some(JobState::Ready));
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, id);
    let released_at = Instant::now();
    c.release(id, 9, SECOND).await.expect("release with delay");
    assert_eq!(state(q, id).await, Some(JobState::Delayed));
    assert!(reserve_now(c.as_mut()).await.is_none());
    assert_eq!(must_reserve(c.as_mut(), WAIT).await.id, id);
    assert!(released_at.elapsed() >= EARLY);
    c.delete(id).await.expect("delete");
}

/// A delay shorter than the backend's clock tick is still a delay that ends (the embedded
/// queue once stored such a job as delayed with no due time: never reserved again).
pub async fn release_with_a_tiny_delay_is_not_lost(q: &dyn Queue) {
    let t = tube("tiny-delay");
    let id = put(q, &t, b"x", opts(1)).await;
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, id);
    c.release(id, 1, Duration::from_micros(500)).await.expect("release with a tiny delay");
    assert_eq!(must_reserve(c.as_mut(), WAIT).await.id, id);
    c.delete(id).await.expect("delete");
}

pub async fn bury_and_kick(q: &dyn Queue) {
    let t = tube("bury");
    for i in 0..3u8 {
        put(q, &t, &[i], opts(u32::from(i))).await;
    }
    let mut c = consumer(q, &[&t]).await;
    for _ in 0..2 {
        let job = must_reserve(c.as_mut(), SECOND).await;
        c.bury(job.id, 50).await.expect("bury");
        assert_eq!(state(q, job.id).await, Some(JobState::Buried));
    }
    let stats = q.stats_tube(&t).await.expect("stats");
    assert_eq!((stats.ready, stats.buried), (1, 2));
    assert_eq!(q.kick(&t, 1).await.expect("kick"), 1);
    assert_eq!(q.kick(&t, 10).await.expect("kick"), 1);
    assert_eq!(q.kick(&t, 10).await.expect("kick"), 0, "nothing buried or delayed is left");
    assert_eq!(q.stats_tube(&t).await.expect("stats").ready, 3);
}

pub async fn kick_moves_delayed_when_none_buried(q: &dyn Queue) {
    let t = tube("kickdelayed");
    let id = put(q, &t, b"x", PutOptions { delay: LONG_TTR, ..opts(1) }).await;
    assert_eq!(q.kick(&t, 5).await.expect("kick"), 1);
    assert_eq!(state(q, id).await, Some(JobState::Ready));
}

pub async fn kick_job(q: &dyn Queue) {
    let t = tube("kickjob");
    let buried = put(q, &t, b"b", opts(1)).await;
    let delayed = put(q, &t, b"d", PutOptions { delay: LONG_TTR, ..opts(1) }).await;
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, buried);
    c.bury(buried, 1).await.expect("bury");
    q.kick_job(buried).await.expect("kick a buried job");
    assert_eq!(state(q, buried).await, Some(JobState::Ready));
    q.kick_job(delayed).await.expect("kick a delayed job");
    assert_eq!(state(q, delayed).await, Some(JobState::Ready));
    assert_not_found(q.kick_job(buried).await, "kick a ready job");
}

pub async fn stats_count_each_state(q: &dyn Queue) {
    let t = tube("stats");
    for pri in 1..=4 {
        put(q, &t, b"x", opts(pri)).await;
    }
    put(q, &t, b"x", PutOptions { delay: LONG_TTR, ..opts(1) }).await;
    let mut c = consumer(q, &[&t]).await;
    must_reserve(c.as_mut(), SECOND).await; // held
    let to_bury = must_reserve(c.as_mut(), SECOND).await;
    c.bury(to_bury.id, 1).await.expect("bury");
    let stats = q.stats_tube(&t).await.expect("stats");
    assert_eq!(stats.name, t);
    assert_eq!((stats.ready, stats.delayed, stats.reserved, stats.buried), (2, 1, 1, 1));
    assert_eq!(stats.total_jobs, 5);
}

pub async fn list_tubes(q: &dyn Queue) {
    let (a, b) = (tube("lista"), tube("listb"));
    put(q, &a, b"x", opts(1)).await;
    put(q, &b, b"x", opts(1)).await;
    let tubes = q.list_tubes().await.expect("list tubes");
    assert!(tubes.contains(&a) && tubes.contains(&b), "{tubes:?}");
}

pub async fn binary_bodies(q: &dyn Queue) {
    let t = tube("binary");
    let mut every_byte: Vec<u8> = (0..=255).collect();
    every_byte.extend_from_slice(b"\r\n spaced  words \r\n\r\n");
    let bodies = [every_byte, Vec::new(), b"\r\n".to_vec(), vec![0; 1000]];
    for body in &bodies {
        put(q, &t, body, opts(1)).await;
    }
    let mut c = consumer(q, &[&t]).await;
    for body in &bodies {
        let job = must_reserve(c.as_mut(), SECOND).await;
        assert_eq!(&job.body, body);
        c.delete(job.id).await.expect("delete");
    }
}

pub async fn consumers_never_share_a_reservation(q: &dyn Queue) {
    const JOBS: usize = 100;
    let t = tube("race");
    for i in 0..JOBS {
        put(q, &t, i.to_string().as_bytes(), opts(1)).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = consumer(q, &[&t]).await;
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(job) = c.reserve(Duration::ZERO).await.expect("reserve") {
                held.push(job.id);
            }
            (c, held)
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        let (mut c, held) = task.await.expect("consumer task");
        for id in held {
            assert!(seen.insert(id), "job {id} reserved by two consumers at once");
            c.delete(id).await.expect("delete");
        }
    }
    assert_eq!(seen.len(), JOBS);
}

pub async fn lost_job_is_not_yours(q: &dyn Queue) {
    let t = tube("lost");
    let id = put(q, &t, b"x", PutOptions { ttr: SECOND, ..opts(1) }).await;
    let mut a = consumer(q, &[&t]).await;
    let mut b = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(a.as_mut(), SECOND).await.id, id);
    assert_eq!(must_reserve(b.as_mut(), WAIT).await.id, id, "TTR ran out: b gets it");
    assert_not_found(a.touch(id).await, "touch a lost job");
    assert_not_found(a.release(id, 1, Duration::ZERO).await, "release a lost job");
    assert_not_found(a.bury(id, 1).await, "bury a lost job");
    assert_not_found(a.delete(id).await, "delete a lost job");
    assert_eq!(state(q, id).await, Some(JobState::Reserved));
    b.delete(id).await.expect("delete by the holder");
    assert_eq!(state(q, id).await, None);
}

pub async fn reserve_times_out(q: &dyn Queue) {
    let t = tube("timeout");
    let mut c = consumer(q, &[&t]).await;
    let start = Instant::now();
    assert!(c.reserve(SECOND).await.expect("reserve").is_none());
    let waited = start.elapsed();
    assert!(waited >= EARLY && waited < Duration::from_millis(2500), "waited {waited:?} for a 1 s timeout");
}

pub async fn reserve_wakes_on_put(q: &dyn Queue) {
    let t = tube("wake");
    let mut c = consumer(q, &[&t]).await;
    let start = Instant::now();
    let waiter = tokio::spawn(async move { c.reserve(WAIT).await.expect("reserve") });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = put(q, &t, b"x", opts(1)).await;
    let job = waiter.await.expect("waiter").expect("the job put while waiting");
    assert_eq!(job.id, id);
    assert!(start.elapsed() < Duration::from_millis(1000), "woke after {:?}", start.elapsed());
}

pub async fn reserve_watches_several_tubes(q: &dyn Queue) {
    let (a, b, other) = (tube("watcha"), tube("watchb"), tube("unwatched"));
    put(q, &b, b"b", opts(10)).await;
    put(q, &a, b"a", opts(5)).await;
    put(q, &other, b"o", opts(0)).await;
    let mut c = consumer(q, &[&a, &b]).await;
    for (want_tube, want_body) in [(&a, b"a"), (&b, b"b")] {
        let job = must_reserve(c.as_mut(), SECOND).await;
        assert_eq!((&job.tube, job.body.as_slice()), (want_tube, want_body.as_slice()));
        c.delete(job.id).await.expect("delete");
    }
    assert!(reserve_now(c.as_mut()).await.is_none(), "a job of an unwatched tube was reserved");
}

pub async fn queue_delete_spares_reserved(q: &dyn Queue) {
    let t = tube("qdelete");
    let held = put(q, &t, b"held", opts(1)).await;
    let free = put(q, &t, b"free", opts(2)).await;
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, held);
    assert_not_found(q.delete(held).await, "delete a reserved job");
    assert_eq!(state(q, held).await, Some(JobState::Reserved));
    q.delete(free).await.expect("delete a ready job");
    assert_eq!(state(q, free).await, None);
    assert_not_found(q.delete(free).await, "delete it twice");
    c.delete(held).await.expect("delete by the holder");
}

pub async fn closed_consumer_gives_jobs_back(q: &dyn Queue) {
    let t = tube("closed");
    let id = put(q, &t, b"x", opts(1)).await;
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, id);
    drop(c);
    let start = Instant::now();
    while state(q, id).await != Some(JobState::Ready) {
        assert!(start.elapsed() < WAIT, "still {:?} after its consumer closed", state(q, id).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn peek_reads_the_body_in_any_state(q: &dyn Queue) {
    let t = tube("peek");
    let ready = put(q, &t, b"ready", opts(1)).await;
    let delayed = put(q, &t, b"delayed", PutOptions { delay: Duration::from_secs(60), ..opts(1) }).await;
    assert_eq!(q.peek(ready).await.expect("peek ready").as_deref(), Some(&b"ready"[..]));
    assert_eq!(q.peek(delayed).await.expect("peek delayed").as_deref(), Some(&b"delayed"[..]));
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, ready);
    assert_eq!(q.peek(ready).await.expect("peek reserved").as_deref(), Some(&b"ready"[..]));
    c.delete(ready).await.expect("delete");
    assert_eq!(q.peek(ready).await.expect("peek deleted"), None);
    q.delete(delayed).await.expect("delete delayed");
}

pub async fn delete_then_reserve_moves_on(q: &dyn Queue) {
    let t = tube("moveon");
    let first = put(q, &t, b"first", opts(1)).await;
    let second = put(q, &t, b"second", opts(2)).await;
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, first);
    let (deleted, next) = c.delete_then_reserve(first, SECOND).await;
    deleted.expect("delete the first");
    assert_eq!(next.expect("reserve").map(|r| (r.id, r.body)), Some((second, b"second".to_vec())));
    assert_eq!(state(q, first).await, None);
    assert_eq!(state(q, second).await, Some(JobState::Reserved));

    // Nothing left: the delete still happens, and the reserve waits out its time.
    let start = Instant::now();
    let (deleted, next) = c.delete_then_reserve(second, SECOND).await;
    deleted.expect("delete the second");
    assert!(next.expect("reserve").is_none());
    assert!(start.elapsed() >= EARLY, "gave up after {:?}", start.elapsed());
    assert_eq!(state(q, second).await, None);

    // A job that is not this consumer's: the delete fails, the reserve still works.
    let third = put(q, &t, b"third", opts(1)).await;
    let (deleted, next) = c.delete_then_reserve(second, SECOND).await;
    assert_not_found(deleted, "delete a job already gone");
    assert_eq!(next.expect("reserve").map(|r| r.id), Some(third));
    c.delete(third).await.expect("delete the third");
}

/// A waiting reserve gets a job another consumer releases, then a delayed job put while it
/// waits once its delay ends (not before, and not only at the wait's end).
pub async fn reserve_wakes_on_release_and_when_a_delay_ends(q: &dyn Queue) {
    let t = tube("wakes");
    let mut holder = consumer(q, &[&t]).await;
    let held = put(q, &t, b"held", opts(1)).await;
    assert_eq!(must_reserve(holder.as_mut(), SECOND).await.id, held);
    let mut waiter = consumer(q, &[&t]).await;
    let waiting = tokio::spawn(async move { (must_reserve(waiter.as_mut(), WAIT).await, waiter) });
    holder.release(held, 1, Duration::ZERO).await.expect("release");
    let (job, mut waiter) = waiting.await.expect("waiter");
    assert_eq!(job.id, held, "the released job");

    let start = Instant::now();
    let waiting = tokio::spawn(async move { must_reserve(waiter.as_mut(), WAIT).await });
    let delayed = put(q, &t, b"later", PutOptions { delay: SECOND, ..opts(1) }).await;
    assert_eq!(waiting.await.expect("waiter").id, delayed, "the delayed job");
    let waited = start.elapsed();
    assert!(waited >= EARLY && waited < Duration::from_millis(2500), "got a 1 s delayed job after {waited:?}");
}

/// A waiting reserve gets a buried job as soon as someone kicks it.
pub async fn reserve_wakes_on_kick(q: &dyn Queue) {
    let t = tube("wakekick");
    let id = put(q, &t, b"x", opts(1)).await;
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, id);
    c.bury(id, 1).await.expect("bury");
    let waiting = tokio::spawn(async move { must_reserve(c.as_mut(), WAIT).await });
    assert_eq!(q.kick(&t, 1).await.expect("kick"), 1);
    assert_eq!(waiting.await.expect("waiter").id, id, "the kicked job");
}

/// A paused tube's jobs, put before or during the pause, wait while other tubes' jobs go
/// out; a job reserved before the pause stays its holder's; resume hands them out in order.
pub async fn pause_holds_jobs_until_resume(q: &dyn Queue) {
    let (t, other) = (tube("paused"), tube("unpaused"));
    let held = put(q, &t, b"held", opts(0)).await;
    let mut c = consumer(q, &[&t, &other]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, held);
    let before = put(q, &t, b"before", opts(1)).await;
    q.pause(&t).await.expect("pause");
    q.pause(&t).await.expect("pause a paused tube");
    let after = put(q, &t, b"after", opts(2)).await;
    let control = put(q, &other, b"control", opts(9)).await;
    c.touch(held).await.expect("touch a job reserved before the pause");

    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, control, "the other tube's job, though less urgent");
    assert!(c.reserve(SECOND).await.expect("reserve").is_none(), "a job of a paused tube was reserved");
    let stats = q.stats_tube(&t).await.expect("stats");
    assert_eq!((stats.paused, stats.ready, stats.reserved), (true, 2, 1));
    assert!(!q.stats_tube(&other).await.expect("stats").paused);
    c.delete(held).await.expect("delete a job reserved before the pause");

    q.resume(&t).await.expect("resume");
    assert!(!q.stats_tube(&t).await.expect("stats").paused);
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, before);
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, after);
    q.resume(&t).await.expect("resume a tube that is not paused");
    assert!(matches!(q.pause("-bad").await, Err(QueueError::BadTube(_))));
}

/// A reserve that waits on a paused tube gets nothing while it is paused, and its job as soon
/// as the tube is resumed (not at the end of its wait).
pub async fn resume_wakes_a_waiting_reserve(q: &dyn Queue) {
    let t = tube("resumewake");
    let id = put(q, &t, b"x", opts(1)).await;
    q.pause(&t).await.expect("pause");
    let mut c = consumer(q, &[&t]).await;
    let mut waiting = tokio::spawn(async move { c.reserve(Duration::from_secs(30)).await.expect("reserve") });
    assert!(tokio::time::timeout(SECOND, &mut waiting).await.is_err(), "a reserve got a job of a paused tube");
    let resumed = Instant::now();
    q.resume(&t).await.expect("resume");
    let job = tokio::time::timeout(WAIT, waiting).await.expect("woke within the wait").expect("waiter");
    assert_eq!(job.map(|j| j.id), Some(id));
    assert!(resumed.elapsed() < Duration::from_millis(2500), "woke {:?} after the resume", resumed.elapsed());
}

/// Stats give how long a ready job has waited since its put; none when no job is ready
/// (delayed, reserved and buried jobs have no such age).
pub async fn stats_give_the_age_of_a_ready_job(q: &dyn Queue) {
    let t = tube("age");
    put(q, &t, b"later", PutOptions { delay: Duration::from_secs(60), ..opts(1) }).await;
    assert_eq!(q.stats_tube(&t).await.expect("stats").oldest_ready_age, None, "a delayed job has no age");
    let id = put(q, &t, b"x", opts(1)).await;
    let start = Instant::now();
    loop {
        let age = q.stats_tube(&t).await.expect("stats").oldest_ready_age.expect("a ready job's age");
        assert!(age <= start.elapsed() + SECOND, "age {age:?} after {:?}", start.elapsed());
        if age >= SECOND {
            break;
        }
        assert!(start.elapsed() < WAIT, "age still {age:?} after {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = consumer(q, &[&t]).await;
    assert_eq!(must_reserve(c.as_mut(), SECOND).await.id, id);
    assert_eq!(q.stats_tube(&t).await.expect("stats").oldest_ready_age, None, "a reserved job has no age");
    c.delete(id).await.expect("delete");
}
