//! sendfleet's pure core.
//!
//! Everything the operator and the CLI need to turn resources into Postfix
//! configuration and Kubernetes objects, as plain functions of their inputs:
//!
//! - [`api`]: the `sendfleet.io/v1alpha1` kinds (and so the CRDs);
//! - [`validate`]: the renderer's own check of every value that could reach a
//!   Postfix file — it never assumes the API server's schema ran;
//! - [`postfix`]: `main.cf`, `master.cf` and lookup tables per instance;
//! - [`routing`]: the routing model — transports, nexthops, TLS keys, peer
//!   choice — from which both the Postfix tables and `policy.json` derive;
//! - [`policy`]: the agent's `policy.json`;
//! - [`objects`]: ConfigMaps, StatefulSets, Services, PDB, ServiceAccount;
//! - [`conditions`]: the one condition vocabulary (types, reasons, polarity,
//!   which flips raise Warning Events, the message limit) and its builder
//!   (time passed in), used by the operator and the DNS checks alike;
//! - [`responses`]: what receivers' answers mean (shared by the agent's
//!   classifier and the rendered delivery status filter).
//!
//! It must never do I/O, read a clock, or talk to a cluster: no tokio, no
//! kube client, no `std::fs`. Cargo enforces the first two (they are not
//! dependencies); `tests/render_purity.rs` checks the rest.
#![forbid(unsafe_code)]

pub mod api;
pub mod conditions;
pub mod contract;
pub mod dkim;
pub mod objects;
pub mod policy;
pub mod postfix;
pub mod render;
pub mod responses;
pub mod routing;
pub mod selector;
pub mod validate;
