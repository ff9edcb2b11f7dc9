//! beanstalkd as the production queue: our own async client, and sharding over several servers.
