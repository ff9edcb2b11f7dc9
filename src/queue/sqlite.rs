//! Embedded queue on a SQLite file (WAL): beanstalkd semantics for every process of one machine.
