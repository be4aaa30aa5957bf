//! Postfix socketmap service for `transport_maps`: codec and decision are
//! pure (and property-tested); [`server`] owns the unix socket.

pub mod codec;
pub mod decision;
pub mod server;
