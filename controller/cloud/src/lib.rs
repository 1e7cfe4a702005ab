//! The cloud-provider boundary: the instance-type catalogue the scheduler chooses from, and
//! (later) the `CloudProvider` trait with its AWS implementation and in-memory fake.
