//! The Lua scripts of the Redis store, one per operation that must change a document and its
//! indexes together (Redis runs a script with no other command in between). The `redis` crate
//! calls each by its SHA1 (EVALSHA) and loads it only when the server does not know it.

use std::sync::LazyLock;

use redis::Script;

/// A document script: the shared head (key names, index upkeep) and then the operation.
macro_rules! document_script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/common.lua"), include_str!($file))))
    };
}

pub static CREATE: LazyLock<Script> = document_script!("lua/create.lua");
pub static UPDATE: LazyLock<Script> = document_script!("lua/update.lua");
pub static DELETE: LazyLock<Script> = document_script!("lua/delete.lua");
pub static LIST: LazyLock<Script> = document_script!("lua/list.lua");
pub static LIST_STALE: LazyLock<Script> = document_script!("lua/list_stale.lua");
pub static PURGE: LazyLock<Script> = document_script!("lua/purge.lua");
pub static IMPORT: LazyLock<Script> = document_script!("lua/import.lua");
pub static LEASE_ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/lease_acquire.lua")));
pub static LEASE_RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/lease_release.lua")));

/// Every script, to load them all when the store opens.
pub fn all() -> [&'static Script; 9] {
    [&CREATE, &UPDATE, &DELETE, &LIST, &LIST_STALE, &PURGE, &IMPORT, &LEASE_ACQUIRE, &LEASE_RELEASE]
}
