//! The SQL++ text of the Couchbase store: the indexes its listings need and the statements
//! that use them. Every statement and index covers only this store's keys (`PREFIX::…`), so
//! that applications with other prefixes can share a collection. Pure text: touches nothing.
//! The prefix, bucket, scope and collection are checked by `url.rs` to need no escaping.

use super::url::CouchbaseUrl;
use crate::model::Status;
use crate::store::{ListFilter, StaleKey};

/// The statements of one store, written once when it opens.
pub struct Statements {
    keyspace: String,
    /// `META(d).id` within this store's keys, written exactly as the indexes' WHERE clause so
    /// that the query planner can use those partial indexes.
    own_keys: String,
    /// `CREATE INDEX` statements, each with its index's name.
    pub indexes: Vec<(String, String)>,
}

/// One index: a name suffix and its keys.
const INDEXES: [(&str, &str); 5] = [
    // list with no filter, in key (so uuid) order
    ("ids", "META().id"),
    // list by type, in uuid order
    ("type", "jobType, META().id"),
    // list by status, in uuid order
    ("status", "status, META().id"),
    // list_stale: one status, oldest write first
    ("stale", "status, updatedAt, META().id"),
    // purge_expired: finished documents by expiry
    ("expiry", "status, expiresAt"),
];

impl Statements {
    pub fn new(url: &CouchbaseUrl) -> Self {
        let keyspace = url.keyspace();
        // Keys are `PREFIX::UUID`; ';' is the character after ':', so this is exactly them.
        let range = |id: &str| format!("{id} >= \"{p}::\" AND {id} < \"{p}:;\"", p = url.prefix);
        let indexes = INDEXES
            .iter()
            .map(|(suffix, keys)| {
                let name = format!("geyser_{}_{suffix}", url.prefix);
                let create = format!("CREATE INDEX `{name}` ON {keyspace}({keys}) WHERE {}", range("META().id"));
                (name, create)
            })
            .collect();
        Statements { own_keys: range("META(d).id"), keyspace, indexes }
    }

    /// `list`: documents matching `filter` after the key `$after` (or from the first key when
    /// `from_start`), in key order (descending, and after meaning below, with `newest_first`),
    /// at most `$limit`. Named parameters: `$after`, `$limit`, and `$status`, `$jobType`,
    /// `$before`, `$queue` for the filter's parts.
    pub fn list(&self, filter: &ListFilter, from_start: bool, newest_first: bool) -> String {
        let mut conditions = vec![self.own_keys.clone()];
        let after = match (from_start, newest_first) {
            (true, false) => ">=",
            (true, true) => "<=",
            (false, false) => ">",
            (false, true) => "<",
        };
        conditions.push(format!("META(d).id {after} $after"));
        if filter.status.is_some() {
            conditions.push("d.status = $status".into());
        }
        if filter.job_type.is_some() {
            conditions.push("d.jobType = $jobType".into());
        }
        if filter.updated_before.is_some() {
            conditions.push("IS_NUMBER(d.updatedAt) AND d.updatedAt < $before".into());
        }
        if filter.queue.is_some() {
            conditions.push("d.queueKwargs.queue = $queue".into());
        }
        format!(
            "SELECT META(d).id AS id, d AS doc FROM {} AS d WHERE {} ORDER BY META(d).id{} LIMIT $limit",
            self.keyspace,
            conditions.join(" AND "),
            if newest_first { " DESC" } else { "" }
        )
    }

    /// `list_stale`: documents of `$status` written before `$before`, oldest write first then
    /// by key, after (`$afterTime`, `$afterId`) when `after` is given, at most `$limit`.
    pub fn list_stale(&self, after: Option<&StaleKey>) -> String {
        let resume = match after {
            Some(_) => " AND (d.updatedAt > $afterTime OR (d.updatedAt = $afterTime AND META(d).id > $afterId))",
            None => "",
        };
        format!(
            "SELECT META(d).id AS id, d.updatedAt AS updatedAt, d AS doc FROM {} AS d \
             WHERE {} AND d.status = $status AND IS_NUMBER(d.updatedAt) AND d.updatedAt < $before{resume} \
             ORDER BY d.updatedAt, META(d).id LIMIT $limit",
            self.keyspace, self.own_keys
        )
    }

    /// `purge_expired`: deletes at most `$limit` finished documents whose `expiresAt` is at or
    /// before `$now`, returning their keys.
    pub fn purge(&self) -> String {
        let finished: Vec<String> =
            Status::ALL.iter().filter(|s| s.is_terminal()).map(|s| format!("\"{}\"", s.as_str())).collect();
        format!(
            "DELETE FROM {} AS d WHERE {} AND d.status IN [{}] AND IS_NUMBER(d.expiresAt) AND d.expiresAt <= $now \
             LIMIT $limit RETURNING RAW META(d).id",
            self.keyspace,
            self.own_keys,
            finished.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::couchbase::url::parse;

    fn statements() -> Statements {
        Statements::new(&parse("couchbase://u:p@h/jobs?scope=s&collection=c&prefix=app").unwrap())
    }

    #[test]
    fn indexes_cover_only_this_prefix_with_the_statements_own_condition() {
        let s = statements();
        assert_eq!(s.indexes.len(), 5);
        let (name, create) = &s.indexes[3];
        assert_eq!(name, "geyser_app_stale");
        assert_eq!(
            create,
            "CREATE INDEX `geyser_app_stale` ON `jobs`.`s`.`c`(status, updatedAt, META().id) \
             WHERE META().id >= \"app::\" AND META().id < \"app:;\""
        );
        assert!(s.list_stale(None).contains("META(d).id >= \"app::\" AND META(d).id < \"app:;\""));
    }

    #[test]
    fn list_names_only_the_filters_given() {
        let s = statements();
        let all = s.list(&ListFilter::default(), true, false);
        assert!(all.contains("META(d).id >= $after") && !all.contains("$status") && !all.contains("$jobType"), "{all}");
        let filter = ListFilter {
            status: Some(Status::Queued),
            job_type: Some("t".into()),
            updated_before: Some(1.0),
            queue: None,
        };
        let some = s.list(&filter, false, false);
        for part in ["META(d).id > $after", "d.status = $status", "d.jobType = $jobType", "d.updatedAt < $before"] {
            assert!(some.contains(part), "{part} in {some}");
        }
        let purge = s.purge();
        assert!(purge.contains("[\"succeeded\", \"failed\", \"cancelled\"]"), "{purge}");
    }
}
