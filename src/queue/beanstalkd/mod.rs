//! beanstalkd as the production queue: our own async client, and sharding over several servers.
//! Touches only the beanstalkd wire (through `connection`) and the `queue` traits.

pub mod protocol;
