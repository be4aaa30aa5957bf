//! The test kit: what every test binary and benchmark of the workspace
//! shares, in one place. Root-package tests reach it through their
//! `tests/*_support` modules (which add only what needs the root package,
//! such as the path of the `sendfleet` binary).
//!
//! - [`wait`]: the one poll/wait helper (built on [`crate::process::poll`]);
//! - [`http`]: the one HTTP GET (agent routes, operator metrics, probes);
//! - [`repo`]: the repository root, `examples/` and files read from it;
//! - [`fixtures`]: SendingPool / DomainPolicy / WarmupPlan builders that
//!   read like sentences (`Pool::named("mail").in_ns("x").with_ips(3)`);
//! - [`resolver`]: a real DNS server answering for the test's domains, and
//!   the resolv.conf that points an instance at it;
//! - [`instance`]: sending instances on real Postfix, configured only by
//!   `render_pool` and the pod spec `objects::build` renders; the receiver
//!   is the lab's ([`crate::receiver::Receiver`]).
//!
//! Never: write a line of an instance's Postfix configuration itself (a
//! second renderer would test itself, not the product), skip a test for a
//! missing tool (it panics naming the package), or run outside a test or
//! lab network namespace.

pub mod fixtures;
pub mod http;
pub mod instance;
pub mod repo;
pub mod resolver;
pub mod wait;

pub use fixtures::{documents, namespace, Plan, Policy, Pool};
pub use http::{http_get, http_get_as};
pub use instance::{add_addr, inject, postfix, require_postfix, ConfigSource, Fleet, Instance};
pub use repo::{example, examples_dir, read, repo_root};
pub use resolver::Dns;
pub use wait::{wait_for, wait_for_or, wait_until};
