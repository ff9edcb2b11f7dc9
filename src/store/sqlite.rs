//! Job documents in a SQLite file (WAL), shared by every process of one machine.
