//! Benchmarks and chaos runs of the homelab-operator process against a real control plane
//! (`homelab-testenv`) and the Azure emulators. The `bench` and `chaos` binaries print their
//! figures; the library is also run at small sizes by the test suite, for correctness only.

pub mod audit;
pub mod bench;
pub mod chaos;
pub mod cpu;
pub mod emulators;
pub mod machine;
pub mod observe;
pub mod operator;
pub mod proxy;
pub mod report;
pub mod workload;
