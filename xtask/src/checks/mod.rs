//! The system checks, each a subcommand: `e2e`, `chaos`, `replicas` on the containers
//! (`stack`), and `bench`, `soak`, `storm`, `sdk`, `browser`, `traces`, `startup-time` on the release binary (`harness`). Their
//! shared parts live in `dev-harness` (throwaway services, processes, the HTTP client, the one
//! load generator) and here: `harness` (the release server and fake model as processes, /proc
//! sampling) and `stack` (Compose projects). Each check keeps its workload, faults and verdicts
//! apart, and its verdicts are pure functions with unit tests.

pub(crate) mod bench;
pub(crate) mod browser;
pub(crate) mod chaos;
pub(crate) mod e2e;
pub(crate) mod harness;
pub(crate) mod replicas;
pub(crate) mod sdk;
pub(crate) mod soak;
pub(crate) mod stack;
pub(crate) mod startup_time;
pub(crate) mod storm;
pub(crate) mod streams;
pub(crate) mod traces;
