//! Driving an engine future from a thread that only waits for it (a Python caller with the
//! GIL released, a worker's own thread). Backends whose calls block (the embedded SQLite
//! file) may run them on that waiting thread instead of their own, saving two thread
//! switches per operation; callers need not know which backend that is.
//!
//! A `Lane` goes further for network stores: a current-thread runtime driven only by the
//! thread that waits on it, with connections of its own made on it (`lane_local`). A call
//! then writes its request and reads the answer on the waiting thread itself, where a call
//! through the shared pool hands both to a runtime thread and back (four thread switches).
//! Only the future given to `Lane::block_on` sees the lane: tasks it spawns, and calls made
//! elsewhere, use the store's shared pool, so a lane's connections are never waited on by a
//! runtime that is not being driven.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::runtime::Runtime;

/// Run `fut` to completion on `runtime`, driven by this (otherwise idle) thread.
pub fn block_on<F: Future>(runtime: &Runtime, fut: F) -> F::Output {
    crate::sqlite_conn::inline_on_this_thread(|| runtime.block_on(fut))
}

tokio::task_local! {
    /// The lane the current call runs in (set only inside `Lane::block_on`).
    static LANE: Arc<Slots>;
}

/// What a lane's calls keep between calls, by owner (a store): typically one connection.
#[derive(Default)]
struct Slots(Mutex<Vec<Slot>>);

struct Slot {
    /// The owner (a store's shared state); the slot goes once the owner is dropped.
    owner: Weak<dyn Any + Send + Sync>,
    value: Arc<dyn Any + Send + Sync>,
}

/// A current-thread runtime and the connections its calls keep (see the module comment).
pub struct Lane {
    runtime: Arc<Runtime>,
    slots: Arc<Slots>,
}

impl Lane {
    pub fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Self { runtime: Arc::new(runtime), slots: Arc::default() })
    }

    /// The lane's runtime, for tasks that must run on it (and whose calls use shared pools).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Run `fut` to completion on this lane, driven by this (otherwise idle) thread; the
    /// store calls `fut` makes itself use the lane's own connections.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        block_on(&self.runtime, LANE.scope(self.slots.clone(), fut))
    }
}

thread_local! {
    /// The lane of a thread that calls the client directly (a Python caller).
    static CALLER_LANE: Option<Lane> = Lane::new().map_err(|e| log::warn!("no lane for this thread: {e}")).ok();
}

/// Run `fut` on this thread's own lane (made on its first call), or, should the thread have
/// none, on `fallback` as `block_on` does. For calls that only read and write through open
/// backends: whatever `fut` spawns runs only while this thread waits here.
pub fn block_on_callers_lane<F: Future>(fallback: &Runtime, fut: F) -> F::Output {
    CALLER_LANE.with(|lane| match lane {
        Some(lane) => lane.block_on(fut),
        None => block_on(fallback, fut),
    })
}

/// The current lane's value for `owner`, made by `make` on the lane's first call for that
/// owner; None outside a lane. `make` runs inside the lane, so what it spawns (a connection's
/// I/O task) runs on the lane's runtime. Values of owners since dropped are let go here.
pub fn lane_local<O, T>(owner: &Arc<O>, make: impl FnOnce() -> T) -> Option<Arc<T>>
where
    O: Any + Send + Sync,
    T: Any + Send + Sync,
{
    LANE.try_with(|slots| {
        let mut slots = slots.0.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|slot| slot.owner.strong_count() > 0);
        let found = slots
            .iter()
            .filter(|slot| std::ptr::addr_eq(slot.owner.as_ptr(), Arc::as_ptr(owner)))
            .find_map(|slot| slot.value.clone().downcast::<T>().ok());
        found.unwrap_or_else(|| {
            let value = Arc::new(make());
            let owner: Arc<dyn Any + Send + Sync> = owner.clone();
            slots.push(Slot { owner: Arc::downgrade(&owner), value: value.clone() });
            value
        })
    })
    .ok()
}

/// Lets a lane's runtime look at its sockets before a call: a connection the server closed
/// while the lane was idle (no one polled it) learns so now, and is replaced before the call
/// rather than failing it. Two yields: at the first, the runtime polls for I/O events
/// (it does before resuming a task that yielded) and schedules the connection's task, but
/// resumes this one first; at the second, the connection's task runs.
pub async fn catch_up_on_idle_sockets() {
    if LANE.try_with(|_| ()).is_ok() {
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_value_is_kept_per_owner_and_let_go_with_it() {
        let lane = Lane::new().expect("a runtime");
        let first = Arc::new(1u8);
        let second = Arc::new(2u8);
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = || made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lane.block_on(async {
            let a = lane_local(&first, make).expect("in a lane");
            assert!(Arc::ptr_eq(&a, &lane_local(&first, make).expect("in a lane")));
            assert!(!Arc::ptr_eq(&a, &lane_local(&second, make).expect("in a lane")));
        });
        assert_eq!(made.load(std::sync::atomic::Ordering::Relaxed), 2);
        drop(first);
        lane.block_on(async {
            lane_local(&second, make);
        });
        assert_eq!(lane.slots.0.lock().expect("not poisoned").len(), 1, "the dropped owner's value went");
    }

    #[test]
    fn outside_a_lane_and_in_spawned_tasks_there_is_none() {
        let owner = Arc::new(());
        assert!(lane_local(&owner, || ()).is_none());
        let lane = Lane::new().expect("a runtime");
        let spawned = lane.block_on(async {
            let owner = owner.clone();
            tokio::spawn(async move { lane_local(&owner, || ()).is_none() }).await.expect("the task ran")
        });
        assert!(spawned, "a spawned task does not see the lane");
    }
}
