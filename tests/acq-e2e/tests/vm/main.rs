//! The VM tests, one test binary: each module is the tests of one part of the product.
//!
//! One binary, not one a file, so that libtest keeps `--test-threads` guests busy from the
//! first test to the last: cargo runs test binaries one after the other, and a binary's
//! last tests ran alone while the host's CPUs idled (a CI run sampled them 46% busy over
//! consumers' 157 s). The guests of all the modules share one gate ([`acq_e2e::gate`]:
//! every test holds a slot while its guest runs, one whose guest keeps a host CPU busy by
//! itself two, and a test judged by a latency all but one) and one pool ([`acq_e2e::pool`]: a guest handed back by one module's test serves
//! the next test of any module that asks for the same kind).
//!
//! The pool's own test stays a binary of its own (`tests/pool.rs`): it counts the pool's
//! boots, which other tests would change under it.
//!
//! One module's tests: `cargo test -p acq-e2e --test vm consumers::`.

mod bar2;
mod consumers;
mod dmabuf;
mod driver;
mod foundation;
mod hostile_device;
mod playback;
mod runner;
mod sink;
mod snapshot;
mod user_memory;
mod vfio;
mod zerocopy;
